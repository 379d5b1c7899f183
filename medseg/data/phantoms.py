"""Anatomy phantoms with exact labels: CT abdomen / lung / spine, brain MR, chest X-ray, nuclei.

Coordinate convention (the one bug that must never happen is a swapped left/right)
-------------------------------------------------------------------------------
DICOM's patient system LPS has +x towards the patient's **Left**, +y **Posterior**, +z
**Superior** (PS3.3 C.7.6.2.1.1). medseg works in **RAS+**: LPS with x and y negated, so +x
points towards the patient's **Right**, +y **Anterior**, +z **Superior**. Hence the liver (the
patient's right) has a LARGER RAS x than the spleen (the patient's left).

Every 3D phantom is built as shapes in these world coordinates (mm) and then sampled at the
voxel centres given by the affine, so any grid orientation (axis codes such as ``"LPS"``,
``"RAS"``, ``"PIR"``, or a 3x3 direction matrix for an oblique grid) shows the same anatomy in
the world. Axis codes name where each voxel axis points: ``"LPS"`` means i increases towards
the patient's Left, j towards Posterior, k towards Superior (the usual axial DICOM stack). A
3x3 ``orientation`` matrix holds the unit direction of the i, j, k axes as its COLUMNS, in RAS.
The grid is centred on the world origin. Anatomy is scaled to the field of view: along each
patient axis (R-L, A-P, S-I) the size is that of the voxel axis most aligned with it, so two
grids covering the same field of view hold the same anatomy, whatever their orientation.

Arrays follow the medseg axis convention (see :mod:`medseg.io`): ``image[i, j, k]``, with the
4x4 affine mapping ``(i, j, k, 1)`` to RAS millimetres. Everything is numpy (+ scipy.ndimage)
and deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError, InputError

Orientation = str | Sequence[Sequence[float]] | np.ndarray

_AXIS_DIR = {
    "R": (1.0, 0.0, 0.0), "L": (-1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0), "P": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}

# Tissue values (HU) for the CT phantoms.
HU = {
    "air": -1000.0, "lung": -850.0, "fat": -100.0, "muscle": 45.0, "liver": 60.0, "spleen": 50.0,
    "kidney": 150.0, "medulla": 110.0, "aorta": 180.0, "ivc": 130.0, "bowel": 20.0, "csf": 10.0,
    "cancellous": 450.0, "cortical": 950.0, "disc": 90.0, "heart": 40.0, "nodule": 30.0,
}

#: Vertebral levels of :func:`spine_ct`: label value = index + 1 (registry names "vertebra_<level>").
SPINE_LEVELS: tuple[str, ...] = ("T12", "L1", "L2", "L3", "L4", "L5")


@dataclass
class Phantom:
    """A synthetic image with exact labels.

    Attributes:
        image: float32, (i, j, k) or (i, j); CT in HU, MR / X-ray / microscopy in arbitrary units.
        label: uint8 label map on the same grid (0 = background); values are keys of ``labels``.
        affine: 4x4 float64, voxel index -> RAS+ mm.
        labels: {value: registry name} (see :mod:`medseg.labels`), background 0 not listed.
        modality: "CT", "MR", "DX" or "microscopy".
        instances: uint16 instance map (nuclei only), else None.
        meta: generator name, seed, parameters and ground-truth facts (e.g. nodule centres in RAS mm).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    labels: dict[int, str]
    modality: str
    instances: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        nd = self.image.ndim
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :nd], axis=0))


# --------------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------------


def direction_matrix(orientation: Orientation) -> np.ndarray:
    """3x3 matrix whose columns are the RAS unit directions of the i, j, k axes.

    ``orientation`` is three axis codes (``"LPS"``: i towards Left, j Posterior, k Superior) or a
    3x3 matrix (columns = axis directions in RAS; orthonormalised, must be right- or left-handed
    but not degenerate).
    """
    if isinstance(orientation, str):
        codes = orientation.upper()
        if len(codes) != 3 or any(c not in _AXIS_DIR for c in codes):
            raise ConfigError(f"orientation {orientation!r} is not three axis codes from R/L, A/P, S/I")
        d = np.array([_AXIS_DIR[c] for c in codes]).T
        if abs(np.linalg.det(d)) < 0.5:
            raise ConfigError(f"orientation {orientation!r} names the same patient axis twice")
        return d
    d = np.asarray(orientation, dtype=np.float64)
    if d.shape != (3, 3) or not np.all(np.isfinite(d)):
        raise ConfigError("orientation matrix must be a finite 3x3 array (columns = i, j, k directions)")
    norms = np.linalg.norm(d, axis=0)
    if np.any(norms < 1e-6):
        raise ConfigError("orientation matrix has a zero column")
    d = d / norms
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise ConfigError("orientation matrix columns must be orthogonal (an oblique rotation)")
    return d


def grid_affine(shape: Sequence[int], spacing: Sequence[float], orientation: Orientation) -> np.ndarray:
    """4x4 voxel -> RAS mm affine of a grid centred on the world origin."""
    shape_a = np.asarray(shape, dtype=np.float64)
    sp = np.asarray(spacing, dtype=np.float64)
    if shape_a.shape != (3,) or sp.shape != (3,) or np.any(shape_a < 1) or np.any(sp <= 0):
        raise ConfigError(f"need 3 positive sizes and 3 spacings (mm), got {tuple(shape)} and {tuple(spacing)}")
    d = direction_matrix(orientation)
    aff = np.eye(4)
    aff[:3, :3] = d * sp
    aff[:3, 3] = -aff[:3, :3] @ ((shape_a - 1) / 2.0)
    return aff


def _half_extents(shape: Sequence[int], spacing: Sequence[float], d: np.ndarray) -> np.ndarray:
    """Half field of view (mm) along world x, y, z: that of the voxel axis most aligned with each."""
    ext = np.asarray(shape, float) * np.asarray(spacing, float) / 2.0
    out = np.empty(3)
    for w in range(3):
        out[w] = ext[int(np.argmax(np.abs(d[w])))]
    return out


def _world_points(shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (RAS mm) of every voxel centre, each shaped like the grid (float32)."""
    idx = np.indices(tuple(shape), dtype=np.float32).reshape(3, -1)
    xyz = (affine[:3, :3].astype(np.float32) @ idx) + affine[:3, 3:4].astype(np.float32)
    return tuple(xyz[w].reshape(tuple(shape)) for w in range(3))  # type: ignore[return-value]


def _check_shape(shape: Sequence[int], nd: int) -> tuple[int, ...]:
    s = tuple(int(v) for v in shape)
    if len(s) != nd or min(s) < 4:
        raise ConfigError(f"shape must be {nd} sizes of at least 4 voxels, got {tuple(shape)}")
    if int(np.prod(s)) > 512 ** 3:
        raise ConfigError(f"shape {s} is too large for a phantom (over 512^3 voxels)")
    return s


class _Deform:
    """A smooth random displacement field in world coordinates (a few low-frequency sines)."""

    def __init__(self, rng: np.random.Generator, half: np.ndarray, amplitude: float, n: int = 3):
        self.terms = []
        for _ in range(n):
            freq = rng.uniform(0.5, 1.5, size=3) * np.pi / (2 * half)
            phase = rng.uniform(0, 2 * np.pi, size=3)
            amp = rng.uniform(-1, 1, size=3) * amplitude * half / n
            self.terms.append((freq, phase, amp))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        dx, dy, dz = np.zeros_like(x), np.zeros_like(y), np.zeros_like(z)
        for freq, phase, amp in self.terms:
            # each displacement component varies along the two other axes (divergence-free-ish)
            dx += amp[0] * np.sin(freq[1] * y + phase[0]) * np.cos(freq[2] * z + phase[1])
            dy += amp[1] * np.sin(freq[2] * z + phase[1]) * np.cos(freq[0] * x + phase[2])
            dz += amp[2] * np.sin(freq[0] * x + phase[2]) * np.cos(freq[1] * y + phase[0])
        return x + dx, y + dy, z + dz


def _world_grid(shape: tuple[int, ...], spacing: Sequence[float], orientation: Orientation, seed: int,
                deform: float):
    """What every 3D generator starts from: its seeded RNG, the voxel->RAS affine, the half extents
    of the field of view (mm), the world points of each voxel and the same points smoothly deformed
    (relative amplitude ``deform``). The RNG is consumed in the same order as before, so a seed
    gives the same phantom."""
    rng = np.random.default_rng(seed)
    d = direction_matrix(orientation)
    affine = grid_affine(shape, spacing, d)
    half = _half_extents(shape, spacing, d)
    points = _world_points(shape, affine)
    return rng, affine, half, points, _Deform(rng, half, deform)(*points)


def _ellipsoid(x, y, z, centre, semi) -> np.ndarray:
    """Normalised squared radius of points w.r.t. an axis-aligned ellipsoid (<= 1 is inside)."""
    return (((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
            + ((z - centre[2]) / semi[2]) ** 2)


def _ellipse(x, y, centre, semi) -> np.ndarray:
    return ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2


def _finish_ct(tissue: np.ndarray, rng: np.random.Generator, noise_hu: float) -> np.ndarray:
    """Partial-volume blur (0.6 voxel), Gaussian noise, rounded to integer HU in [-1024, 3071] (float32)."""
    img = ndimage.gaussian_filter(tissue.astype(np.float32), 0.6, mode="nearest")
    img += rng.normal(0.0, noise_hu, size=img.shape).astype(np.float32)
    return np.clip(np.round(img), -1024, 3071).astype(np.float32)


def _jitter(rng: np.random.Generator, scale: float, n: int = 3) -> np.ndarray:
    return rng.uniform(-scale, scale, size=n)


# --------------------------------------------------------------------------------------------
# abdomen CT
# --------------------------------------------------------------------------------------------


def abdomen_ct(shape: Sequence[int] = (96, 96, 64), spacing: Sequence[float] = (1.5, 1.5, 2.5),
               orientation: Orientation = "LPS", seed: int = 0, *, noise_hu: float = 12.0) -> Phantom:
    """Abdominal CT phantom in HU with labels {1: liver, 2: spleen, 3: kidney_right, 4: kidney_left}.

    Body (subcutaneous fat -100 HU, muscle 45 HU), liver (~60 HU) on the patient's RIGHT (RAS
    x > 0), spleen (~50 HU) on the LEFT (RAS x < 0), contrast-enhanced kidneys (cortex ~150 HU)
    either side of the spine (cortical bone ~950 HU, cancellous ~450 HU), aorta and IVC, bowel
    gas pockets; outside is air (-1000 HU). Organ positions and sizes jitter and the whole
    anatomy is smoothly deformed per ``seed``; Gaussian noise of ``noise_hu`` HU.
    ``spacing`` is mm along i, j, k; see the module docstring for ``orientation``.
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.04)
    # normalised body units: a = half width (R-L), b = half depth (A-P), c = half height (S-I)
    a, b, c = 0.9 * half[0], 0.68 * half[1], half[2]
    j = lambda s: _jitter(rng, s)  # noqa: E731

    body = _ellipse(x, y, (0, 0), (a, b)) <= 1
    inner = _ellipse(x, y, (0, 0), (0.9 * a, 0.86 * b)) <= 1
    tissue = np.full(shape, HU["air"], np.float32)
    tissue[body] = HU["fat"]
    tissue[inner] = HU["muscle"]
    # visceral fat: a smooth random field thresholded inside the abdominal cavity
    cavity = _ellipse(x, y, (0, 0.05 * b), (0.78 * a, 0.7 * b)) <= 1
    tissue[cavity & (np.sin(x / a * 7 + rng.uniform(0, 6)) * np.sin(y / b * 6 + rng.uniform(0, 6)) > 0.55)] \
        = HU["fat"] + 20

    liver_c = np.array([0.38 * a, 0.08 * b, 0.3 * c]) + j(0.04) * (a, b, c)
    liver_s = np.array([0.4 * a, 0.55 * b, 0.5 * c]) * (1 + j(0.08))
    liver = _ellipsoid(x, y, z, liver_c, liver_s) <= 1
    # a flat medial-posterior cut makes it less of an egg
    liver &= (x - liver_c[0]) - 0.6 * (y - liver_c[1]) > -0.9 * liver_s[0]

    spleen_c = np.array([-0.52 * a, -0.28 * b, 0.38 * c]) + j(0.03) * (a, b, c)
    spleen_s = np.array([0.15 * a, 0.26 * b, 0.3 * c]) * (1 + j(0.1))
    spleen = _ellipsoid(x, y, z, spleen_c, spleen_s) <= 1

    kid_s = np.array([0.13 * a, 0.2 * b, 0.32 * c])
    kr_c = np.array([0.34 * a, -0.42 * b, -0.12 * c]) + j(0.03) * (a, b, c)  # right kidney lower
    kl_c = np.array([-0.34 * a, -0.42 * b, -0.02 * c]) + j(0.03) * (a, b, c)
    kr_s, kl_s = kid_s * (1 + j(0.08)), kid_s * (1 + j(0.08))
    kr_r = _ellipsoid(x, y, z, kr_c, kr_s)
    kl_r = _ellipsoid(x, y, z, kl_c, kl_s)
    kid_r, kid_l = kr_r <= 1, kl_r <= 1

    # spine: vertebral body, canal, posterior elements (not deformed with the soft tissue)
    sp_c = (0.0, -0.55 * b)
    vb_r = _ellipse(x0, y0, sp_c, (0.17 * a, 0.2 * b))
    canal = _ellipse(x0, y0, (0.0, sp_c[1] - 0.3 * b), (0.07 * a, 0.1 * b)) <= 1
    arch = (_ellipse(x0, y0, (0.0, sp_c[1] - 0.3 * b), (0.13 * a, 0.17 * b)) <= 1) & ~canal
    process = (np.abs(x0) < 0.035 * a) & (y0 < sp_c[1] - 0.4 * b) & (y0 > -0.95 * b)

    aorta = _ellipse(x, y, (-0.09 * a, sp_c[1] + 0.3 * b), (0.065 * a, 0.09 * b)) <= 1
    ivc = _ellipse(x, y, (0.13 * a, sp_c[1] + 0.32 * b), (0.07 * a, 0.08 * b)) <= 1

    # bowel: a few loops (tubes) and gas pockets in the anterior abdomen
    for _ in range(rng.integers(3, 6)):
        bc = np.array([rng.uniform(-0.4, 0.4) * a, rng.uniform(0.1, 0.5) * b, rng.uniform(-0.8, 0.2) * c])
        loop = _ellipsoid(x, y, z, bc, (0.12 * a, 0.12 * b, 0.3 * c)) <= 1
        tissue[loop & cavity] = HU["bowel"]
        gas = _ellipsoid(x, y, z, bc + (0, 0.05 * b, 0), (0.05 * a, 0.05 * b, 0.1 * c)) <= 1
        tissue[gas & cavity] = HU["air"]

    tissue[aorta] = HU["aorta"]
    tissue[ivc] = HU["ivc"]
    tissue[liver] = HU["liver"]
    tissue[spleen] = HU["spleen"]
    tissue[kid_r] = HU["kidney"]
    tissue[kid_l] = HU["kidney"]
    tissue[kid_r & (kr_r < 0.35)] = HU["medulla"]
    tissue[kid_l & (kl_r < 0.35)] = HU["medulla"]
    bone = (vb_r <= 1) | arch | process
    tissue[bone] = HU["cortical"]
    tissue[(vb_r <= 0.7)] = HU["cancellous"]
    tissue[canal] = HU["csf"]
    tissue[~body] = HU["air"]

    label = np.zeros(shape, np.uint8)
    label[liver] = 1
    label[spleen] = 2
    label[kid_r] = 3
    label[kid_l] = 4
    label[bone | canal | ~body] = 0
    image = _finish_ct(tissue, rng, noise_hu)
    return Phantom(image, label, affine, {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"},
                   "CT", meta={"generator": "abdomen_ct", "seed": int(seed), "body_part": "ABDOMEN"})


# --------------------------------------------------------------------------------------------
# chest CT with nodules
# --------------------------------------------------------------------------------------------


def lung_ct(shape: Sequence[int] = (96, 96, 64), spacing: Sequence[float] = (1.5, 1.5, 2.5),
            orientation: Orientation = "LPS", seed: int = 0, *, lung_labels: bool = False,
            n_nodules: int | None = None, noise_hu: float = 12.0) -> Phantom:
    """Chest CT phantom in HU: thorax, lungs (~-850 HU), heart, ribs, spine and 1-3 nodules/masses.

    Labels ``{1: lung_nodule}`` (every nodule; ``meta["nodules"]`` lists each centre in RAS mm
    and radius in mm), or with ``lung_labels=True`` ``{1: lung_right, 2: lung_left}`` (nodules
    count as part of their lung). The right lung (patient's right, RAS x > 0) is the larger one;
    the heart bulges into the left. Nodules (~30 HU soft tissue, radius 3-11 mm at the default
    field of view) lie fully inside one lung and never touch each other. ``n_nodules`` fixes
    their number (1-3 drawn from ``seed`` otherwise).
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.03)
    a, b, c = 0.9 * half[0], 0.68 * half[1], half[2]

    body = _ellipse(x, y, (0, 0), (a, b)) <= 1
    inner = _ellipse(x, y, (0, 0), (0.9 * a, 0.86 * b)) <= 1
    tissue = np.full(shape, HU["air"], np.float32)
    tissue[body] = HU["fat"]
    tissue[inner] = HU["muscle"]

    # ribs: a band in the chest wall, interrupted along z, sloping down towards the front
    wall = _ellipse(x, y, (0, 0), (0.84 * a, 0.78 * b))
    rib_phase = rng.uniform(0, 2 * np.pi)
    ribs = (wall <= 1) & (wall >= 0.8) & (np.sin((z + 0.25 * c * y / b) * 2 * np.pi / (0.42 * c) + rib_phase) > 0.35)
    ribs &= y > -0.7 * b

    lung_s = np.array([0.34 * a, 0.62 * b, 0.85 * c])
    rl_c = np.array([0.42 * a, -0.02 * b, 0.08 * c]) + _jitter(rng, 0.02) * (a, b, c)
    ll_c = np.array([-0.42 * a, -0.04 * b, 0.1 * c]) + _jitter(rng, 0.02) * (a, b, c)
    rl_s = lung_s * (1 + _jitter(rng, 0.05))
    ll_s = lung_s * np.array([0.92, 1.0, 0.97]) * (1 + _jitter(rng, 0.05))
    dome_r = -0.55 * c + 0.35 * c * ((x - rl_c[0]) / rl_s[0]) ** 2
    dome_l = -0.62 * c + 0.35 * c * ((x - ll_c[0]) / ll_s[0]) ** 2  # left hemidiaphragm lower
    lung_r = (_ellipsoid(x, y, z, rl_c, rl_s) <= 1) & (z > dome_r)
    lung_l = (_ellipsoid(x, y, z, ll_c, ll_s) <= 1) & (z > dome_l)
    heart_c = np.array([-0.12 * a, 0.28 * b, -0.3 * c]) + _jitter(rng, 0.02) * (a, b, c)
    heart = _ellipsoid(x, y, z, heart_c, (0.32 * a, 0.38 * b, 0.38 * c)) <= 1
    lung_l &= ~heart
    lung_r &= ~heart
    sp_c = (0.0, -0.6 * b)
    vb_r = _ellipse(x0, y0, sp_c, (0.12 * a, 0.17 * b))
    canal = _ellipse(x0, y0, (0.0, sp_c[1] - 0.25 * b), (0.05 * a, 0.08 * b)) <= 1
    arch = (_ellipse(x0, y0, (0.0, sp_c[1] - 0.25 * b), (0.1 * a, 0.14 * b)) <= 1) & ~canal
    aorta = _ellipse(x, y, (-0.1 * a, sp_c[1] + 0.28 * b), (0.06 * a, 0.08 * b)) <= 1
    trachea = (_ellipse(x, y, (0.0, 0.05 * b), (0.06 * a, 0.07 * b)) <= 1) & (z > 0.35 * c)
    lung_r &= _ellipse(x0, y0, sp_c, (0.22 * a, 0.3 * b)) > 1
    lung_l &= _ellipse(x0, y0, sp_c, (0.22 * a, 0.3 * b)) > 1

    # nodules: spheres fully inside one lung, apart from each other
    n = int(rng.integers(1, 4)) if n_nodules is None else int(n_nodules)
    if not 0 <= n <= 8:
        raise ConfigError(f"n_nodules must be between 0 and 8, got {n}")
    nodules: list[dict[str, Any]] = []
    nod = np.zeros(shape, bool)
    min_sp = float(min(spacing))
    tries = 0
    while len(nodules) < n:
        tries += 1
        if tries > 2000:
            raise ConfigError("cannot place the nodules: the field of view is too small")
        right = bool(rng.integers(0, 2))
        cen, semi, dome = (rl_c, rl_s, -0.55 * c) if right else (ll_c, ll_s, -0.62 * c)
        r = max(rng.uniform(0.1, 0.34) * semi[0], 1.6 * min_sp)
        u = rng.uniform(-1, 1, 3)
        if np.sum(u ** 2) > 1:
            continue
        p = cen + u * np.maximum(semi - r - 2 * min_sp, 0.0)
        if _ellipsoid(*p, cen, semi - r - 2 * min_sp) > 1 or p[2] - r < dome + 0.35 * c + 2 * min_sp:
            continue
        if _ellipsoid(*p, heart_c, (0.32 * a + r, 0.38 * b + r, 0.38 * c + r)) <= 1:
            continue
        if _ellipse(p[0], p[1], sp_c, (0.22 * a + r, 0.3 * b + r)) <= 1:
            continue
        if any(np.linalg.norm(p - q["centre_deformed"]) < r + q["radius_mm"] + 3 * min_sp for q in nodules):
            continue
        sphere = _ellipsoid(x, y, z, p, (r, r, r)) <= 1
        side = lung_r if right else lung_l
        if sphere.sum() < 4 or np.any(sphere & ~side):
            continue
        nod |= sphere
        nodules.append({"centre_deformed": p, "radius_mm": float(r), "lung": "right" if right else "left"})

    # pulmonary vessels: smooth random texture inside the lungs (image only)
    vessels = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.2)
    vessels = vessels > np.quantile(vessels, 0.93)

    tissue[aorta] = HU["heart"]
    tissue[heart] = HU["heart"]
    tissue[lung_r | lung_l] = HU["lung"]
    tissue[(lung_r | lung_l) & vessels] = -450.0
    tissue[trachea] = HU["air"]
    tissue[ribs & body] = HU["cortical"] - 150
    tissue[(vb_r <= 1) | arch] = HU["cortical"]
    tissue[vb_r <= 0.65] = HU["cancellous"]
    tissue[canal] = HU["csf"]
    tissue[nod] = HU["nodule"]
    tissue[~body] = HU["air"]

    label = np.zeros(shape, np.uint8)
    if lung_labels:
        label[lung_r | (nod & (x > 0))] = 1
        label[lung_l | (nod & (x <= 0))] = 2
        names = {1: "lung_right", 2: "lung_left"}
    else:
        label[nod] = 1
        names = {1: "lung_nodule"}
    # report each nodule's world centre (RAS mm) from its voxels
    lab_n, _ = ndimage.label(nod)
    out_nodules = []
    for q in nodules:
        sphere = _ellipsoid(x, y, z, q["centre_deformed"], (q["radius_mm"],) * 3) <= 1
        ijk = np.argwhere(sphere).mean(axis=0)
        out_nodules.append({"centre_ras_mm": [round(float(v), 3) for v in (affine @ np.r_[ijk, 1])[:3]],
                            "radius_mm": round(q["radius_mm"], 3), "lung": q["lung"],
                            "n_voxels": int(sphere.sum())})
    image = _finish_ct(tissue, rng, noise_hu)
    return Phantom(image, label, affine, names, "CT",
                   meta={"generator": "lung_ct", "seed": int(seed), "body_part": "CHEST",
                         "nodules": out_nodules})


# --------------------------------------------------------------------------------------------
# lumbar spine CT
# --------------------------------------------------------------------------------------------


def spine_ct(shape: Sequence[int] = (64, 64, 96), spacing: Sequence[float] = (1.25, 1.25, 1.5),
             orientation: Orientation = "LPS", seed: int = 0, *, noise_hu: float = 15.0) -> Phantom:
    """CT of a vertebral column (HU) labelled by level: ``{1: vertebra_T12, 2: vertebra_L1, ...,
    6: vertebra_L5}`` (:data:`SPINE_LEVELS`, the same mapping for every seed).

    Per seed: 3 to 6 consecutive levels (``meta["levels"]``, superior first, i.e. the first is
    at the largest RAS z), their start level, a smooth random curvature in the coronal
    (scoliosis) and sagittal (lordosis) planes, and small size changes. Each vertebra has a body
    (cortical shell ~950 HU, cancellous core ~450 HU) and posterior elements (pedicles, lamina,
    spinous process pointing posterior = -y in RAS, transverse processes); intervertebral discs
    (~90 HU) are unlabelled. The column runs along the patient's S-I axis.
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.02)
    a, b, c = half

    n = int(rng.integers(3, len(SPINE_LEVELS) + 1))
    start = int(rng.integers(0, len(SPINE_LEVELS) - n + 1))
    levels = list(SPINE_LEVELS[start:start + n])
    # column centre line: coronal (x) and sagittal (y) curvature as functions of z
    cx_amp, cx_ph = rng.uniform(-0.12, 0.12) * a, rng.uniform(0, np.pi)
    lordosis = rng.uniform(0.05, 0.2) * b
    xc = cx_amp * np.sin(np.pi * z / (2 * c) + cx_ph)
    yc = 0.2 * b + lordosis * (1 - (z / c) ** 2)  # lumbar lordosis: the middle lies anterior
    u, v = x - xc, y - yc

    tissue = np.full(shape, HU["muscle"], np.float32)
    body = _ellipse(x0, y0, (0, 0.1 * b), (1.3 * a, 1.25 * b)) <= 1
    tissue[_ellipse(x, y, (0.55 * a, -0.45 * b), (0.3 * a, 0.35 * b)) <= 1] = HU["fat"]
    tissue[_ellipse(x, y, (-0.55 * a, -0.45 * b), (0.3 * a, 0.35 * b)) <= 1] = HU["fat"]

    level_h = 1.9 * c / n
    top = 0.95 * c
    label = np.zeros(shape, np.uint8)
    bone = np.zeros(shape, bool)
    for idx, level in enumerate(levels):
        g = 1.0 + 0.04 * (SPINE_LEVELS.index(level)) + rng.uniform(-0.04, 0.04)
        z_hi = top - idx * level_h
        disc_h = 0.22 * level_h
        zb_hi, zb_lo = z_hi - disc_h / 2, z_hi - level_h + disc_h / 2
        zm = (zb_hi + zb_lo) / 2
        in_slab = (z <= zb_hi) & (z >= zb_lo)
        vb = _ellipse(u, v, (0, 0), (0.36 * a * g, 0.3 * b * g))
        body_m = in_slab & (vb <= 1)
        # posterior elements: arch around the canal, spinous and transverse processes
        cy = -0.42 * b * g
        canal_r = _ellipse(u, v, (0, cy), (0.14 * a, 0.13 * b))
        arch_m = (_ellipse(u, v, (0, cy), (0.26 * a * g, 0.24 * b * g)) <= 1) & (canal_r > 1)
        pe_slab = (z <= zm + 0.3 * level_h) & (z >= zm - 0.3 * level_h)
        spinous = (np.abs(u) < 0.06 * a) & (v < cy - 0.15 * b) & (v > -0.95 * b) \
            & (z - zm < 0.2 * level_h + 0.25 * (v - cy)) & (z - zm > -0.2 * level_h + 0.25 * (v - cy))
        transverse = (np.abs(v - cy) < 0.07 * b) & (np.abs(u) < 0.62 * a * g) & \
            (np.abs(z - zm) < 0.14 * level_h)
        post = pe_slab & (arch_m | transverse) | spinous
        vert = body_m | post
        value = SPINE_LEVELS.index(level) + 1
        label[vert] = value
        bone |= vert
        tissue[vert] = HU["cortical"]
        tissue[body_m & (vb <= 0.7) & (z <= zb_hi - 1.2 * min(spacing)) & (z >= zb_lo + 1.2 * min(spacing))] \
            = HU["cancellous"]
        disc = (vb <= 0.95) & (z > zb_hi) & (z < zb_hi + disc_h)
        tissue[disc & ~bone] = HU["disc"]
        tissue[(canal_r <= 1) & (z <= z_hi) & (z >= z_hi - level_h)] = HU["csf"]
    # the disc below the last vertebra
    tissue[(_ellipse(u, v, (0, 0), (0.34 * a, 0.28 * b)) <= 1) & (z < zb_lo) & (z > zb_lo - disc_h) & ~bone] \
        = HU["disc"]
    tissue[~body] = HU["air"]
    label[~body] = 0
    image = _finish_ct(tissue, rng, noise_hu)
    return Phantom(image, label, affine, {i + 1: f"vertebra_{lv}" for i, lv in enumerate(SPINE_LEVELS)},
                   "CT", meta={"generator": "spine_ct", "seed": int(seed), "body_part": "LSPINE",
                               "levels": levels})


# --------------------------------------------------------------------------------------------
# brain MR
# --------------------------------------------------------------------------------------------


def brain_mr(shape: Sequence[int] = (80, 96, 80), spacing: Sequence[float] = (2.0, 2.0, 2.0),
             orientation: Orientation = "RAS", seed: int = 0, *, noise: float = 15.0) -> Phantom:
    """T1-weighted head MR phantom (integer arbitrary units, 0..~1000) with labels ``{1: brain}``.

    Scalp (bright fat), skull (dark cortical bone, brighter diploe), extra-axial CSF (dark),
    cortical grey matter with gyri (~450), white matter (~700), lateral ventricles (CSF),
    cerebellum, interhemispheric fissure, and the eyes anterior (RAS +y). The brain label is
    GM + WM + ventricles + cerebellum (no extra-axial CSF). A smooth multiplicative bias field
    and Rician noise (``noise``) vary with ``seed``.
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.03)
    hs = np.array([0.88 * half[0], 0.9 * half[1], 0.85 * half[2]])
    hc = np.array([0.0, 0.0, -0.05 * half[2]])

    head = _ellipsoid(x, y, z, hc, hs)
    skull_out = _ellipsoid(x, y, z, hc, hs * 0.93)
    skull_in = _ellipsoid(x, y, z, hc, hs * 0.85)
    bc = hc + np.array([0.0, -0.02 * hs[1], 0.06 * hs[2]])
    bs = hs * np.array([0.8, 0.8, 0.74]) * (1 + _jitter(rng, 0.03))
    brain_r = _ellipsoid(x, y, z, bc, bs)
    # gyri: modulate the cortical surface with sines of the direction
    rr = np.sqrt((x - bc[0]) ** 2 + (y - bc[1]) ** 2 + (z - bc[2]) ** 2) + 1e-3
    theta, phi = np.arccos(np.clip((z - bc[2]) / rr, -1, 1)), np.arctan2(y - bc[1], x - bc[0])
    f1, f2 = rng.integers(9, 14), rng.integers(7, 11)
    gyri = 0.06 * np.sin(f1 * phi + rng.uniform(0, 6)) * np.sin(f2 * theta + rng.uniform(0, 6))
    cerebrum = brain_r <= 1 + gyri - 0.06
    cereb = _ellipsoid(x, y, z, bc + np.array([0, -0.5 * bs[1], -0.62 * bs[2]]),
                       bs * np.array([0.55, 0.35, 0.3])) <= 1
    stem = (_ellipse(x, y, (bc[0], bc[1] - 0.15 * bs[1]), (0.12 * bs[0], 0.14 * bs[1])) <= 1) & \
        (z < bc[2] - 0.2 * bs[2]) & (z > bc[2] - 1.1 * bs[2])
    fissure = (np.abs(x - bc[0]) < max(1.2, 0.6 * float(min(spacing)))) & (z > bc[2] + 0.3 * bs[2])
    cerebrum &= ~fissure
    wm = (brain_r <= (0.72 + gyri * 0.5) ** 2) & cerebrum
    vent = np.zeros(shape, bool)
    for s in (1, -1):
        vent |= _ellipsoid(x, y, z, bc + np.array([s * 0.13 * bs[0], 0.02 * bs[1], 0.1 * bs[2]]),
                           bs * np.array([0.08, 0.35, 0.12])) <= 1
    brain = cerebrum | cereb | stem
    eyes = np.zeros(shape, bool)
    for s in (1, -1):
        eyes |= _ellipsoid(x, y, z, hc + np.array([s * 0.33 * hs[0], 0.78 * hs[1], -0.3 * hs[2]]),
                           (0.12 * hs[0],) * 3) <= 1

    img = np.zeros(shape, np.float32)
    img[head <= 1] = 600.0  # scalp / subcutaneous fat
    img[skull_out <= 1] = 60.0  # cortical bone
    img[(skull_out <= 0.97) & (skull_in > 1.04)] = 300.0  # diploe
    img[skull_in <= 1] = 150.0  # CSF
    img[brain] = 450.0
    img[wm | (cereb & (_ellipsoid(x, y, z, bc + np.array([0, -0.5 * bs[1], -0.62 * bs[2]]),
                                  bs * np.array([0.3, 0.18, 0.15])) <= 1))] = 700.0
    img[stem] = 650.0
    img[vent] = 150.0
    img[eyes] = 120.0
    label = np.zeros(shape, np.uint8)
    label[brain | vent] = 1
    label[eyes] = 0
    img = ndimage.gaussian_filter(img, 0.6, mode="nearest")
    gx, gy, gz = (rng.uniform(-0.15, 0.15) for _ in range(3))
    img *= (1 + gx * x0 / half[0] + gy * y0 / half[1] + gz * z0 / half[2]).astype(np.float32)
    n1 = rng.normal(0, noise, shape).astype(np.float32)
    n2 = rng.normal(0, noise, shape).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
    image = np.clip(np.round(img), 0, 4095).astype(np.float32)
    return Phantom(image, label, affine, {1: "brain"}, "MR",
                   meta={"generator": "brain_mr", "seed": int(seed), "body_part": "HEAD"})


# --------------------------------------------------------------------------------------------
# chest radiograph
# --------------------------------------------------------------------------------------------


def xray_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """4x4 affine of a PA chest radiograph as displayed: i = patient's right -> left (RAS -x),
    j = superior -> inferior (RAS -z), k = unit normal towards posterior (RAS -y); centred."""
    si, sj = (float(v) for v in spacing)
    aff = np.zeros((4, 4))
    aff[:3, 0] = (-si, 0.0, 0.0)
    aff[:3, 1] = (0.0, 0.0, -sj)
    aff[:3, 2] = (0.0, -1.0, 0.0)
    aff[3, 3] = 1.0
    aff[:3, 3] = -aff[:3, :2] @ ((np.asarray(shape[:2], float) - 1) / 2.0)
    return aff


def _chord(x, z, centre, semi) -> np.ndarray:
    """Length (mm) along y of the chord through an axis-aligned ellipsoid at each (x, z)."""
    q = 1 - ((x - centre[0]) / semi[0]) ** 2 - ((z - centre[2]) / semi[2]) ** 2
    return 2 * semi[1] * np.sqrt(np.clip(q, 0, None))


def chest_xray(shape: Sequence[int] = (256, 256), spacing: Sequence[float] = (1.4, 1.4), seed: int = 0,
               *, noise: float = 20.0) -> Phantom:
    """PA chest radiograph (DX) with lung-field labels ``{1: lung_right, 2: lung_left}``.

    Display convention (that of a PA film on a light box, and of DICOM PatientOrientation
    ``L\\F``): the image is indexed ``(i, j)``; i (the pixel column, left to right on screen)
    runs from the patient's RIGHT to the patient's LEFT, j (the pixel row, top to bottom) from
    superior to inferior. So the right lung (label 1) has the SMALLER i. The affine
    (:func:`xray_affine`) maps i to RAS -x and j to RAS -z.

    The image is a Beer-Lambert projection along the antero-posterior axis of an analytic
    chest (torso, lungs above domed hemidiaphragms, heart bulging to the left, spine, ribs,
    clavicles), shown as log-attenuation ("bright = dense", MONOCHROME2), integers in
    [0, 4095]. Lung labels are the lung fields not covered by the heart or the diaphragm (the
    convention of the Montgomery / Shenzhen masks). ``spacing`` is mm along i, j.
    """
    s = tuple(int(v) for v in shape)
    if len(s) != 2 or min(s) < 16:
        raise ConfigError(f"shape must be two sizes of at least 16 pixels, got {tuple(shape)}")
    if len(spacing) != 2 or min(spacing) <= 0:
        raise ConfigError(f"spacing must be two positive numbers (mm), got {tuple(spacing)}")
    rng = np.random.default_rng(seed)
    affine = xray_affine(s, spacing)
    ii, jj = np.indices(s, dtype=np.float64)
    x0 = affine[0, 0] * ii + affine[0, 3]
    z0 = affine[2, 1] * jj + affine[2, 3]
    hx, hz = s[0] * spacing[0] / 2, s[1] * spacing[1] / 2
    # smooth in-plane warp
    w = [(rng.uniform(0.5, 1.5) * np.pi / (2 * hz), rng.uniform(0, 6), rng.uniform(-0.02, 0.02) * hx)
         for _ in range(2)]
    x = x0 + sum(am * np.sin(f * z0 + ph) for f, ph, am in w)
    z = z0 + sum(am * np.sin(f * x0 + ph) for f, ph, am in w)

    mu_soft, mu_lung, mu_bone = 0.02, 0.004, 0.05  # per mm
    ta = 0.78 * hx * (1 + rng.uniform(-0.04, 0.04))
    tb = 0.42 * ta
    torso = (z < 0.72 * hz) * 2 * tb * np.sqrt(np.clip(1 - (x / ta) ** 2, 0, None))
    shoulders = (z >= 0.72 * hz) * 2 * tb * np.sqrt(np.clip(1 - (x / ta) ** 2 - ((z - 0.72 * hz) / (0.2 * hz)) ** 2, 0, None))
    neck = (z >= 0.72 * hz) * 2 * 0.5 * tb * np.sqrt(np.clip(1 - (x / (0.22 * hx)) ** 2, 0, None))
    p = mu_soft * (torso + np.maximum(shoulders, neck))

    lung_semi = np.array([0.3 * hx, 0.75 * tb, 0.48 * hz])
    rl_c = np.array([0.32 * hx, 0.0, 0.12 * hz]) + _jitter(rng, 0.015) * (hx, 0, hz)
    ll_c = np.array([-0.32 * hx, 0.0, 0.1 * hz]) + _jitter(rng, 0.015) * (hx, 0, hz)
    rl_s = lung_semi * (1 + _jitter(rng, 0.05) * (1, 0, 1))
    ll_s = lung_semi * np.array([0.93, 1, 0.98]) * (1 + _jitter(rng, 0.05) * (1, 0, 1))
    dome_r = rl_c[2] - 0.72 * rl_s[2] + 0.35 * rl_s[2] * ((x - rl_c[0]) / rl_s[0]) ** 2
    dome_l = ll_c[2] - 0.78 * ll_s[2] + 0.35 * ll_s[2] * ((x - ll_c[0]) / ll_s[0]) ** 2
    # lungs do not cross the midline (mediastinum)
    chord_r = _chord(x, z, rl_c, rl_s) * (z > dome_r) * (x > 0.06 * hx)
    chord_l = _chord(x, z, ll_c, ll_s) * (z > dome_l) * (x < -0.06 * hx)
    heart_c = np.array([-0.1 * hx, 0.0, -0.22 * hz]) + _jitter(rng, 0.015) * (hx, 0, hz)
    heart_s = np.array([0.27 * hx, 0.5 * tb, 0.2 * hz]) * (1 + _jitter(rng, 0.05))
    heart = _chord(x, z, heart_c, heart_s)
    p += (mu_lung - mu_soft) * (chord_r + chord_l) + 0.006 * heart
    # spine (a column behind the mediastinum) and ribs / clavicles (thin bony bands)
    p += (mu_bone - mu_soft) * 2 * 0.05 * hx * np.sqrt(np.clip(1 - (x / (0.06 * hx)) ** 2, 0, None))
    for side in (1, -1):
        for r in range(10):
            zr = 0.62 * hz - r * 0.12 * hz + rng.uniform(-0.01, 0.01) * hz
            cent = zr - 0.22 * hz * (np.abs(x) / (0.7 * hx)) ** 2
            band = (np.abs(z - cent) < 0.022 * hz) & (side * x > 0.05 * hx) & (np.abs(x) < 0.72 * hx)
            p += 0.35 * band
        clav = (np.abs(z - (0.6 * hz + 0.12 * hz * np.abs(x) / (0.5 * hx))) < 0.025 * hz) & \
            (side * x > 0.06 * hx) & (np.abs(x) < 0.5 * hx)
        p += 0.5 * clav
    p = ndimage.gaussian_filter(p, 0.8)
    img = 4095.0 * (1 - np.exp(-p / 3.0))
    img += rng.normal(0, noise, s)
    image = np.clip(np.round(img), 0, 4095).astype(np.float32)

    label = np.zeros(s, np.uint8)
    label[(chord_r > 0) & (heart == 0)] = 1
    label[(chord_l > 0) & (heart == 0)] = 2
    return Phantom(image, label, affine, {1: "lung_right", 2: "lung_left"}, "DX",
                   meta={"generator": "chest_xray", "seed": int(seed), "body_part": "CHEST",
                         "view_position": "PA", "display": "i: patient right->left, j: superior->inferior"})


# --------------------------------------------------------------------------------------------
# fluorescence nuclei
# --------------------------------------------------------------------------------------------


def nuclei_2d(shape: Sequence[int] = (256, 256), n: int = 40, seed: int = 0, *,
              touching: float = 0.5) -> Phantom:
    """Fluorescence-like nuclei: ``image`` (float32 counts), ``instances`` (uint16, 1..N, each
    nucleus one id, touching nuclei split along their contact line) and the semantic
    ``label`` ``{1: nucleus}``. About ``touching`` of the nuclei are placed against a
    neighbour. ``meta["n_instances"]`` is N. Pixel units (no physical size): the affine is the
    identity (spacing 1).
    """
    s = tuple(int(v) for v in shape)
    if len(s) != 2 or min(s) < 32:
        raise ConfigError(f"shape must be two sizes of at least 32 pixels, got {tuple(shape)}")
    if not 1 <= n <= 2000:
        raise ConfigError(f"n must be between 1 and 2000 nuclei, got {n}")
    rng = np.random.default_rng(seed)
    scale = min(s) / 256.0
    nuclei: list[tuple[float, float, float, float, float]] = []  # ci, cj, r1, r2, angle
    tries = 0
    while len(nuclei) < n and tries < 50 * n:
        tries += 1
        r1 = rng.uniform(6, 10) * max(scale, 0.5)
        r2 = r1 * rng.uniform(0.65, 1.0)
        ang = rng.uniform(0, np.pi)
        if nuclei and rng.uniform() < touching:
            oi, oj, o1, o2, _ = nuclei[int(rng.integers(len(nuclei)))]
            t = rng.uniform(0, 2 * np.pi)
            dist = (0.5 * (o1 + o2) + 0.5 * (r1 + r2)) * rng.uniform(0.8, 0.92)
            ci, cj = oi + dist * np.cos(t), oj + dist * np.sin(t)
        else:
            ci, cj = rng.uniform(0, s[0]), rng.uniform(0, s[1])
        if not (r1 <= ci < s[0] - r1 and r1 <= cj < s[1] - r1):
            continue
        if any(np.hypot(ci - a, cj - b) < 0.7 * (0.5 * (r1 + r2) + 0.5 * (a1 + a2)) for a, b, a1, a2, _ in nuclei):
            continue
        nuclei.append((ci, cj, r1, r2, ang))

    best = np.full(s, np.inf, np.float32)
    inst = np.zeros(s, np.uint16)
    for idx, (ci, cj, r1, r2, ang) in enumerate(nuclei, start=1):
        lo_i, hi_i = int(max(0, ci - r1 - 2)), int(min(s[0], ci + r1 + 3))
        lo_j, hi_j = int(max(0, cj - r1 - 2)), int(min(s[1], cj + r1 + 3))
        gi, gj = np.mgrid[lo_i:hi_i, lo_j:hi_j].astype(np.float32)
        di, dj = gi - ci, gj - cj
        u = di * np.cos(ang) + dj * np.sin(ang)
        v = -di * np.sin(ang) + dj * np.cos(ang)
        dist = (u / r1) ** 2 + (v / r2) ** 2
        sub_best = best[lo_i:hi_i, lo_j:hi_j]
        take = (dist <= 1) & (dist < sub_best)
        sub_best[take] = dist[take]
        inst[lo_i:hi_i, lo_j:hi_j][take] = idx
    # drop fragments (< 12 px) and renumber 1..N in order of appearance
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    keep = ids[counts >= 12]
    lut = np.zeros(len(nuclei) + 1, np.uint16)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.uint16)
    inst = lut[inst]

    bright = np.concatenate([[0.0], rng.uniform(0.45, 1.0, len(keep))]).astype(np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal(s).astype(np.float32), 1.5)
    signal = bright[inst] * (1 + 1.5 * texture) * 2500.0 * (inst > 0)
    signal = ndimage.gaussian_filter(signal, 1.0) + 120.0
    image = rng.poisson(np.clip(signal, 0, None)).astype(np.float32)
    label = (inst > 0).astype(np.uint8)
    affine = np.eye(4)
    return Phantom(image, label, affine, {1: "nucleus"}, "microscopy", instances=inst,
                   meta={"generator": "nuclei_2d", "seed": int(seed), "n_instances": int(len(keep))})


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    from medseg.io.atomic import atomic_path

    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)  # scanner anat
    img.set_qform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _write_json(path: Path, obj: Any) -> None:
    from medseg.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_phantom(phantom: Phantom, out: str | os.PathLike[str], format: str = "nifti") -> Path:
    """Write a phantom into folder ``out``; return ``out``.

    ``format="nifti"``: ``image.nii.gz`` (float32) and ``label.nii.gz`` (uint8) with the RAS
    affine as sform and qform (+ ``instances.nii.gz`` for nuclei). ``format="dicom"``: ``image/``,
    a real CT/MR series (one file per slice, via :mod:`medseg.data.dicom_writer`), or
    ``image.dcm`` (DX radiograph) for a 2D X-ray phantom; the label is written as
    ``label.nii.gz`` beside it (exact, on the same grid). Both write ``phantom.json`` (labels,
    modality, generator, seed). All files are written atomically.
    """
    out = Path(out)
    fmt = format.lower()
    if fmt not in ("nifti", "dicom"):
        raise ConfigError(f"format {format!r} is unknown: use 'nifti' or 'dicom'")
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "nifti":
        _save_nifti(phantom.image.astype(np.float32), phantom.affine, out / "image.nii.gz")
    else:
        from medseg.data import dicom_writer

        if phantom.image.ndim == 3:
            vol = phantom.image
            if phantom.modality == "MR":
                vol = np.clip(np.round(vol), 0, 32767)
            dicom_writer.write_dicom_series(vol, phantom.affine, out / "image", modality=phantom.modality,
                                            series_description=f"medseg phantom {phantom.meta.get('generator', '')}",
                                            seed=int(phantom.meta.get("seed", 0)))
        elif phantom.modality in ("DX", "CR"):
            dicom_writer.write_dicom_xray(np.round(phantom.image), phantom.spacing, out / "image.dcm",
                                          modality=phantom.modality,
                                          series_description="medseg phantom chest_xray")
        else:
            raise InputError(f"a {phantom.modality} 2D phantom cannot be written as DICOM: use format='nifti'")
    _save_nifti(phantom.label.astype(np.uint8), phantom.affine, out / "label.nii.gz")
    if phantom.instances is not None:
        _save_nifti(phantom.instances.astype(np.uint16), phantom.affine, out / "instances.nii.gz")
    _write_json(out / "phantom.json", {
        "labels": {str(k): v for k, v in sorted(phantom.labels.items())},
        "modality": phantom.modality, "format": fmt,
        "meta": {k: v for k, v in phantom.meta.items() if isinstance(v, str | int | float | list | dict)},
    })
    return out


def as_metatensors(phantom: Phantom) -> tuple[Any, Any]:
    """The phantom as two MONAI MetaTensors (image float32, label uint8), channel first, RAS affine.

    Meta keys follow :mod:`medseg.io`: space "RAS", kind, format "phantom", modality, spacing.
    """
    import torch
    from monai.data import MetaTensor

    def mt(arr: np.ndarray, kind: str) -> MetaTensor:
        meta = {"space": "RAS", "kind": kind, "format": "phantom", "modality": phantom.modality,
                "spacing": phantom.spacing, "filename_or_obj": f"phantom:{phantom.meta.get('generator', '')}"}
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)[None]),
                          affine=torch.as_tensor(phantom.affine, dtype=torch.float64), meta=meta)

    return mt(phantom.image.astype(np.float32), "image"), mt(phantom.label, "label")


# --------------------------------------------------------------------------------------------
# Medical Segmentation Decathlon / nnU-Net raw datasets
# --------------------------------------------------------------------------------------------

_TASKS: dict[str, tuple[str, str, tuple[int, ...], tuple[float, ...]]] = {
    # task: (generator, MSD modality name, default shape, default spacing mm)
    "abdomen": ("abdomen_ct", "CT", (96, 96, 64), (1.5, 1.5, 2.5)),
    "lung": ("lung_ct", "CT", (96, 96, 64), (1.5, 1.5, 2.5)),
    "spine": ("spine_ct", "CT", (64, 64, 96), (1.25, 1.25, 1.5)),
    "brain": ("brain_mr", "MR", (80, 96, 80), (2.0, 2.0, 2.0)),
    "xray": ("chest_xray", "DX", (256, 256), (1.4, 1.4)),
    "nuclei": ("nuclei_2d", "microscopy", (256, 256), (1.0, 1.0)),
}


def _generate(task: str, shape: Sequence[int] | None, seed: int, orientation: Orientation) -> Phantom:
    gen_name, _, dshape, dspacing = _TASKS[task]
    gen = globals()[gen_name]
    shp = tuple(shape) if shape is not None else dshape
    if len(shp) == 3:
        return gen(shape=shp, spacing=dspacing, orientation=orientation, seed=seed)
    return gen(shape=shp, seed=seed)


def write_decathlon_dataset(root: str | os.PathLike[str], task: str = "abdomen", n_train: int = 4,
                            n_test: int = 2, shape: Sequence[int] | None = None, seed: int = 0, *,
                            layout: str = "msd", orientation: Orientation = "LPS") -> Path:
    """Write a phantom dataset in the Medical Segmentation Decathlon layout; return ``root``.

    ``layout="msd"``: ``dataset.json`` (name, modality {"0": ...}, labels {"0": "background",
    "1": ...}, numTraining, numTest, training [{"image", "label"}], test [...]), ``imagesTr/``,
    ``labelsTr/``, ``imagesTs/`` with ``<task>_NNN.nii.gz``. ``layout="nnunet"``: nnU-Net v2 raw
    naming (images ``<task>_NNN_0000.nii.gz``, labels ``<task>_NNN.nii.gz``) and its
    dataset.json (channel_names, labels {name: value}, numTraining, file_ending). Case ``n``
    uses seed ``seed * 1000 + n``, so datasets are reproducible. Nuclei also get
    ``instancesTr/`` (uint16 instance maps). Every file is written atomically.
    """
    if task not in _TASKS:
        raise ConfigError(f"task {task!r} is unknown: choose one of {', '.join(sorted(_TASKS))}")
    if layout not in ("msd", "nnunet"):
        raise ConfigError(f"layout {layout!r} is unknown: use 'msd' or 'nnunet'")
    if n_train < 1 or n_test < 0:
        raise ConfigError("need n_train >= 1 and n_test >= 0")
    root = Path(root)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    chan = "_0000" if layout == "nnunet" else ""
    training, test = [], []
    labels: dict[int, str] = {}
    modality = _TASKS[task][1]
    from tqdm.auto import tqdm

    total = n_train + n_test
    show = os.environ.get("MEDSEG_PROGRESS", "1") != "0"
    for n in tqdm(range(total), desc=f"phantom {task} dataset", unit="case", disable=not show):
        ph = _generate(task, shape, seed * 1000 + n, orientation)
        labels = ph.labels
        case = f"{task}_{n:03d}"
        if n < n_train:
            _save_nifti(ph.image.astype(np.float32), ph.affine, root / "imagesTr" / f"{case}{chan}.nii.gz")
            _save_nifti(ph.label.astype(np.uint8), ph.affine, root / "labelsTr" / f"{case}.nii.gz")
            entry = {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}
            if ph.instances is not None:
                _save_nifti(ph.instances.astype(np.uint16), ph.affine,
                            root / "instancesTr" / f"{case}.nii.gz")
                entry["instances"] = f"./instancesTr/{case}.nii.gz"
            training.append(entry)
        else:
            _save_nifti(ph.image.astype(np.float32), ph.affine, root / "imagesTs" / f"{case}{chan}.nii.gz")
            test.append(f"./imagesTs/{case}.nii.gz")
    if layout == "msd":
        ds = {
            "name": f"medseg-phantom-{task}",
            "description": f"medseg {_TASKS[task][0]} phantoms (synthetic, exact labels), seed {seed}",
            "reference": "medseg.data.phantoms", "licence": "CC0 (synthetic)", "release": "1.0",
            "tensorImageSize": "3D" if len(ph.image.shape) == 3 else "2D",
            "modality": {"0": modality},
            "labels": {"0": "background", **{str(k): v for k, v in sorted(labels.items())}},
            "numTraining": n_train, "numTest": n_test, "training": training, "test": test,
        }
    else:
        ds = {
            "name": f"medseg-phantom-{task}",
            "channel_names": {"0": modality},
            "labels": {"background": 0, **{v: k for k, v in sorted(labels.items())}},
            "numTraining": n_train, "file_ending": ".nii.gz",
        }
    _write_json(root / "dataset.json", ds)
    return root
