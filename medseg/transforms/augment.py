"""Seeded training augmentation chains (MONAI dictionary transforms).

:func:`training_augmentation` builds, in this order:

1. ``SpatialPadd`` to at least the patch size (image padded with its minimum, label with 0);
2. foreground-balanced patch sampling (``RandCropByPosNegLabeld``, ``pos:neg`` centres), or with
   ``balance_components`` lesion-balanced sampling: a foreground centre is drawn per connected
   component, so a 40-voxel nodule is the centre as often as a 4000-voxel mass
   (:class:`ComponentCropWeightd` + ``RandWeightedCropd``);
3. spatial: random affine (rotation, scaling, small translation), optional elastic deformation,
   random flips along the axes :func:`resolve_flip_axes` allows; the image is resampled
   bilinearly, **the label with nearest neighbour only**, on the same random draw;
4. intensity (image only): scale/shift, gamma (contrast), Gaussian noise, MR bias field.

All randomness comes from each transform's own ``numpy.random.RandomState``: call
:func:`seed_augmentation` (``Compose.set_random_state``) to make a run reproduce exactly.
Angles are radians, translations voxels of the patch, scale factors relative (0.1 = +-10 %).

Flips and anatomy: a mirrored image is a different anatomy. A left-right flip puts the liver on
the patient's left and teaches a network that ``kidney_left`` and ``kidney_right`` are
interchangeable; a superior-inferior flip reverses the order of vertebral levels. With
``flip_axes="auto"`` (the default) the axes are chosen from the label names and the preset's
orientation code (``"RAS"``: voxel axis 0 runs left->right, 1 posterior->anterior, 2
inferior->superior): no L-R flip when a label has a side, no S-I flip when labels are ordered
levels, every axis for unsided tasks (nuclei, brain mask); when the orientation is unknown
(2D presets without ``axcodes``) and a label is sided or ordered, nothing is flipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.transforms import (
    Compose,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
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
    RandWeightedCropd,
    SpatialPadd,
)
from scipy import ndimage

from medseg.errors import ConfigError
from medseg.labels import lookup_label


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and ranges of the augmentation chain (see module docstring for units).

    ``flip_axes``: ``"auto"`` (axes chosen from the label names and orientation, see
    :func:`resolve_flip_axes`), ``"none"`` / ``()`` (no flips) or explicit voxel axes ``(0, 1, 2)``
    of the preprocessed grid (used as given: the caller takes responsibility for the anatomy).
    """

    rotate_deg: float = 15.0
    scale: float = 0.1
    translate_vox: float = 0.0
    p_affine: float = 0.3
    flip_axes: tuple[int, ...] | str = "auto"
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
    balance_components: bool = False  # foreground crop centres: every connected component equally often


class ComponentCropWeightd(MapTransform):
    """Add a crop-centre weight map (key :attr:`KEY`, same grid as the label) for ``RandWeightedCropd``.

    A centre falls on foreground with probability ``pos / (pos + neg)``, split EQUALLY between the
    connected components of the foreground (26-connectivity in 3D, 8 in 2D) and uniformly inside
    each; otherwise uniformly on background. Plain foreground sampling (``RandCropByPosNegLabeld``)
    picks voxels, so a mass of 4000 voxels is a centre 100 times as often as a 40-voxel nodule;
    here both are picked equally often. A label without foreground gets uniform weights.
    """

    KEY = "crop_weight"

    def __init__(self, label_key: str = "label", pos: float = 1.0, neg: float = 1.0) -> None:
        super().__init__(keys=[label_key])
        if pos < 0 or neg < 0 or pos + neg == 0:
            raise ConfigError("pos/neg must be non-negative, not both zero")
        self.label_key, self.pos, self.neg = label_key, float(pos), float(neg)

    def __call__(self, data):
        d = dict(data)
        lab = np.asarray(d[self.label_key])[0] > 0
        weight = np.zeros(lab.shape, np.float32)
        comps, n = ndimage.label(lab, structure=np.ones((3,) * lab.ndim, bool))
        n_bg = int(lab.size - lab.sum())
        if n == 0:
            weight[:] = 1.0
        else:
            p_fg = self.pos / (self.pos + self.neg) if n_bg else 1.0
            sizes = np.bincount(comps.ravel())
            weight[lab] = (p_fg / n / sizes[comps[lab]]).astype(np.float32)
            if n_bg:
                weight[~lab] = (1.0 - p_fg) / n_bg
        d[self.KEY] = weight[None]
        return d


NO_AUGMENTATION = AugmentationConfig(p_affine=0.0, flip_axes=(), elastic=False, p_intensity=0.0,
                                     p_gamma=0.0, p_noise=0.0, bias_field=False)

# ----------------------------------------------------------------------------- flip policy

#: Organs that lie on one side of the body: mirroring them left-right creates an impossible anatomy.
_ONE_SIDED_ORGANS = frozenset({"liver", "spleen", "gallbladder", "stomach", "heart", "pancreas",
                               "duodenum", "inferior_vena_cava", "ivc", "aorta"})
_SIDE_TOKENS = frozenset({"left", "right", "lt", "rt", "lh", "rh", "l", "r", "sinister", "dexter"})
#: Vertebral / sacral levels (C1..C7, T1..T12, L1..L6, S1..S5): ordered along the spine.
_LEVEL = re.compile(r"^(?:c[1-7]|t(?:[1-9]|1[0-2])|l[1-6]|s[1-5])$")
_SERIAL_STRUCTURES = frozenset({"vertebra", "vertebrae", "rib", "disc", "intervertebral"})
_AXIS_NAMES = {"L": "L-R", "R": "L-R", "A": "A-P", "P": "A-P", "S": "S-I", "I": "S-I"}


def _tokens(name: str) -> list[str]:
    """Lower-case words of a label name: ``"Left-Hippocampus"``, ``"kidneyLeft"``, ``"rib_left_3"``."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(name))
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def label_is_sided(name: str) -> bool:
    """True when ``name`` names a side of the body (registry laterality Left/Right, or a word
    left/right/lt/rt/l/r in the name) or an organ that lies on one side (liver, spleen, heart, ...)."""
    found = lookup_label(name)
    if found is not None and found.property_modifier is not None:
        return True
    toks = _tokens(name)
    key = "_".join(toks)
    if key in _ONE_SIDED_ORGANS or (found is not None and found.name in _ONE_SIDED_ORGANS):
        return True
    return any(t in _SIDE_TOKENS for t in toks) or any(t in _ONE_SIDED_ORGANS for t in toks)


def label_is_ordered(name: str) -> bool:
    """True when ``name`` is one of a numbered series along the body axis (``vertebra_L1``,
    ``T12``, ``rib_left_3``, ``disc_L4_L5``): a superior-inferior flip would reverse its order."""
    toks = _tokens(name)
    if any(_LEVEL.match(t) for t in toks):
        return True
    return any(t in _SERIAL_STRUCTURES for t in toks) and any(t.isdigit() for t in toks)


@dataclass(frozen=True)
class FlipPlan:
    """Which voxel axes the augmentation flips and why (recorded in the training run folder)."""

    mode: str  # "auto", "none" or "explicit"
    axes: tuple[int, ...]
    reason: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: ``{"mode", "axes", "reason"}``."""
        return {"mode": self.mode, "axes": list(self.axes), "reason": self.reason}


def parse_flip_axes(text: str) -> tuple[int, ...] | str:
    """``"auto"``, ``"none"`` or comma-separated voxel axes ``"0,1,2"`` (ConfigError otherwise)."""
    word = str(text).strip().lower()
    if word in ("auto", "none"):
        return word
    try:
        axes = tuple(int(v) for v in word.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"flip axes {text!r} are invalid: give auto, none or axes like 0,1,2") from None
    if not axes or min(axes) < 0 or max(axes) > 2 or len(set(axes)) != len(axes):
        raise ConfigError(f"flip axes {text!r} are invalid: give auto, none or distinct axes 0..2 like 0,1")
    return axes


def resolve_flip_axes(flip_axes: tuple[int, ...] | Sequence[int] | str, label_names: Sequence[str] | None,
                      *, spatial_dims: int, axcodes: str | None) -> FlipPlan:
    """Decide the flipped voxel axes of a ``spatial_dims`` patch.

    ``flip_axes``: ``"auto"``, ``"none"`` or explicit axes (kept as given, axes beyond
    ``spatial_dims`` dropped). ``label_names``: the trained classes (background excluded); None
    means unknown, and ``"auto"`` then flips nothing. ``axcodes``: orientation of the
    preprocessed voxel axes (``"RAS"``: axis 0 along left-right, 2 along superior-inferior), or
    None when the preset keeps the stored axis order. Auto: no flip along the L-R axis when a
    label is sided (:func:`label_is_sided`), none along S-I when labels are ordered levels
    (:func:`label_is_ordered`); with unknown orientation a sided or ordered label turns all
    flips off; unsided, unordered tasks flip every axis.
    """
    if isinstance(flip_axes, str):
        parsed = parse_flip_axes(flip_axes)
    else:
        parsed = tuple(int(a) for a in flip_axes)
    if parsed == "none" or parsed == ():
        return FlipPlan("none", (), "flips switched off")
    if not isinstance(parsed, str):
        if min(parsed) < 0 or len(set(parsed)) != len(parsed):
            raise ConfigError(f"flip axes {tuple(flip_axes)} are invalid: give distinct axes 0..2")
        kept = tuple(a for a in parsed if a < spatial_dims)
        return FlipPlan("explicit", kept, f"axes {list(kept)} given explicitly (anatomy not checked)")
    if label_names is None:
        return FlipPlan("auto", (), "label names unknown: no flips (pass the label names or explicit axes)")
    names = [str(n) for n in label_names]
    sided = [n for n in names if label_is_sided(n)]
    ordered = [n for n in names if label_is_ordered(n)]
    every = tuple(range(spatial_dims))
    if not sided and not ordered:
        return FlipPlan("auto", every, "no label is sided or ordered: every axis may be flipped")
    why = []
    if sided:
        why.append(f"sided labels ({', '.join(sided[:3])}{', ...' if len(sided) > 3 else ''})")
    if ordered:
        why.append(f"ordered levels ({', '.join(ordered[:3])}{', ...' if len(ordered) > 3 else ''})")
    codes = (axcodes or "").upper()[:spatial_dims]
    if len(codes) < spatial_dims or any(c not in _AXIS_NAMES for c in codes):
        return FlipPlan("auto", (), f"{' and '.join(why)} with unknown voxel orientation: no flips")
    banned = ({"L-R"} if sided else set()) | ({"S-I"} if ordered else set())
    axes = tuple(i for i in every if _AXIS_NAMES[codes[i]] not in banned)
    off = [f"{_AXIS_NAMES[codes[i]]} (axis {i})" for i in every if i not in axes]
    return FlipPlan("auto", axes, f"{' and '.join(why)}: no flip along {', '.join(off)} of {codes}")


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
    label_names: Sequence[str] | None = None,
    axcodes: str | None = "RAS",
) -> Compose:
    """Random patch sampling plus augmentation for ``{"image": (C,*spatial), "label": (1,*spatial)}``.

    ``patch_size`` is in voxels, 2 or 3 values (2D or 3D). Each call yields ``num_samples``
    patches (a list of dicts), centred on foreground with probability ``pos / (pos + neg)``.
    The label is always resampled with nearest neighbour and keeps its integer values.
    ``label_names`` (trained classes) and ``axcodes`` (orientation of the input's voxel axes,
    e.g. the preset's ``"RAS"``) decide the flips when ``config.flip_axes == "auto"``
    (:func:`resolve_flip_axes`); without label names auto flips nothing.
    """
    cfg = config or AugmentationConfig()
    patch = tuple(int(p) for p in patch_size)
    nd = len(patch)
    if nd not in (2, 3) or min(patch) < 1:
        raise ConfigError(f"patch size {patch_size} must be 2 or 3 positive integers (voxels)")
    plan = resolve_flip_axes(cfg.flip_axes, label_names, spatial_dims=nd, axcodes=axcodes)
    if num_samples < 1 or pos < 0 or neg < 0 or pos + neg == 0:
        raise ConfigError("num_samples must be >= 1 and pos/neg non-negative, not both zero")
    ik = list(image_keys)
    keys = ik + [label_key]
    chain: list = [
        SpatialPadd(keys=ik, spatial_size=patch, mode="minimum"),
        SpatialPadd(keys=[label_key], spatial_size=patch, mode="constant", constant_values=0),
    ]
    if cfg.balance_components:
        chain += [ComponentCropWeightd(label_key, pos=pos, neg=neg),
                  RandWeightedCropd(keys=keys, w_key=ComponentCropWeightd.KEY, spatial_size=patch,
                                    num_samples=num_samples),
                  DeleteItemsd(keys=ComponentCropWeightd.KEY)]
    else:
        chain.append(RandCropByPosNegLabeld(keys=keys, label_key=label_key, spatial_size=patch, pos=pos, neg=neg,
                                            num_samples=num_samples, allow_smaller=False))
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
    for axis in plan.axes:
        if cfg.p_flip > 0:
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
