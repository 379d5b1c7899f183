"""Network factory: ``build_network(spec)`` turns a small JSON-able spec into a MONAI network.

Importing :mod:`medseg.models` is light; torch and MONAI load when a network is built.
"""

from __future__ import annotations

from medseg.models.factory import ARCHS, build_network, count_parameters, dynunet_kernels_strides

__all__ = ["ARCHS", "build_network", "count_parameters", "dynunet_kernels_strides"]
