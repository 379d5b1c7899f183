"""Seeded training augmentation chains (MONAI dictionary transforms).

:func:`training_augmentation` builds, in this order:

1. ``SpatialPadd`` to at least the patch size (image padded with its minimum, label with 0);
2. foreground-balanced patch sampling (``RandCropByPosNegLabeld``, ``pos:neg`` centres);
3. spatial: random affine (rotation, scaling, small translation), optional elastic deformation,
   random flips along each axis; the image is resampled bilinearly, **the label with nearest
   neighbour only**, on the same random draw;
4. intensity (image only): scale/shift, gamma (contrast), Gaussian noise, MR bias field.

All randomness comes from each transform's own ``numpy.random.RandomState``: call
:func:`seed_augmentation` (``Compose.set_random_state``) to make a run reproduce exactly.
Angles are radians, translations voxels of the patch, scale factors relative (0.1 = +-10 %).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.transforms import (
    Compose,
    EnsureTyped,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from medseg.errors import ConfigError


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and ranges of the augmentation chain (see module docstring for units)."""

    rotate_deg: float = 15.0
    scale: float = 0.1
    translate_vox: float = 0.0
    p_affine: float = 0.3
    flip_axes: tuple[int, ...] = (0, 1, 2)
    p_flip: float = 0.5
    elastic: bool = False
    p_elastic: float = 0.2
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    p_intensity: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_gamma: float = 0.3
    noise_std: float = 0.05
    p_noise: float = 0.2
    bias_field: bool | None = None  # None: on for MR, off otherwise
    p_bias: float = 0.3


NO_AUGMENTATION = AugmentationConfig(p_affine=0.0, flip_axes=(), elastic=False, p_intensity=0.0,
                                     p_gamma=0.0, p_noise=0.0, bias_field=False)


def training_augmentation(
    patch_size: Sequence[int],
    *,
    image_keys: Sequence[str] = ("image",),
    label_key: str = "label",
    modality: str = "CT",
    num_samples: int = 2,
    pos: float = 1.0,
    neg: float = 1.0,
    config: AugmentationConfig | None = None,
) -> Compose:
    """Random patch sampling plus augmentation for ``{"image": (C,*spatial), "label": (1,*spatial)}``.

    ``patch_size`` is in voxels, 2 or 3 values (2D or 3D). Each call yields ``num_samples``
    patches (a list of dicts), centred on foreground with probability ``pos / (pos + neg)``.
    The label is always resampled with nearest neighbour and keeps its integer values.
    """
    cfg = config or AugmentationConfig()
    patch = tuple(int(p) for p in patch_size)
    nd = len(patch)
    if nd not in (2, 3) or min(patch) < 1:
        raise ConfigError(f"patch size {patch_size} must be 2 or 3 positive integers (voxels)")
    if num_samples < 1 or pos < 0 or neg < 0 or pos + neg == 0:
        raise ConfigError("num_samples must be >= 1 and pos/neg non-negative, not both zero")
    ik = list(image_keys)
    keys = ik + [label_key]
    chain: list = [
        SpatialPadd(keys=ik, spatial_size=patch, mode="minimum"),
        SpatialPadd(keys=[label_key], spatial_size=patch, mode="constant", constant_values=0),
        RandCropByPosNegLabeld(keys=keys, label_key=label_key, spatial_size=patch, pos=pos, neg=neg,
                               num_samples=num_samples, allow_smaller=False),
    ]
    modes = ["bilinear"] * len(ik) + ["nearest"]
    pads = ["border"] * len(ik) + ["zeros"]
    if cfg.p_affine > 0:
        rot = np.deg2rad(cfg.rotate_deg)
        rotate_range = (rot,) if nd == 2 else (rot, rot, rot)
        chain.append(RandAffined(keys=keys, prob=cfg.p_affine, rotate_range=rotate_range,
                                 scale_range=(cfg.scale,) * nd,
                                 translate_range=(cfg.translate_vox,) * nd,
                                 mode=modes, padding_mode=pads, spatial_size=patch,
                                 lazy=False))
    if cfg.elastic and cfg.p_elastic > 0:
        if nd == 3:
            chain.append(Rand3DElasticd(keys=keys, sigma_range=(5, 8), magnitude_range=(50, 150),
                                        prob=cfg.p_elastic, mode=modes, padding_mode=pads,
                                        spatial_size=patch))
        else:
            chain.append(Rand2DElasticd(keys=keys, spacing=(16, 16), magnitude_range=(1, 2),
                                        prob=cfg.p_elastic, mode=modes, padding_mode=pads,
                                        spatial_size=patch))
    for axis in cfg.flip_axes:
        if axis < nd and cfg.p_flip > 0:
            chain.append(RandFlipd(keys=keys, prob=cfg.p_flip, spatial_axis=axis))
    if cfg.p_intensity > 0:
        chain.append(RandScaleIntensityd(keys=ik, factors=cfg.intensity_scale, prob=cfg.p_intensity))
        chain.append(RandShiftIntensityd(keys=ik, offsets=cfg.intensity_shift, prob=cfg.p_intensity))
    if cfg.p_gamma > 0:
        chain.append(RandAdjustContrastd(keys=ik, gamma=cfg.gamma, prob=cfg.p_gamma))
    if cfg.p_noise > 0:
        chain.append(RandGaussianNoised(keys=ik, std=cfg.noise_std, prob=cfg.p_noise))
    bias = cfg.bias_field if cfg.bias_field is not None else modality.upper() in ("MR", "MRI")
    if bias and cfg.p_bias > 0:
        chain.append(RandBiasFieldd(keys=ik, coeff_range=(0.0, 0.1), prob=cfg.p_bias))
    chain.append(EnsureTyped(keys=keys, track_meta=False))
    return Compose(chain)


def seed_augmentation(transform: Compose, seed: int) -> Compose:
    """Seed every random transform of ``transform`` from ``seed`` (reproducible runs)."""
    transform.set_random_state(seed=int(seed) % (2**32))
    return transform
