"""Classical segmentation without weights: thresholds, clustering, region growing, watershed,
edges and CT HU presets (:mod:`medseg.classical.methods`, :mod:`medseg.classical.presets`),
runnable through ``medseg segment INPUT --method NAME`` (:class:`ClassicalSource`)."""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "METHODS": "medseg.classical.methods",
    "Result": "medseg.classical.methods",
    "parse_method": "medseg.classical.methods",
    "run_method": "medseg.classical.methods",
    "PRESETS": "medseg.classical.presets",
    "ClassicalSource": "medseg.classical.source",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
