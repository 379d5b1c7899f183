"""Model sources: one interface (load, describe, predict) for every kind of trained model.

``medseg segment INPUT --model PATH`` accepts a medseg training run folder (``model_spec.json``),
a medseg bundle (name or folder) and an nnU-Net v2 trained-model folder (``plans.json``,
``dataset.json``, ``fold_*``), recognised by content (:func:`detect_kind`); several ``--model``
run as one (:mod:`medseg.inference.sources.combined`). See :mod:`medseg.inference.sources.base`.
"""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "ModelInfo": "medseg.inference.sources.base",
    "ModelSource": "medseg.inference.sources.base",
    "detect_kind": "medseg.inference.sources.base",
    "NnunetOptions": "medseg.inference.sources.nnunet",
    "NnunetV2Source": "medseg.inference.sources.nnunet",
    "MedsegModelSource": "medseg.inference.sources.medseg_model",
    "CombinedSource": "medseg.inference.sources.combined",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
