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


class ClassicalSource:
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

    def predict(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Any:
        t0 = time.perf_counter()
        res = self.run(image)
        return label_tensor(image, res.labels, res.names, task=res.task, name=self.name,
                            timings={"method": time.perf_counter() - t0}, extra={"method_params": _jsonable(res.params)})


def label_tensor(image: Any, labels: np.ndarray, names: dict[int, str], *, task: str, name: str,
                 timings: dict[str, float], extra: dict[str, Any] | None = None) -> Any:
    """A label map on ``image``'s grid as ``segment_file`` expects it from a model source: a
    MetaTensor ``(1, *spatial)`` (uint8, int32 for instances) with the source affine and the meta
    keys :func:`medseg.inference.segment` sets (spacing, labels, task, device, timings, ...)."""
    import torch
    from monai.data import MetaTensor

    from medseg.classical._sitk import spacing_of

    n_sp = image.ndim - 1
    dtype = torch.int32 if task == "instance" else torch.uint8
    meta = {k: image.meta[k] for k in ("format", "filename_or_obj", "series_instance_uid", "study_instance_uid",
                                       "frame_of_reference_uid", "sop_instance_uids", "dicom_files")
            if k in image.meta}
    meta.update({"space": "RAS", "kind": "label", "modality": "SEG",
                 "source_modality": image.meta.get("modality", "unknown"),
                 "spacing": spacing_of(np.asarray(image.affine), n_sp), "labels": dict(names), "task": task,
                 "model_name": name, "weights_sha256": None, "device": "cpu", "tta": False,
                 "tta_disagreement": None, "timings_s": dict(timings), "stitch": None})
    meta.update(extra or {})
    out = MetaTensor(torch.from_numpy(np.ascontiguousarray(labels)).to(dtype)[None],
                     affine=torch.as_tensor(np.asarray(image.affine), dtype=torch.float64).clone(), meta=meta)
    out.applied_operations = []
    return out


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
