"""Shared pieces of the phantom generators: tissue values, world grids, shapes, noise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError

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
        from medseg.geometry import spacing_of

        return spacing_of(self.affine, self.image.ndim)


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




def thick_slices(ph: Phantom, k: int, axis: int = 2) -> Phantom:
    """The phantom as a 2D acquisition would see it: every ``k`` consecutive slices along voxel
    ``axis`` averaged into one thick slice (the slice profile's partial volume), so the slice
    spacing grows ``k`` times. The world position of each thick slice is the centre of its ``k``
    thin ones (the affine says so); the label of a thick voxel is the label covering most of it.
    Trailing slices that do not fill a slab are dropped.
    """
    if k < 1 or axis not in range(ph.image.ndim) or ph.image.shape[axis] < k:
        raise ConfigError(f"cannot average {k} slices along axis {axis} of a {ph.image.shape} grid")
    n = ph.image.shape[axis] // k

    def slabs(a: np.ndarray) -> np.ndarray:
        a = np.moveaxis(a, axis, 0)[: n * k]
        return a.reshape(n, k, *a.shape[1:])

    image = np.moveaxis(slabs(ph.image.astype(np.float32)).mean(axis=1), 0, axis)
    lab = slabs(ph.label)
    values = np.unique(lab)
    share = np.stack([(lab == v).mean(axis=1) for v in values])
    label = np.moveaxis(values[np.argmax(share, axis=0)].astype(ph.label.dtype), 0, axis)
    affine = ph.affine.copy()
    affine[:3, 3] += affine[:3, axis] * (k - 1) / 2.0
    affine[:3, axis] *= k
    return replace(ph, image=np.round(image).astype(ph.image.dtype), label=label, affine=affine,
                   meta={**ph.meta, "thick_slices": {"k": int(k), "axis": int(axis)}})
