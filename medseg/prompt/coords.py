"""Prompt coordinates: world millimetres (the default) or voxel indices -> voxel indices.

A click comes from a viewer, so :func:`medseg.prompt.segment` takes coordinates in **world
millimetres** by default:

* ``space="RAS"`` (default): medseg's frame (that of NIfTI and 3D Slicer): +x towards the
  patient's right, +y anterior, +z superior. A 2D image's points are ``(x, y)``.
* ``space="LPS"``: DICOM's frame (ITK-SNAP, most PACS viewers): +x towards the patient's left,
  +y posterior, +z superior. Converted by negating x and y.
* ``voxel=True``: array indices ``(i, j[, k])`` of the channel-first image (``image[0, i, j, k]``),
  no conversion.

World points go through the inverse of the image affine and are rounded to the nearest voxel; a
point more than half a voxel outside the image is refused (:class:`~medseg.errors.PromptError`).
A box is two opposite corners; in world mm its eight corners are mapped and the voxel box is their
bounding box, so flipped and permuted axes give the right voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.errors import PromptError

SPACES = ("RAS", "LPS")


def _as_points(points: Sequence[Sequence[float]] | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise PromptError(f"{what}: each point needs {n} coordinates on this {n}D image; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise PromptError(f"{what}: coordinates must be finite numbers")
    return arr


def world_axes(affine, n: int) -> list[int]:
    """The world axes (0 x, 1 y, 2 z) a point's ``n`` coordinates are given along: all three for
    a 3D image; for a 2D image the two its plane spans (the axis each voxel axis points along most),
    in x, y, z order: ``(x, y)`` for an axial image, ``(x, z)`` for a coronal radiograph (PA/AP),
    ``(y, z)`` for a sagittal one."""
    a = np.asarray(affine, dtype=np.float64)
    if n == 3 or a.shape[0] < 4:
        return list(range(n))
    cols = np.abs(a[:3, :n])
    rows: list[int] = []
    for j in np.argsort(-cols.max(0)):  # the most decided column first
        order = [int(r) for r in np.argsort(-cols[:, j]) if int(r) not in rows]
        rows.append(order[0])
    return sorted(rows)


def world_to_continuous(points: np.ndarray, affine: np.ndarray, n: int, space: str = "RAS") -> np.ndarray:
    """World mm (``space`` frame) -> continuous voxel indices (no rounding)."""
    sp = str(space).upper()
    if sp not in SPACES:
        raise PromptError(f"unknown coordinate space {space!r}; use RAS or LPS")
    pts = np.array(points, dtype=np.float64)
    rows = world_axes(affine, n)
    if sp == "LPS":
        pts[:, [i for i, r in enumerate(rows) if r < 2]] *= -1
    a = np.asarray(affine, dtype=np.float64)
    lin, off = a[np.ix_(rows, range(n))], a[rows, 3]
    try:
        inv = np.linalg.inv(lin)
    except np.linalg.LinAlgError:
        raise PromptError("the image affine is singular; world coordinates cannot be mapped") from None
    return (pts - off) @ inv.T


def points_to_voxels(points, affine, shape: Sequence[int], *, space: str = "RAS", voxel: bool = False,
                     what: str = "point") -> list[tuple[int, ...]]:
    """Points (world mm or voxel indices) -> integer voxel indices inside ``shape``."""
    n = len(shape)
    arr = _as_points(points, n, what)
    idx = arr if voxel else world_to_continuous(arr, affine, n, space)
    out = []
    for p in idx:
        if np.any(p < -0.5) or np.any(p > np.asarray(shape) - 0.5):
            where = "voxel index" if voxel else f"{space.upper()} mm"
            raise PromptError(f"{what} {tuple(round(float(v), 2) for v in (arr[len(out)]))} ({where}) lies outside "
                              f"the image (shape {tuple(int(s) for s in shape)})")
        out.append(tuple(int(v) for v in np.clip(np.rint(p), 0, np.asarray(shape) - 1)))
    return out


def box_to_voxels(box, affine, shape: Sequence[int], *, space: str = "RAS",
                  voxel: bool = False) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A box ``(x0, y0[, z0], x1, y1[, z1])`` -> inclusive voxel bounds ``(lo, hi)``, clipped to the image."""
    n = len(shape)
    flat = np.asarray(box, dtype=np.float64).ravel()
    if flat.size != 2 * n or not np.isfinite(flat).all():
        raise PromptError(f"a box needs {2 * n} finite numbers on this {n}D image (two opposite corners)")
    c0, c1 = flat[:n], flat[n:]
    corners = np.array([[(c1 if (b >> d) & 1 else c0)[d] for d in range(n)] for b in range(2 ** n)])
    idx = corners if voxel else world_to_continuous(corners, affine, n, space)
    lo = np.floor(idx.min(0) + 0.5).astype(int)
    hi = np.ceil(idx.max(0) - 0.5).astype(int)
    shp = np.asarray(shape)
    if np.any(hi < 0) or np.any(lo > shp - 1):
        raise PromptError("the box lies outside the image")
    lo, hi = np.clip(lo, 0, shp - 1), np.clip(hi, 0, shp - 1)
    if np.any(hi < lo):
        raise PromptError("the box has no extent on this image")
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def voxel_to_world(index: Sequence[float], affine, *, space: str = "RAS") -> tuple[float, ...]:
    """Voxel index -> world mm (for click simulators and tests)."""
    n = len(index)
    a = np.asarray(affine, dtype=np.float64)
    rows = world_axes(a, n)
    p = a[np.ix_(rows, range(n))] @ np.asarray(index, dtype=np.float64) + a[rows, 3]
    if str(space).upper() == "LPS":
        p[[i for i, r in enumerate(rows) if r < 2]] *= -1
    return tuple(float(v) for v in p)
