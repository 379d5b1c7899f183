"""Preprocessing presets: MONAI dictionary transforms per modality / task.

Every preset is a :class:`monai.transforms.Compose` of dictionary transforms whose geometric part
is invertible (``Compose.inverse`` / :class:`monai.transforms.Invertd` restore the source affine and
shape). Order: optional reorientation to a canonical axis code (``"RAS"``: voxel axes i, j, k
increase towards the patient's Right, Anterior, Superior), optional resampling to a target
spacing in mm (bilinear for images, NEAREST for labels -- labels are never interpolated
linearly), optional resize/pad for 2D images, then intensity normalisation (images only).

The parameters of each preset live in :data:`PRESETS`; ``preprocessing(name, **overrides)``
replaces any of them (e.g. ``target_spacing=None`` to keep the native grid).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medseg.errors import ConfigError


@dataclass(frozen=True)
class PresetSpec:
    """Parameters of one preprocessing preset.

    Attributes:
        name: registry key.
        spatial_dims: 2 or 3 (a 3D preset also serves a 2D network run slice by slice).
        axcodes: canonical orientation code (nibabel/MONAI convention, e.g. ``"RAS"``), or None
            to keep the stored axis order (2D radiographs and microscopy, whose pixel grid is the
            display grid).
        target_spacing: voxel size in mm per spatial axis after resampling, or None (native grid).
        intensity: ``"window"`` (CT HU window to 0..1, clipped), ``"zscore_nonzero"`` (percentile
            clip then z-score over nonzero voxels), ``"percentile"`` (percentile range to 0..1).
        window: (low, high) in HU for ``"window"``.
        percentiles: (low, high) percentiles for ``"zscore_nonzero"`` and ``"percentile"``.
        clip: clip the normalised intensities to 0..1 (``"percentile"`` only).
        channel_wise: normalise each channel on its own.
        long_side: 2D only: resize keeping the aspect ratio so that the longer side has this many
            pixels, then pad to a square ``long_side x long_side``.
    """

    name: str
    spatial_dims: int
    axcodes: str | None = "RAS"
    target_spacing: tuple[float, ...] | None = None
    intensity: str = "window"
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None
    clip: bool = True
    channel_wise: bool = True
    long_side: int | None = None


PRESETS: dict[str, PresetSpec] = {
    "ct_abdomen": PresetSpec("ct_abdomen", 3, "RAS", (1.5, 1.5, 2.0), "window", window=(-160.0, 240.0)),
    "ct_lung": PresetSpec("ct_lung", 3, "RAS", (1.5, 1.5, 2.0), "window", window=(-1000.0, 400.0)),
    "ct_spine": PresetSpec("ct_spine", 3, "RAS", (1.0, 1.0, 1.0), "window", window=(-200.0, 1200.0)),
    "mr_brain": PresetSpec("mr_brain", 3, "RAS", (1.0, 1.0, 1.0), "zscore_nonzero", percentiles=(0.5, 99.5)),
    "xray_chest": PresetSpec("xray_chest", 2, None, None, "percentile", percentiles=(0.5, 99.5),
                             clip=True, long_side=512),
    "fluo_nuclei": PresetSpec("fluo_nuclei", 2, None, None, "percentile", percentiles=(1.0, 99.8),
                              clip=False, channel_wise=True),
}

_INTENSITY = {"window", "zscore_nonzero", "percentile"}


def get_preset(name: str, **overrides: Any) -> PresetSpec:
    """Return the :class:`PresetSpec` ``name`` with ``overrides`` applied (ConfigError if unknown)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    spec = PRESETS[name]
    fields = {f.name for f in dataclasses.fields(PresetSpec)} - {"name"}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ConfigError(f"preset {name!r} has no parameter {', '.join(bad)}; known: {', '.join(sorted(fields))}")
    for key in ("target_spacing", "window", "percentiles"):
        if overrides.get(key) is not None:
            overrides[key] = tuple(float(v) for v in overrides[key])
    spec = dataclasses.replace(spec, **overrides)
    _validate(spec)
    return spec


def _validate(spec: PresetSpec) -> None:
    if spec.spatial_dims not in (2, 3):
        raise ConfigError(f"preset {spec.name!r}: spatial_dims must be 2 or 3, not {spec.spatial_dims}")
    if spec.intensity not in _INTENSITY:
        raise ConfigError(f"preset {spec.name!r}: intensity must be one of {sorted(_INTENSITY)}")
    if spec.intensity == "window" and (spec.window is None or spec.window[0] >= spec.window[1]):
        raise ConfigError(f"preset {spec.name!r}: window must be (low, high) HU with low < high")
    if spec.intensity != "window" and (spec.percentiles is None or not
                                       0 <= spec.percentiles[0] < spec.percentiles[1] <= 100):
        raise ConfigError(f"preset {spec.name!r}: percentiles must be (low, high) with 0 <= low < high <= 100")
    if spec.target_spacing is not None and any(s <= 0 for s in spec.target_spacing):
        raise ConfigError(f"preset {spec.name!r}: target_spacing must be positive mm values")
    if spec.axcodes is not None and len(spec.axcodes) < spec.spatial_dims:
        raise ConfigError(f"preset {spec.name!r}: axcodes {spec.axcodes!r} is too short")
    if spec.long_side is not None and spec.long_side < 1:
        raise ConfigError(f"preset {spec.name!r}: long_side must be a positive pixel count")


def preprocessing(name: str, *, keys: Sequence[str] = ("image",), label_key: str | None = None,
                  geometry: bool = True, **overrides: Any):
    """Build the MONAI ``Compose`` of dictionary transforms for preset ``name``.

    Args:
        name: a key of :data:`PRESETS`.
        keys: image keys (intensity-normalised, interpolated bilinearly).
        label_key: optional label-map key (same geometry, NEAREST interpolation, no intensity).
        geometry: False leaves out the reorientation and resampling steps (the caller has put the
            image on :func:`network_grid` itself); only for presets without ``long_side``.
        overrides: fields of :class:`PresetSpec` to replace (e.g. ``target_spacing=(2, 2, 2)`` mm).

    The input dict holds channel-first :class:`monai.data.MetaTensor` values with a RAS affine.
    ``Compose.inverse`` (or ``Invertd``) undoes the geometric steps.
    """
    import monai.transforms as mt
    import torch

    spec = get_preset(name, **overrides)
    image_keys = list(keys)
    all_keys = image_keys + ([label_key] if label_key else [])
    img_modes = ["bilinear"] * len(image_keys) + (["nearest"] if label_key else [])
    resize_modes = ["area"] * len(image_keys) + (["nearest"] if label_key else [])
    xforms: list = [mt.EnsureTyped(keys=image_keys, dtype=torch.float32, track_meta=True)]
    if not geometry:
        if spec.long_side is not None:
            raise ConfigError(f"preset {spec.name!r} resizes to a long side; its geometry cannot be left out")
        xforms.extend(_intensity_transforms(spec, image_keys))
        return mt.Compose(xforms)
    if spec.axcodes is not None:
        xforms.append(_reorient(spec, all_keys))
    if spec.target_spacing is not None:
        xforms.append(_resample(spec, all_keys, img_modes))
    if spec.long_side is not None:
        xforms.append(mt.Resized(keys=all_keys, spatial_size=spec.long_side, size_mode="longest",
                                 mode=resize_modes))
        xforms.append(mt.SpatialPadd(keys=all_keys, spatial_size=(spec.long_side,) * spec.spatial_dims,
                                     mode="constant"))
    xforms.extend(_intensity_transforms(spec, image_keys))
    return mt.Compose(xforms)


def _reorient(spec: PresetSpec, keys: Sequence[str], *, lazy: bool = False):
    import monai.transforms as mt

    return mt.Orientationd(keys=keys, axcodes=spec.axcodes[:3], labels=(("L", "R"), ("P", "A"), ("I", "S")),
                           lazy=lazy)


def _resample(spec: PresetSpec, keys: Sequence[str], modes, *, lazy: bool = False):
    import monai.transforms as mt

    return mt.Spacingd(keys=keys, pixdim=spec.target_spacing, mode=modes, padding_mode="border", lazy=lazy)


def _intensity_transforms(spec: PresetSpec, image_keys: list[str]) -> list:
    import monai.transforms as mt

    xforms: list = []
    if spec.intensity == "window":
        lo, hi = spec.window
        xforms.append(mt.ScaleIntensityRanged(keys=image_keys, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0,
                                              clip=True))
    elif spec.intensity == "zscore_nonzero":
        lo, hi = spec.percentiles
        xforms.append(mt.ClipIntensityPercentilesd(keys=image_keys, lower=lo, upper=hi,
                                                   channel_wise=spec.channel_wise))
        xforms.append(mt.NormalizeIntensityd(keys=image_keys, nonzero=True, channel_wise=spec.channel_wise))
    else:
        lo, hi = spec.percentiles
        xforms.append(mt.ScaleIntensityRangePercentilesd(keys=image_keys, lower=lo, upper=hi, b_min=0.0,
                                                         b_max=1.0, clip=spec.clip,
                                                         channel_wise=spec.channel_wise))
    return xforms


@dataclass(frozen=True)
class NetworkGrid:
    """Where a preset puts an image: after reorientation (``oriented_*``) and after resampling.

    Affines map voxel indices to RAS mm (float64 4x4 tensors); shapes are spatial only.
    """

    affine: Any
    shape: tuple[int, ...]
    oriented_affine: Any
    oriented_shape: tuple[int, ...]


def network_grid(name: str, image: Any, **overrides: Any) -> NetworkGrid | None:
    """The grid preset ``name`` puts ``image`` on, or None for presets that resize / pad (2D).

    Computed by MONAI's own ``Orientationd`` / ``Spacingd`` in lazy mode (geometry only, no voxel
    is touched), so it is exactly the grid :func:`preprocessing` resamples to.

    Args:
        name: a key of :data:`PRESETS`; ``overrides`` as for :func:`preprocessing`.
        image: channel-first :class:`monai.data.MetaTensor` with a RAS affine.
    """
    import torch
    from monai.data import MetaTensor

    spec = get_preset(name, **overrides)
    if spec.long_side is not None:
        return None

    def pending(t):
        if t.pending_operations:
            return (torch.as_tensor(t.peek_pending_affine(), dtype=torch.float64).clone(),
                    tuple(int(v) for v in t.peek_pending_shape()))
        return torch.as_tensor(t.affine, dtype=torch.float64).clone(), tuple(int(v) for v in t.shape[1:])

    data = {"image": MetaTensor(image.as_tensor(), affine=image.affine.clone())}
    if spec.axcodes is not None:
        data = _reorient(spec, ["image"], lazy=True)(data)
    oriented = pending(data["image"])
    if spec.target_spacing is not None:
        data = _resample(spec, ["image"], ["bilinear"], lazy=True)(data)
    final = pending(data["image"])
    return NetworkGrid(final[0], final[1], oriented[0], oriented[1])
