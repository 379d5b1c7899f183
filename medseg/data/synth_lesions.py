"""Synthetic lung lesions inserted into REAL CT lung parenchyma (seeded), for training lesion models.

A real chest CT goes in (HU, with its affine); :func:`lung_mask` finds its lungs (air inside the
body, closed so vessels and bronchial walls inside count as lung); :func:`insert_lesions` draws
``n`` lesions, each with a random shape and appearance, and blends them into the image with the
partial volume of its voxels:

* shape (:data:`SHAPES`): ``round`` (an ellipsoid), ``lobulated`` (broad bumps on the radius),
  ``spiculated`` (thin radial spikes), ``part_solid`` (a solid core inside a ground-glass rim),
  ``ground_glass``; diameter log-uniform in ``LesionConfig.diameter_mm`` (4-40 mm by default),
  random axis ratios and rotation;
* placement: inside the lung, or (``juxtapleural_probability``) with its centre near the lung's
  edge, so the lesion abuts the chest wall, mediastinum or diaphragm; the lesion never extends past
  the lung (dilated by ``LesionConfig.wall_mm``), and never touches a lesion already labelled;
* appearance: solid mean HU, ground-glass HU, smooth texture, an optional calcified spot, a
  Gaussian point-spread blur and noise, all drawn per lesion.

Partial volume: each voxel's lesion fraction is the mean of an inside test at sub-voxel points
(finer along thick slices), so a 5 mm slice through a nodule's cap gets a faint, blurred edge as on
a real scanner. The label is ``fraction >= 0.5`` (inside the lung): exact for the image drawn.
Every random draw comes from ``numpy.random.default_rng(seed)``: same inputs and seed, same output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.geometry import spacing_of

__all__ = ["SHAPES", "LesionConfig", "insert_lesions", "lung_mask", "thicken_slices"]

SHAPES = ("round", "lobulated", "spiculated", "part_solid", "ground_glass")


@dataclass(frozen=True)
class LesionConfig:
    """What :func:`insert_lesions` varies (HU, mm).

    Attributes:
        diameter_mm: range of the lesion's mean diameter (drawn log-uniform).
        shape_weights: relative chances of each of :data:`SHAPES`.
        juxtapleural_probability: chance that a lesion's centre is put near the lung's edge.
        solid_hu / ground_glass_hu: ranges of the solid and ground-glass mean intensities.
        texture_std: range of the lesion's own smooth texture std.
        calcification_probability / calcification_hu: chance and HU of a calcified spot.
        psf_sigma_mm: range of the Gaussian blur applied to the inserted lesion (scanner kernel).
        noise_std: range of the white noise added where the lesion replaced the background.
        axis_ratio: range of the ratio of each ellipsoid semi-axis to the mean radius.
        wall_mm: how far past the lung mask a juxtapleural lesion may reach (it is cut there).
    """

    diameter_mm: tuple[float, float] = (4.0, 40.0)
    shape_weights: tuple[float, ...] = (0.2, 0.3, 0.25, 0.17, 0.08)
    juxtapleural_probability: float = 0.3
    solid_hu: tuple[float, float] = (-60.0, 80.0)
    ground_glass_hu: tuple[float, float] = (-750.0, -350.0)
    texture_std: tuple[float, float] = (5.0, 40.0)
    calcification_probability: float = 0.08
    calcification_hu: tuple[float, float] = (200.0, 800.0)
    psf_sigma_mm: tuple[float, float] = (0.3, 1.0)
    noise_std: tuple[float, float] = (5.0, 30.0)
    axis_ratio: tuple[float, float] = (0.75, 1.25)
    wall_mm: float = 1.5


def _axial_axis(affine: np.ndarray) -> int:
    """The array axis closest to the world S-I direction (slices are stacked along it)."""
    return int(np.argmax(np.abs(np.asarray(affine, dtype=float)[2, :3])))


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.asarray(spacing_of(affine))


def lung_mask(image: np.ndarray, affine: np.ndarray, *, min_ml: float = 20.0,
              max_gas_fraction: float = 0.25) -> np.ndarray:
    """Lungs of a CT in HU: air (< -400 HU) inside the body outline, components of at least
    ``min_ml``, closed (about 4 mm) and hole-filled per slice so the vessels inside count as lung.

    Gas in the bowel or stomach is told apart by its density: a component with more than
    ``max_gas_fraction`` of its voxels below -950 HU is not lung (lungs measured here: <= 1 %;
    bowel and stomach gas: 33-81 %; a severely emphysematous lung could exceed it).

    The body is the largest component above -500 HU, filled slice by slice along the axial axis
    (the one closest to world S-I in ``affine``). Returns a boolean array on the image grid.
    """
    image = np.asarray(image)
    sp = _spacing(affine)
    ax = _axial_axis(affine)
    body = ndimage.binary_opening(image > -500, iterations=1)
    lab, n = ndimage.label(body)
    if n == 0:
        return np.zeros(image.shape, bool)
    sizes = ndimage.sum(body, lab, range(1, n + 1))
    body = lab == int(np.argmax(sizes)) + 1
    body = np.moveaxis(body, ax, -1)
    body = np.stack([ndimage.binary_fill_holes(body[..., k]) for k in range(body.shape[-1])], -1)
    body = np.moveaxis(body, -1, ax)
    air = body & (image < -400)
    lab, n = ndimage.label(air)
    if n == 0:
        return air
    idx = range(1, n + 1)
    sizes = ndimage.sum(air, lab, idx) * float(np.prod(sp)) / 1000.0
    gas = ndimage.mean(image < -950, lab, idx)
    keep = np.zeros(n + 1, bool)
    keep[1:] = (sizes >= min_ml) & (np.asarray(gas) <= max_gas_fraction)
    lung = keep[lab]
    it = [max(1, int(round(4.0 / s))) for s in sp]
    st = np.zeros([2 * i + 1 for i in it], bool)
    grid = np.meshgrid(*[np.arange(-i, i + 1) / max(i, 1) for i in it], indexing="ij")
    st[sum(g ** 2 for g in grid) <= 1.0] = True
    lung = ndimage.binary_closing(np.pad(lung, [(i, i) for i in it]), structure=st)
    lung = lung[tuple(slice(i, -i) for i in it)]
    lung = np.moveaxis(lung, ax, -1)
    lung = np.stack([ndimage.binary_fill_holes(lung[..., k]) for k in range(lung.shape[-1])], -1)
    return np.moveaxis(lung, -1, ax) & body


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _bumps(rng: np.random.Generator, n: int, kappa: tuple[float, float], amp: tuple[float, float]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = rng.standard_normal((n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, rng.uniform(*kappa, size=n), rng.uniform(*amp, size=n)


def _shape_params(rng: np.random.Generator, shape: str) -> dict:
    """Random radius perturbations of one lesion: broad bumps (lobulation) and / or thin spikes."""
    p: dict = {"bumps": [], "core": 1.0}
    if shape in ("lobulated", "part_solid", "ground_glass", "spiculated"):
        n = int(rng.integers(3, 9)) if shape == "lobulated" else int(rng.integers(0, 4))
        if n:
            p["bumps"].append(_bumps(rng, n, (3.0, 10.0), (-0.25, 0.35)))
    if shape == "spiculated":
        p["bumps"].append(_bumps(rng, int(rng.integers(6, 24)), (80.0, 400.0), (0.4, 1.3)))
    if shape == "part_solid":
        p["core"] = float(rng.uniform(0.3, 0.7))
    if shape == "ground_glass":
        p["core"] = 0.0
    return p


def _occupancy(rng: np.random.Generator, shape: str, radius_mm: float, spacing: np.ndarray,
               axis_ratio: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(total fraction, solid fraction, normalised radius of the voxel centres) on a local box
    centred on the lesion (odd size per axis), from sub-voxel inside tests."""
    params = _shape_params(rng, shape)
    axes = radius_mm * rng.uniform(*axis_ratio, size=3)
    rot = _random_rotation(rng)
    reach = radius_mm * (2.4 if shape == "spiculated" else 1.6) + 2.0
    half = np.ceil(reach / spacing).astype(int)
    nsub = np.clip(np.ceil(spacing / 0.6), 1, 5).astype(int)
    # sub-voxel offsets (mm) inside one voxel, per axis
    subs = [((np.arange(k) + 0.5) / k - 0.5) * s for k, s in zip(nsub, spacing, strict=True)]
    centres = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)]
    shp = tuple(2 * h + 1 for h in half)
    total = np.zeros(shp, np.float32)
    solid = np.zeros(shp, np.float32)
    cx, cy, cz = np.meshgrid(*centres, indexing="ij")
    count = 0
    for ox in subs[0]:
        for oy in subs[1]:
            for oz in subs[2]:
                pts = np.stack([cx + ox, cy + oy, cz + oz], -1)
                rho, r_lim = _inside_radius(pts, rot, axes, params)
                total += rho <= r_lim
                solid += rho <= r_lim * params["core"]
                count += 1
    pts = np.stack([cx, cy, cz], -1)
    rho, r_lim = _inside_radius(pts, rot, axes, params)
    return total / count, solid / count, (rho / np.maximum(r_lim, 1e-6)).astype(np.float32)


def _inside_radius(pts: np.ndarray, rot: np.ndarray, axes: np.ndarray, params: dict
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ellipsoidal radius of ``pts`` (mm, lesion frame) and the perturbed limit (1 + bumps)."""
    q = pts @ rot
    rho = np.sqrt(((q / axes) ** 2).sum(-1))
    u = pts / np.maximum(np.linalg.norm(pts, axis=-1, keepdims=True), 1e-6)
    lim = np.ones(rho.shape, np.float64)
    for v, kappa, amp in params["bumps"]:
        lim += (amp * np.exp(kappa * (u @ v.T - 1.0))).sum(-1)
    return rho, np.maximum(lim, 0.3)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: np.ndarray) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / max(float(n.std()), 1e-6)


def _pick_centre(rng: np.random.Generator, dist: np.ndarray, lung: np.ndarray, radius: float,
                 juxtapleural: bool) -> tuple[int, ...] | None:
    if not lung.any():
        return None
    if juxtapleural:
        cand = lung & (dist <= max(0.45 * radius, 1.0))
    else:
        cand = dist >= min(0.8 * radius, 0.8 * float(dist.max()))
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(int(rng.choice(idx)), dist.shape))


def insert_lesions(image: np.ndarray, affine: np.ndarray, *, seed: int, n: int,
                   label: np.ndarray | None = None, lung: np.ndarray | None = None,
                   config: LesionConfig | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Insert ``n`` synthetic lesions into the lungs of the CT ``image`` (HU).

    Args:
        image: 3D CT in HU; not modified.
        affine: voxel -> world mm (only the voxel sizes and the axial axis are used).
        seed: seeds every draw.
        n: lesions to insert (fewer when the lung has no room left: see the returned list).
        label: an existing lesion label on the same grid (kept; new lesions never touch it).
        lung: the lung mask (default :func:`lung_mask`).
        config: what is varied (:class:`LesionConfig`).

    Returns:
        ``(image float32, label uint8, lesions)``: the image with the lesions blended in, the
        old label plus every new lesion (1), and one dict per inserted lesion (centre voxel,
        diameter in mm, shape, juxtapleural, solid HU, voxels labelled).
    """
    cfg = config or LesionConfig()
    img = np.asarray(image, dtype=np.float32).copy()
    if img.ndim != 3:
        raise ValueError("insert_lesions needs a 3D image")
    out = np.zeros(img.shape, np.uint8) if label is None else (np.asarray(label) > 0).astype(np.uint8)
    if out.shape != img.shape:
        raise ValueError("label and image differ in shape")
    sp = _spacing(affine)
    lung = lung_mask(img, affine) if lung is None else np.asarray(lung, bool)
    dist = ndimage.distance_transform_edt(lung, sampling=sp)
    wall = ndimage.distance_transform_edt(~lung, sampling=sp) <= cfg.wall_mm
    rng = np.random.default_rng(seed)
    weights = np.asarray(cfg.shape_weights, float) / float(np.sum(cfg.shape_weights))
    lesions: list[dict] = []
    for _ in range(n):
        shape = str(rng.choice(SHAPES, p=weights))
        diameter = float(np.exp(rng.uniform(*np.log(cfg.diameter_mm))))
        jux = bool(rng.random() < cfg.juxtapleural_probability)
        occ, occ_solid, rnorm = _occupancy(rng, shape, diameter / 2.0, sp, cfg.axis_ratio)
        half = np.array(occ.shape) // 2
        placed = None
        for _try in range(12):  # a centre whose lesion stays 2 voxels off every labelled lesion
            centre = _pick_centre(rng, dist, lung, diameter / 2.0, jux)
            if centre is None:
                break
            lo = np.array(centre) - half
            src = tuple(slice(max(0, a), min(s, a + k)) for a, k, s in zip(lo, occ.shape, img.shape, strict=True))
            loc = tuple(slice(r.start - a, r.stop - a) for r, a in zip(src, lo, strict=True))
            frac = occ[loc] * wall[src]
            lab = frac >= 0.5
            if lab.any() and not (out[src] > 0)[ndimage.binary_dilation(lab, iterations=2)].any():
                placed = (centre, src, loc, frac, lab)
                break
        if placed is None:
            continue
        centre, src, loc, frac, lab = placed
        frac_solid, rn = occ_solid[loc] * wall[src], rnorm[loc]
        bg = img[src]
        solid_hu = rng.uniform(*cfg.solid_hu)
        gg_hu = rng.uniform(*cfg.ground_glass_hu)
        tex = _smooth_noise(rng, bg.shape, 1.5 / sp) * rng.uniform(*cfg.texture_std)
        val_solid = solid_hu + tex
        val_gg = gg_hu + 0.5 * tex
        if rng.random() < cfg.calcification_probability:
            spot = rn <= rng.uniform(0.15, 0.45)
            val_solid = np.where(spot, rng.uniform(*cfg.calcification_hu), val_solid)
        frac_gg = np.clip(frac - frac_solid, 0.0, 1.0)
        delta = frac_solid * (val_solid - bg) + frac_gg * (val_gg - bg)
        delta = ndimage.gaussian_filter(delta, rng.uniform(*cfg.psf_sigma_mm) / sp, mode="nearest")
        noise = rng.standard_normal(bg.shape).astype(np.float32) * rng.uniform(*cfg.noise_std)
        img[src] = bg + delta + noise * np.clip(frac, 0.0, 1.0)
        out[src] |= lab.astype(np.uint8)
        lesions.append({"centre_voxel": list(centre), "diameter_mm": round(diameter, 2), "shape": shape,
                        "juxtapleural": jux, "solid_hu": round(float(solid_hu), 1),
                        "voxels": int(lab.sum())})
    return img, out, lesions


def thicken_slices(image: np.ndarray, label: np.ndarray, affine: np.ndarray, factor: int, *,
                   offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thicker slices along the axial axis: the mean of each ``factor`` consecutive slices (from
    ``offset``), the label by majority (mean >= 0.5), the affine of the new grid (voxel centres at
    the blocks' centres). A thin-slice CT becomes one with ``factor`` times the slice thickness."""
    ax = _axial_axis(affine)
    img = np.moveaxis(np.asarray(image, np.float32), ax, -1)
    lab = np.moveaxis(np.asarray(label), ax, -1)
    n = (img.shape[-1] - offset) // factor
    if factor < 1 or n < 1:
        raise ValueError("thicken_slices: factor must be >= 1 and leave at least one slice")
    sl = slice(offset, offset + n * factor)
    new_img = img[..., sl].reshape(*img.shape[:-1], n, factor).mean(-1)
    new_lab = (lab[..., sl].reshape(*lab.shape[:-1], n, factor) > 0).mean(-1) >= 0.5
    aff = np.asarray(affine, float).copy()
    centre = np.zeros(4)
    centre[ax], centre[3] = offset + (factor - 1) / 2.0, 1.0
    aff[:3, 3] = (np.asarray(affine, float) @ centre)[:3]
    aff[:3, ax] *= factor
    return (np.moveaxis(new_img, -1, ax).astype(np.float32), np.moveaxis(new_lab, -1, ax).astype(np.uint8), aff)
