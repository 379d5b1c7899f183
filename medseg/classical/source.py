"""A classical method behind the model-source interface, so ``segment_file`` writes its outputs.

``medseg segment INPUT --method otsu --output DIR`` gives the same case folder as a model run
(``seg.nii.gz`` on the source grid, ``seg.dcm`` for DICOM inputs, ``overlay.png``,
``provenance.json`` with the method, the parameters it chose and the timings): the method runs on
the voxels as stored (no resampling), so its label map is on exactly the source grid.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.classical.methods import MethodSpec, Result, parse_method, run_method
from medseg.errors import ConfigError
from medseg.inference.sources.base import InfersLabels


class ClassicalSource(InfersLabels):
    """``ModelSource`` for a classical method (no weights: ``weights_sha256`` is None)."""

    kind = "classical"

    def __init__(self, method: str | MethodSpec, *, seeds_mm: Sequence[Sequence[float]] = (),
                 space: str = "RAS") -> None:
        self.spec = parse_method(method) if isinstance(method, str) else method
        self.seeds_mm = [tuple(float(v) for v in s) for s in seeds_mm]
        self.space = space
        self.name = f"classical:{self.spec.text}"
        self.weights_sha256 = None
        self.task = "instance" if self.spec.name == "watershed" else "semantic"
        self.labels = _default_labels(self.spec)
        self.last: Result | None = None

    @classmethod
    def load(cls, path: Any, *, trust: bool = False, **options: Any) -> ClassicalSource:
        return cls(str(path), **options)

    def describe(self):
        from medseg.inference.sources.base import ModelInfo

        details: dict[str, Any] = {"method": self.spec.text}
        if self.seeds_mm:
            details["seeds_mm"] = [list(s) for s in self.seeds_mm]
            details["seed_space"] = self.space
        if self.last is not None:
            details["chosen"] = _jsonable(self.last.params)
        return ModelInfo(kind=self.kind, name=self.name, labels=dict(self.labels), channels=1,
                         modality=("any",), spacing_mm=None, spatial_dims=0, details=details)

    def run(self, image: Any) -> Result:
        """The method's :class:`Result` on ``image`` (a channel-first MetaTensor)."""
        if image.shape[0] != 1:
            raise ConfigError(f"classical methods take one channel; this image has {image.shape[0]}")
        arr = np.asarray(image.detach().cpu().numpy()[0] if hasattr(image, "detach") else image[0])
        affine = np.asarray(image.affine, dtype=np.float64)
        from medseg.classical._sitk import spacing_of

        spacing = spacing_of(affine, arr.ndim)
        seeds = None
        if self.seeds_mm:
            from medseg.prompt.coords import points_to_voxels

            seeds = points_to_voxels(self.seeds_mm, affine, arr.shape, space=self.space)
        res = run_method(self.spec, arr, spacing, seeds=seeds, affine=affine)
        self.labels = dict(res.names)
        self.task = res.task
        self.last = res
        return res

    def infer(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Any:
        t0 = time.perf_counter()
        res = self.run(image)
        return label_prediction(image, res.labels, res.names, task=res.task,
                                timings={"method": time.perf_counter() - t0},
                                details={"method_params": _jsonable(res.params)})


def label_prediction(image: Any, labels: np.ndarray, names: dict[int, str], *, task: str,
                     timings: dict[str, float], details: dict[str, Any] | None = None) -> Any:
    """A label map computed on the CPU on ``image``'s own grid, as ``segment_file`` expects it
    from a model source: a :class:`~medseg.inference.result.Prediction` whose labels are a
    MetaTensor ``(1, *spatial)`` (uint8, int32 for instances) with the source affine."""
    import torch
    from monai.data import MetaTensor

    from medseg.geometry import spacing_of
    from medseg.inference.result import InferenceRecord, Prediction, label_meta

    dtype = torch.int32 if task == "instance" else torch.uint8
    meta = label_meta(image, labels=names, task=task, spacing=spacing_of(np.asarray(image.affine), image.ndim - 1))
    out = MetaTensor(torch.from_numpy(np.ascontiguousarray(labels)).to(dtype)[None],
                     affine=torch.as_tensor(np.asarray(image.affine), dtype=torch.float64).clone(), meta=meta)
    out.applied_operations = []
    return Prediction(out, InferenceRecord(device="cpu", timings_s=dict(timings), details=dict(details or {})))


def _default_labels(spec: MethodSpec) -> dict[int, str]:
    if spec.name in ("multi-otsu", "kmeans", "gmm"):
        k = int(spec.args[0]) if spec.args and spec.args[0].isdigit() else (3 if spec.name == "multi-otsu" else 2)
        return {i: f"class_{i}" for i in range(1, k)}
    if spec.name == "preset" and spec.args:
        return {1: spec.args[0].lower()}
    return {1: "object" if spec.name == "watershed" else "foreground"}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
