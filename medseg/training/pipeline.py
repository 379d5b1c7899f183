"""Data pipeline of a training run: load a case, preprocess with the model's preset, augment.

Loading goes through :func:`medseg.io.load`, the same reader inference uses, so training and
inference see identical geometry (channel first, affine voxel->RAS mm). Several channel files are
concatenated along the channel axis; they must share one grid (checked by
:func:`medseg.training.datasets.validate_dataset`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform

from medseg.errors import InputError


class LoadCased(MapTransform):
    """Load ``d["image"]`` (a path or a list of channel paths) and ``d["label"]`` into MetaTensors.

    The image becomes float32 ``(C, *spatial)``; the label ``(1, *spatial)`` int64 whose values
    must be 0 or one of ``allowed_labels`` (else InputError naming the case). ``remap`` (old value
    -> new value) keeps a subset of classes: values it does not list become background 0.
    """

    def __init__(self, allowed_labels: Sequence[int], image_key: str = "image",
                 label_key: str = "label", remap: dict[int, int] | None = None) -> None:
        super().__init__(keys=[image_key, label_key], allow_missing_keys=True)
        self.image_key, self.label_key = image_key, label_key
        self.allowed = {0, *(int(v) for v in allowed_labels)}
        self.remap = {int(k): int(v) for k, v in remap.items()} if remap else None

    @staticmethod
    def _load(path: str | Path, kind: str) -> MetaTensor:
        from medseg.io import load

        return load(path, kind=kind)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        cid = d.get("id", "?")
        paths = d[self.image_key]
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        chans = [self._load(p, "image") for p in paths]
        img = chans[0] if len(chans) == 1 else MetaTensor(
            torch.cat([c.as_tensor() for c in chans], dim=0), affine=chans[0].affine,
            meta={k: v for k, v in chans[0].meta.items() if k != "affine"})
        d[self.image_key] = img.float() if img.dtype != torch.float32 else img
        if self.label_key in d:
            lab = self._load(d[self.label_key], "label")
            if lab.shape[0] != 1:
                raise InputError(f"case '{cid}': label has {lab.shape[0]} channels, expected one "
                                 "integer label map")
            if tuple(lab.shape[1:]) != tuple(img.shape[1:]):
                raise InputError(f"case '{cid}': label shape {tuple(lab.shape[1:])} differs from "
                                 f"image shape {tuple(img.shape[1:])}")
            arr = lab.as_tensor()
            if arr.is_floating_point():
                rounded = torch.round(arr)
                if not torch.equal(rounded, arr):
                    raise InputError(f"case '{cid}': label holds non-integer values; "
                                     "a label map must be integer")
                arr = rounded
            values = set(np.unique(arr.numpy()).astype(int).tolist())
            extra = sorted(values - self.allowed)
            if extra:
                raise InputError(f"case '{cid}': label values {extra} are not declared in the "
                                 f"dataset's labels {sorted(self.allowed - {0})}")
            if self.remap is not None:
                lut = torch.zeros(max(self.allowed) + 1, dtype=torch.int64)
                for old, new in self.remap.items():
                    lut[old] = new
                arr = lut[arr.to(torch.int64)]
            lab_meta = {k: v for k, v in lab.meta.items() if k != "affine"}
            lab_meta["kind"] = "label"
            d[self.label_key] = MetaTensor(arr.to(torch.int64), affine=lab.affine, meta=lab_meta)
        return d


def base_transforms(preset: str, labels: dict[int, str], *, with_label: bool = True,
                    remap: dict[int, int] | None = None,
                    preset_overrides: dict[str, Any] | None = None) -> Compose:
    """Deterministic part: :class:`LoadCased` then the preset's preprocessing (cacheable).
    ``labels`` are the dataset's declared labels; ``remap`` see :class:`LoadCased`;
    ``preset_overrides`` replace preset parameters (e.g. ``target_spacing`` in mm)."""
    from medseg.transforms.presets import preprocessing

    # ``keys`` are the image keys (intensity-normalised); the label goes in ``label_key`` only.
    pre = preprocessing(preset, keys=("image",), label_key="label" if with_label else None,
                        **dict(preset_overrides or {}))
    return Compose([LoadCased(sorted(labels), remap=remap), pre]).flatten()


def trained_label_names(labels: dict[int, str], remap: dict[int, int] | None = None) -> list[str]:
    """Names of the classes a run trains on: all declared ``labels``, or those ``remap`` keeps."""
    if remap is None:
        return [labels[k] for k in sorted(labels)]
    return [labels[old] for old, _new in sorted(remap.items(), key=lambda kv: kv[1]) if old in labels]


def flip_plan(preset: str, labels: dict[int, str], patch_size: Sequence[int], *,
              augmentation: Any = None, remap: dict[int, int] | None = None,
              preset_overrides: dict[str, Any] | None = None) -> Any:
    """The :class:`medseg.transforms.augment.FlipPlan` a training chain uses: the flip setting of
    ``augmentation`` (default ``"auto"``) resolved against the trained label names and the
    preset's orientation code (``"RAS"`` after its Orientation step; None for 2D presets)."""
    from medseg.transforms.augment import AugmentationConfig, resolve_flip_axes
    from medseg.transforms.presets import get_preset

    cfg = augmentation or AugmentationConfig()
    axcodes = get_preset(preset, **dict(preset_overrides or {})).axcodes
    return resolve_flip_axes(cfg.flip_axes, trained_label_names(labels, remap),
                             spatial_dims=len(tuple(patch_size)), axcodes=axcodes)


def training_transforms(preset: str, labels: dict[int, str], patch_size: Sequence[int], *,
                        modality: str, num_samples: int, pos: float = 1.0, neg: float = 1.0,
                        augmentation: Any = None, remap: dict[int, int] | None = None,
                        preset_overrides: dict[str, Any] | None = None) -> Compose:
    """Full training chain: :func:`base_transforms` + patch sampling + augmentation (flattened so
    that a CacheDataset caches everything before the first random transform). Flips follow
    :func:`flip_plan` (no flip across a sided or ordered axis under the default ``"auto"``)."""
    from medseg.transforms.augment import training_augmentation
    from medseg.transforms.presets import get_preset

    axcodes = get_preset(preset, **dict(preset_overrides or {})).axcodes
    aug = training_augmentation(patch_size, modality=modality, num_samples=num_samples, pos=pos,
                                neg=neg, config=augmentation, label_names=trained_label_names(labels, remap),
                                axcodes=axcodes)
    return Compose([base_transforms(preset, labels, remap=remap, preset_overrides=preset_overrides),
                    aug]).flatten()
