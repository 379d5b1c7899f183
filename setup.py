"""Which packages the wheel holds (everything else is in pyproject.toml): ``medseg*``, and the
shipped bundles of ``bundles/`` as ``medseg/bundles/`` (found there through importlib.resources
by :func:`medseg.bundle.load.shipped_bundle_roots`, so ``--bundle NAME`` works in a wheel install).
pyproject.toml cannot name a package that lives in another folder next to a package search."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["medseg*"]), "medseg.bundles"], package_dir={"medseg.bundles": "bundles"})
