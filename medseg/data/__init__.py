"""Real sample data (fetched from package registries into a cache) and phantom generators."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The sample-data cache: ``$MEDSEG_CACHE`` or ``~/.cache/medseg``."""
    root = Path(os.environ.get("MEDSEG_CACHE", Path.home() / ".cache" / "medseg"))
    root.mkdir(parents=True, exist_ok=True)
    return root
