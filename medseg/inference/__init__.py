"""Segmentation engine: ``SegmentationModel``, memory-bounded sliding window, ``segment``.

The function ``segment`` lives in :mod:`medseg.inference.segmentation` (a module named
``segment`` would shadow the function on this package once imported).

Public API (importing this package is light; torch/MONAI load on first use)::

    SegmentationModel(network, network_spec, preset, labels, roi_size, ...)   # .from_run_dir(path)
    segment(image, model, *, device="auto", tta=False, progress=True) -> MetaTensor
    infer(image, model, ...) -> Prediction(labels, record: InferenceRecord)      # + device, TTA, timings
    sliding_window_labels(image, predictor, roi_size, ...) -> Tensor             # labels, not scores
    segment_file(input, model_source, output_dir, ...) -> Path                   # what `medseg segment` runs
    resolve_model(path_or_paths, nnunet=NnunetOptions(...)) -> (model, kind)     # --model: bundle, run, nnU-Net v2
"""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "SegmentationModel": "medseg.inference.model",
    "segment": "medseg.inference.segmentation",
    "infer": "medseg.inference.segmentation",
    "Prediction": "medseg.inference.result",
    "InferenceRecord": "medseg.inference.result",
    "resolve_device": "medseg.inference.segmentation",
    "sliding_window_labels": "medseg.inference.sliding_window",
    "StitchStats": "medseg.inference.sliding_window",
    "segment_file": "medseg.inference.pipeline",
    "resolve_model": "medseg.inference.pipeline",
    "NnunetOptions": "medseg.inference.sources.nnunet",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
