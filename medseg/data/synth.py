"""Domain-randomised training images from label maps (SynthSeg-style), seeded.

A *tissue map* (an integer map whose values name structures: organs, muscles, fat, bone, air ...)
goes in; a synthetic image comes out, with every structure given its own random intensity and
texture, then a smooth bias field, blur, thicker slices and noise. The labels the network learns
are a remapping of the same tissue map (``target``): they are exact, because the image is drawn
from them, not the other way round. An optional smooth random deformation moves image and labels
together (labels with nearest neighbour only).

Intensity modes (drawn per image, see :class:`SynthConfig`):

* ``"ct"``: each structure's mean is drawn from a plausible CT range in HU for its name
  (:data:`CT_HU_RANGES`, covering native to arterial phase), so the images look like CT of any
  phase or scanner;
* ``"random"``: each structure's mean is uniform in ``random_range`` (HU-like units), so the
  network cannot rely on any one contrast and must use shape and context (SynthSeg's idea).

Every random draw comes from one ``numpy.random.Generator`` seeded by ``seed``: the same tissue
map and seed give the same image, bit for bit. Geometry (the affine) is not changed; the training
augmentation adds rotations and scaling afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["CT_HU_RANGES", "SynthConfig", "ct_range", "synthesize"]

#: Range of a structure's MEAN intensity in HU, by the first pattern (regular expression on the
#: structure name) that matches. Native, portal-venous and arterial phases all fall inside.
CT_HU_RANGES: tuple[tuple[str, tuple[float, float]], ...] = (
    (r"^(outside|air)$", (-1024.0, -950.0)),
    (r"trachea|airway", (-1000.0, -900.0)),
    (r"lung", (-920.0, -720.0)),
    (r"fat", (-130.0, -70.0)),
    (r"liver", (45.0, 170.0)),
    (r"spleen", (40.0, 180.0)),
    (r"kidney_cyst", (-5.0, 25.0)),
    (r"kidney", (30.0, 260.0)),
    (r"pancreas", (30.0, 140.0)),
    (r"adrenal", (20.0, 90.0)),
    (r"gallbladder|urinary_bladder|csf", (-5.0, 30.0)),
    (r"stomach|small_bowel|duodenum|colon|bowel|esophagus", (-40.0, 90.0)),
    (r"aorta|artery|vein|vena|trunk|heart|atrial|portal", (30.0, 320.0)),
    (r"cartilage", (60.0, 220.0)),
    (r"spinal_cord", (15.0, 55.0)),
    (r"intervertebral_disc", (50.0, 120.0)),
    (r"cortex", (450.0, 1300.0)),  # cortical shell of a bone (before the bone pattern: "<bone>_cortex")
    (r"vertebra|sacrum|hip|femur|rib|sternum|scapula|clavicula|humerus|bone|skull", (180.0, 800.0)),
    (r"muscle|autochthon|iliopsoas|gluteus|psoas", (30.0, 75.0)),
    (r"prostate|thyroid|brain", (20.0, 70.0)),
)
_SOFT_TISSUE = (-60.0, 60.0)


def ct_range(name: str, overrides: Sequence[tuple[str, tuple[float, float]]] = ()) -> tuple[float, float]:
    """The CT mean-intensity range (HU) :func:`synthesize` draws from for a structure name: the
    first of ``overrides`` (then of :data:`CT_HU_RANGES`) whose pattern matches the name."""
    for pattern, rng in (*overrides, *CT_HU_RANGES):
        if re.search(pattern, name):
            return rng
    return _SOFT_TISSUE


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`synthesize` varies, and by how much (intensities in HU-like units).

    Attributes:
        ct_probability: chance that an image uses CT ranges (:data:`CT_HU_RANGES`) rather than
            fully random means.
        random_range: range of the structure means in ``"random"`` mode.
        texture_std: range of each structure's own noise std (drawn per structure); half of it is
            smooth (sigma ``texture_sigma`` voxels), half voxel-wise.
        bias_std: std of the smooth multiplicative bias field's log (0 = off), over
            ``bias_sigma_fraction`` of the image size.
        blur_sigma: range of the isotropic Gaussian blur in voxels (partial volume, kernel).
        thick_slice_probability / thick_slice_sigma: chance and extra blur along the last axis
            (slice thickness above the spacing).
        noise_std: range of the final white-noise std.
        gas_pattern / gas_probability: structures (names matching the pattern) that get, with that
            chance each, random pockets of gas (air intensity) inside them, as bowel does.
        deform_probability / deform_voxels: chance and maximum amplitude (in voxels) of a smooth random
            displacement applied to image and labels together (labels by nearest neighbour).
        clip: the output is clipped to this range (CT storage range by default).
        ct_ranges: ``(pattern, (lo, hi))`` pairs tried before :data:`CT_HU_RANGES` in ``"ct"`` mode
            (a training recipe's own ranges, e.g. cancellous bone; the default table is unchanged).
    """

    ct_probability: float = 0.7
    random_range: tuple[float, float] = (-250.0, 350.0)
    texture_std: tuple[float, float] = (2.0, 25.0)
    texture_sigma: float = 1.5
    bias_std: float = 0.08
    bias_sigma_fraction: float = 0.25
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    thick_slice_probability: float = 0.3
    thick_slice_sigma: tuple[float, float] = (0.5, 1.5)
    noise_std: tuple[float, float] = (3.0, 25.0)
    gas_pattern: str = r"colon|small_bowel|duodenum|stomach|bowel"
    gas_probability: float = 0.6
    deform_probability: float = 0.5
    deform_voxels: float = 3.0
    clip: tuple[float, float] = (-1024.0, 3071.0)
    ct_ranges: tuple[tuple[str, tuple[float, float]], ...] = ()


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / max(float(n.std()), 1e-6)


def _deform(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> list[np.ndarray]:
    """A smooth displacement field (voxels) on a coarse grid, upsampled: coordinates to sample."""
    coarse = [max(2, s // 16) for s in shape]
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    coords = []
    for g in grids:
        d = rng.uniform(-amplitude, amplitude, size=coarse).astype(np.float32)
        d = ndimage.zoom(d, [s / c for s, c in zip(shape, coarse, strict=True)], order=3, mode="nearest")
        coords.append(g + d[tuple(slice(0, s) for s in shape)])
    return coords


def synthesize(tissue: np.ndarray, names: Mapping[int, str], *, seed: int,
               target: Mapping[int, int] | None = None, config: SynthConfig | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """A domain-randomised image drawn from ``tissue`` and the label map that goes with it.

    Args:
        tissue: integer map (2D or 3D) of structures; every value present needs a name in
            ``names`` (0 is usually ``"outside"``, the air around the body).
        names: {tissue value: structure name}; names pick the CT range (:func:`ct_range`).
        seed: seeds every random draw (same inputs, same seed -> identical output).
        target: {tissue value: output label}; values not listed become 0. ``None``: the
            output labels are ``tissue`` itself.
        config: what is varied (:class:`SynthConfig`).

    Returns:
        ``(image float32, labels uint8/uint16)`` on the same grid as ``tissue`` (and the same
        affine: the caller keeps it). Labels are exactly ``target[tissue]`` (after the same
        deformation as the image, when one is drawn).

    Raises:
        ValueError: a tissue value without a name, or a target label outside 0..65535.
    """
    cfg = config or SynthConfig()
    tissue = np.asarray(tissue)
    if not np.issubdtype(tissue.dtype, np.integer):
        raise ValueError("tissue map must be an integer array")
    values = [int(v) for v in np.unique(tissue)]
    missing = [v for v in values if v not in names]
    if missing:
        raise ValueError(f"tissue values without a name: {missing[:10]}")
    rng = np.random.default_rng(seed)

    if rng.random() < cfg.deform_probability and cfg.deform_voxels > 0:
        coords = _deform(rng, tissue.shape, cfg.deform_voxels)
        tissue = ndimage.map_coordinates(tissue, coords, order=0, mode="nearest").astype(tissue.dtype)

    ct_mode = rng.random() < cfg.ct_probability
    image = np.zeros(tissue.shape, np.float32)
    smooth = _smooth_noise(rng, tissue.shape, cfg.texture_sigma)
    white = rng.standard_normal(tissue.shape).astype(np.float32)
    for v in values:
        lo, hi = ct_range(names[v], cfg.ct_ranges) if ct_mode else cfg.random_range
        mean = rng.uniform(lo, hi)
        std = rng.uniform(*cfg.texture_std)
        m = tissue == v
        image[m] = mean + std * (0.7 * smooth[m] + 0.7 * white[m])
        if re.search(cfg.gas_pattern, names[v]) and rng.random() < cfg.gas_probability:
            gas = m & (smooth > rng.uniform(0.3, 1.5))
            image[gas] = rng.uniform(*ct_range("air", cfg.ct_ranges)) if ct_mode else rng.uniform(*cfg.random_range)

    if cfg.bias_std > 0:
        sig = cfg.bias_sigma_fraction * float(np.mean(tissue.shape))
        bias = np.exp(cfg.bias_std * _smooth_noise(rng, tissue.shape, sig))
        # multiplicative around the soft-tissue level so air stays air (HU are offset by -1000)
        image = (image + 1000.0) * bias - 1000.0
    blur = rng.uniform(*cfg.blur_sigma)
    sigmas = [blur] * tissue.ndim
    if tissue.ndim == 3 and rng.random() < cfg.thick_slice_probability:
        sigmas[-1] = float(np.hypot(blur, rng.uniform(*cfg.thick_slice_sigma)))
    if max(sigmas) > 0:
        image = ndimage.gaussian_filter(image, sigmas, mode="nearest")
    image += rng.normal(0.0, rng.uniform(*cfg.noise_std), size=image.shape).astype(np.float32)
    image = np.clip(image, *cfg.clip).astype(np.float32)

    if target is None:
        labels = tissue
    else:
        bad = [t for t in target.values() if not 0 <= int(t) <= 65535]
        if bad:
            raise ValueError(f"target labels out of range: {bad[:5]}")
        lut = np.zeros(max(values) + 1, np.uint16)
        for k, t in target.items():
            if 0 <= int(k) <= max(values):
                lut[int(k)] = int(t)
        labels = lut[tissue]
        if labels.max(initial=0) < 256:
            labels = labels.astype(np.uint8)
    return image, labels
