"""A prompted segmentation behind the model-source interface, so that ``medseg prompt`` writes
exactly what ``medseg segment`` writes (``seg.nii.gz`` on the source grid, ``seg.dcm`` for DICOM
inputs, ``overlay.png``, ``provenance.json`` with the prompts as voxel indices and the method)."""

from __future__ import annotations

import time
from typing import Any

from medseg.classical.source import label_prediction
from medseg.inference.sources.base import InfersLabels


class PromptSource(InfersLabels):
    """``ModelSource`` for one prompted object (``kwargs`` go to :func:`medseg.prompt.segment`)."""

    kind = "prompt"
    task = "semantic"
    weights_sha256 = None

    def __init__(self, *, method: str | None = None, label: str = "object", **kwargs: Any) -> None:
        from medseg.prompt.methods import get_method

        if method is not None:
            get_method(method)  # unknown names fail before any input is read
        self.method = method
        self.kwargs = kwargs
        self.name = f"prompt:{method or 'default'}"
        self.labels = {1: label}
        self.record: dict[str, Any] = {}

    @classmethod
    def load(cls, path: Any, *, trust: bool = False, **options: Any) -> PromptSource:
        return cls(method=str(path), **options)

    def describe(self):
        from medseg.inference.sources.base import ModelInfo

        return ModelInfo(kind=self.kind, name=self.name, labels=dict(self.labels), channels=1, modality=("any",),
                         spacing_mm=None, spatial_dims=0, details={"method": self.method, "prompt": self.record})

    def infer(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Any:
        from medseg.prompt.api import segment

        t0 = time.perf_counter()
        mask = segment(image, method=self.method, **self.kwargs)
        self.record = {k: v for k, v in mask.meta["prompt"].items() if k != "seconds"}
        self.name = f"prompt:{self.record['method']}"
        return label_prediction(image, mask.numpy()[0], self.labels, task="semantic",
                                timings={"prompt": time.perf_counter() - t0}, details={"prompt": self.record})
