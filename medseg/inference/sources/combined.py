"""Several models run as one (``--model A --model B``), e.g. the parts of TotalSegmentator.

The rule, documented once here and in the README: classes are numbered in ``--model`` order
(model 1's classes keep their order and become 1..n1, model 2's become n1+1..n1+n2, ...), and a
voxel two models both label keeps the label of the EARLIER ``--model``. A class name that an
earlier model already uses gets `` (<model name>)`` appended, so every segment of the DICOM SEG
has its own name.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from medseg.errors import ConfigError
from medseg.inference.result import InferenceRecord, Prediction
from medseg.inference.sources.base import InfersLabels, ModelInfo


class CombinedSource(InfersLabels):
    kind = "combined"
    task = "semantic"

    def __init__(self, sources: Sequence[Any]) -> None:
        if len(sources) < 2:
            raise ConfigError("combining models needs at least two")
        self.sources = list(sources)
        self.mapping: list[dict[int, int]] = []
        self.labels: dict[int, str] = {}
        nxt = 1
        for src in self.sources:
            if getattr(src, "task", "semantic") != "semantic":
                raise ConfigError(f"{src.name}: only semantic models can be combined with others")
            m = {}
            for k in sorted(src.labels):
                name = src.labels[k]
                if name in self.labels.values():
                    name = f"{name} ({src.name})"
                self.labels[nxt] = name
                m[k] = nxt
                nxt += 1
            self.mapping.append(m)
        self.name = "+".join(s.name for s in self.sources)
        h = hashlib.sha256()
        for s in self.sources:
            h.update(f"{s.weights_sha256}\n".encode())
        self.weights_sha256 = h.hexdigest()

    @classmethod
    def load(cls, path: Any, *, trust: bool = False, **options: Any) -> CombinedSource:
        """``path``: a list of model paths (see :func:`medseg.inference.pipeline.resolve_model`)."""
        from medseg.inference.pipeline import resolve_model

        model, _ = resolve_model(list(path), trust=trust, **options)
        return model

    def describe(self) -> ModelInfo:
        parts = [s.describe() for s in self.sources]
        return ModelInfo(kind=self.kind, name=self.name, labels=dict(self.labels), channels=parts[0].channels,
                         modality=parts[0].modality, spacing_mm=None, spatial_dims=parts[0].spatial_dims,
                         details={"rule": "classes numbered in --model order; the earlier --model wins a voxel",
                                  "label_map": [{str(k): v for k, v in m.items()} for m in self.mapping],
                                  "parts": [p.to_json() for p in parts]})

    def infer(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Prediction:
        """The parts' label maps merged (see the module docstring); device and TTA as the first
        part's record, timings per part (``model1``, ``model2``, ...)."""
        import torch

        out = first = None
        timings: dict[str, float] = {}
        for i, (src, m) in enumerate(zip(self.sources, self.mapping, strict=True)):
            t0 = time.perf_counter()
            part = src.infer(image, device=device, progress=progress, amp=amp)
            lab = part.labels
            if out is None:
                dtype = torch.uint8 if max(self.labels) <= 255 else torch.int16
                out = lab.clone().to(dtype)
                out.zero_()
                first = part.record
            free = out.as_tensor() == 0
            values = lab.as_tensor()
            for k, new in m.items():
                out.as_tensor()[free & (values == k)] = new
            timings[f"model{i + 1}"] = time.perf_counter() - t0
        out.meta["labels"] = dict(self.labels)
        return Prediction(out, InferenceRecord(device=first.device, tta=first.tta, timings_s=timings))
