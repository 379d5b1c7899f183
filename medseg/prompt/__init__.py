"""Promptable / interactive segmentation: ``medseg.prompt.segment(image, points=..., box=...)``.

Coordinates are world millimetres in RAS by default (:mod:`medseg.prompt.coords`); the methods
behind the call are classical and need no weights (:mod:`medseg.prompt.methods`); a trained
promptable network can be registered under a name with :func:`register`. The click simulator and
the interactive metrics (Dice per click, NoC@85/90) are in :mod:`medseg.prompt.simulate`.
"""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "segment": "medseg.prompt.api",
    "build_prompts": "medseg.prompt.api",
    "Prompts": "medseg.prompt.methods",
    "register": "medseg.prompt.methods",
    "method_names": "medseg.prompt.methods",
    "points_to_voxels": "medseg.prompt.coords",
    "box_to_voxels": "medseg.prompt.coords",
    "voxel_to_world": "medseg.prompt.coords",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
