"""medseg's label postprocessing as a MONAI dictionary transform, for bundle configs.

A bundle's ``configs/inference.json`` runs under ``python -m monai.bundle run`` without medseg's
own pipeline. :class:`MedsegPostprocessd` lets that path apply exactly what
``medseg segment`` applies: :func:`medseg.transforms.postprocess.apply_postprocess` on the argmax
label map ON THE NETWORK GRID (after ``AsDiscreted``, before ``Invertd``), with the spacing (mm)
and the voxel -> RAS mm affine of that grid. Config entry::

    {"_target_": "medseg.transforms.monai_postprocess.MedsegPostprocessd", "keys": "pred",
     "postprocess": {"instance": {...}}, "task": "instance", "labels": [1, 2]}
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medseg.errors import ConfigError, GeometryError
from medseg.transforms.postprocess import apply_postprocess, validate_postprocess

# DICOM/ITK world (LPS) -> RAS: negate x and y
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_affine(label_map: Any) -> np.ndarray:
    """The 4x4 voxel -> RAS mm affine of a MONAI ``MetaTensor`` (channel first).

    MONAI's readers convert to RAS by default (``meta["space"] == "RAS"``); a tensor whose
    ``meta["space"]`` says LPS is converted by negating x and y. A 2D grid's 3x3 affine is embedded
    in 4x4 (the third axis is the identity).
    """
    from monai.data import MetaTensor

    if not isinstance(label_map, MetaTensor):
        raise GeometryError("MedsegPostprocessd needs a MetaTensor with an affine; keep track_meta on in the "
                            "bundle's transforms")
    aff = np.array(label_map.affine.detach().cpu(), dtype=np.float64)
    if aff.shape in ((3, 3), (2, 2)):
        n = aff.shape[0] - 1
        full = np.eye(4)
        full[:n, :n] = aff[:n, :n]
        full[:n, 3] = aff[:n, n]
        aff = full
    if aff.shape != (4, 4):
        raise GeometryError(f"MedsegPostprocessd: affine of shape {aff.shape} is not a voxel -> world matrix")
    space = str(getattr(label_map.meta.get("space", "RAS"), "value", label_map.meta.get("space", "RAS"))).upper()
    if space == "LPS":
        aff = _LPS_TO_RAS @ aff
    elif space != "RAS":
        raise GeometryError(f"MedsegPostprocessd: unknown meta['space'] {space!r}; expected RAS or LPS")
    return aff


class MedsegPostprocessd(MapTransform):
    """Run medseg's ``apply_postprocess`` on channel-first label maps (``(1, *spatial)``).

    Args:
        keys: the label-map keys (``"pred"`` after ``AsDiscreted(argmax=True)``).
        postprocess: a model's postprocess dict (``configs/medseg.json`` ``postprocess``): small
            components (``min_component_mm3``, mm^3; mm^2 in 2D), largest component, hole filling,
            ``instance`` labelling, and any operation ``apply_postprocess`` knows.
        task: the model's task, ``"semantic"`` or ``"instance"`` (instances are labelled for
            ``"instance"``, as ``apply_postprocess`` does).
        labels: the model's label indices; other argmax indices become 0 first, as in
            :func:`medseg.inference.segment`. None: keep every index.
        image_key: the key of the image the network read (``"image"`` after the preprocessing, on
            the label map's grid), for operations that look at it (``lung_field``). None: none.
        allow_missing_keys: MONAI's usual switch.

    The output stays a ``MetaTensor`` with the input's affine, meta and applied-operations trace
    (so ``Invertd`` maps it back to the source grid), and float32 values (exact integers: labels
    or instance IDs up to 2^24).
    """

    def __init__(self, keys: KeysCollection, postprocess: Mapping[str, Any] | None = None, task: str = "semantic",
                 labels: Sequence[int] | None = None, image_key: str | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.postprocess = validate_postprocess(postprocess)
        self.task = str(task)
        self.labels = None if labels is None else sorted({int(v) for v in labels})

    def apply(self, label_map: Any, image: Any = None) -> Any:
        """Postprocess one ``(1, *spatial)`` MetaTensor on its own grid; returns a new MetaTensor."""
        import torch
        from monai.data import MetaTensor

        n_sp = label_map.ndim - 1
        if label_map.shape[0] != 1 or n_sp not in (2, 3):
            raise GeometryError(f"MedsegPostprocessd needs a (1, i, j[, k]) label map, got "
                                f"{tuple(label_map.shape)}; put it after AsDiscreted(argmax=True)")
        affine = ras_affine(label_map)
        spacing = [float(s) for s in label_map.pixdim[:n_sp]]  # the same mm values medseg's segment uses
        values = label_map.detach().cpu().numpy()[0]
        lab = np.rint(values).astype(np.int64)
        if lab.size and (lab.min() < 0 or not np.array_equal(lab, values)):
            raise ConfigError("MedsegPostprocessd: the map does not hold non-negative integer labels; put it "
                              "after AsDiscreted(argmax=True) or a threshold")
        if self.labels is not None:
            keep = np.zeros(max(int(lab.max(initial=0)) + 1, 1), dtype=bool)
            keep[[v for v in self.labels if v < keep.size]] = True
            lab = np.where(keep[lab], lab, 0)
        img = None
        if image is not None:
            if tuple(image.shape[1:]) != tuple(label_map.shape[1:]):
                raise GeometryError(f"MedsegPostprocessd: image {tuple(image.shape)} and label map "
                                    f"{tuple(label_map.shape)} are not on one grid; run it before Invertd")
            img = image.detach().cpu().numpy()[0] if hasattr(image, "detach") else np.asarray(image)[0]
        out = apply_postprocess(lab.astype(np.int32), spacing, self.postprocess, task=self.task, affine=affine,
                                image=img)
        result = MetaTensor(torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))[None],
                            affine=label_map.affine.clone(),
                            meta={k: v for k, v in label_map.meta.items() if k != "affine"})
        result.applied_operations = list(label_map.applied_operations)
        return result

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.get(self.image_key) if self.image_key is not None else None
        if self.image_key is not None and image is None:
            raise ConfigError(f"MedsegPostprocessd: no {self.image_key!r} in the data for image_key")
        for key in self.key_iterator(d):
            d[key] = self.apply(d[key], image)
        return d
