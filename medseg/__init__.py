"""medseg: medical image segmentation with exact geometry.

Light on import: submodules (``medseg.io``, ``medseg.inference``, ...) load their heavy
dependencies only when used.
"""

__version__ = "0.1.0"


def pipeline(task: str = "segmentation", model=None, **kwargs):
    """``medseg.pipeline("segmentation", model=...)(image)`` -> ``[{"label", "mask", "score"}]``;
    see :mod:`medseg.pipelines` (imported on first use)."""
    from medseg.pipelines import pipeline as _pipeline

    return _pipeline(task, model, **kwargs)
