"""Moving voxels between grids, in world coordinates (RAS mm), with numpy and scipy only.

* :func:`reorient`: the same voxels in another axis order / direction (``"RAS"``, ``"LPS"``,
  ``"PIR"`` ...): transposes and flips, never interpolates; every voxel keeps its world position.
* :func:`resample`: values on another grid (``target_affine``, ``target_shape``): label maps by
  nearest neighbour only (a label is never averaged into a value that names another structure),
  images linearly by default. Points outside the source get 0 (labels) or the source's minimum
  (images: air for CT).
* :func:`grid_for_spacing`: the grid with another spacing over the same field of view and
  orientation (what ``medseg resample --spacing`` resamples onto).

Arrays are ``(i, j[, k])`` or channel first ``(C, i, j[, k])``; affines map voxel indices to RAS
mm (the :mod:`medseg.io` contract).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.errors import ConfigError, GeometryError
from medseg.geometry import spacing_of

__all__ = ["grid_for_spacing", "orientation_codes", "reorient", "resample"]

_AXES = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def _check_affine(affine: np.ndarray, what: str) -> np.ndarray:
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise GeometryError(f"{what} affine must be a finite, invertible 4x4 matrix")
    return aff


def _channels(array: np.ndarray, ndim: int | None = None) -> tuple[np.ndarray, bool]:
    """(C, spatial...) view and whether a channel axis was added."""
    arr = np.asarray(array)
    spatial = ndim if ndim is not None else (arr.ndim - 1 if arr.ndim == 4 else arr.ndim)
    if arr.ndim == spatial:
        return arr[None], True
    if arr.ndim == spatial + 1:
        return arr, False
    raise GeometryError(f"array of shape {arr.shape} is not (i, j[, k]) or channel first (C, i, j[, k])")


def orientation_codes(target: str) -> str:
    """``target`` checked: three letters, one from each of R/L, A/P, S/I (e.g. ``"LPS"``)."""
    code = str(target).strip().upper()
    if len(code) != 3 or sorted(_AXES[c][0] for c in code if c in _AXES) != [0, 1, 2]:
        raise ConfigError(f"orientation {target!r} is not three axis codes, one of R/L, A/P and S/I each "
                          "(e.g. RAS, LPS, PIR)")
    return code


def reorient(array: np.ndarray, affine: np.ndarray, target: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """``array`` transposed and flipped so that its axes point along ``target`` (e.g. ``"LPS"``:
    i towards the patient's left, j posterior, k superior), with the affine that keeps every voxel
    at its world position. Exact: no interpolation. An oblique grid gets the axis codes each of its
    axes is closest to (the world directions are kept, not rotated)."""
    import nibabel.orientations as nio

    aff = _check_affine(affine, "the input")
    code = orientation_codes(target)
    arr, added = _channels(array, 3)
    spatial = arr.shape[1:]
    current = nio.io_orientation(aff)
    transform = nio.ornt_transform(current, nio.axcodes2ornt(tuple(code)))
    out = np.stack([nio.apply_orientation(c, transform) for c in arr])
    new_aff = aff @ nio.inv_ornt_aff(transform, spatial)
    out = np.ascontiguousarray(out[0] if added else out)
    return out, new_aff


def grid_for_spacing(affine: np.ndarray, shape: Sequence[int], spacing: Sequence[float]
                     ) -> tuple[np.ndarray, tuple[int, ...]]:
    """(affine, shape) of the grid with ``spacing`` (mm per axis) covering the same field of view
    in the same directions: the outer faces of the first and last voxels stay where they are, up
    to rounding the voxel count."""
    aff = _check_affine(affine, "the input")
    nd = len(shape)
    sp_new = np.asarray([float(s) for s in spacing], dtype=np.float64)
    if len(sp_new) != nd or not np.all(np.isfinite(sp_new)) or np.any(sp_new <= 0):
        raise ConfigError(f"--spacing needs {nd} positive sizes in mm, got {list(spacing)}")
    cols = aff[:3, :nd]
    sp_old = np.asarray(spacing_of(aff, nd))
    extent = sp_old * np.asarray(shape, dtype=np.float64)
    new_shape = tuple(int(max(1, round(e / s))) for e, s in zip(extent, sp_new, strict=True))
    units = cols / sp_old
    new = aff.copy()
    new[:3, :nd] = units * sp_new
    # the first voxel's outer face stays put: its centre moves by half the change of spacing
    new[:3, 3] = aff[:3, 3] + units @ ((sp_new - sp_old) / 2.0)
    return new, new_shape


def resample(array: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: Sequence[int], *,
             label: bool, order: int | None = None) -> np.ndarray:
    """Values of ``array`` (on ``affine``'s grid) at the voxel centres of the target grid.

    ``label=True``: nearest neighbour (``order`` other than 0 is refused: ConfigError), dtype
    kept, 0 outside. ``label=False``: ``order`` 1 (linear) by default, float32, the source's
    minimum outside. Works for any pair of affines (oblique, flipped, sheared).
    """
    from scipy import ndimage

    src = _check_affine(affine, "the input")
    dst = _check_affine(target_affine, "the target")
    if label:
        if order not in (None, 0):
            raise ConfigError("label maps are resampled with nearest neighbour only (interpolating labels "
                              "invents structures); drop the interpolation option or use --kind image")
        order = 0
    elif order is None:
        order = 1
    if order not in (0, 1, 3):
        raise ConfigError(f"interpolation order {order} is not one of 0 (nearest), 1 (linear), 3 (cubic)")
    nd = len(target_shape)
    arr, added = _channels(array, nd)
    if arr.shape[0] == 0 or any(s < 1 for s in target_shape):
        raise GeometryError("nothing to resample: an empty array or target grid")
    full_src, full_dst = np.eye(nd + 1), np.eye(nd + 1)
    full_src[:nd, :nd], full_src[:nd, nd] = src[:nd, :nd], src[:nd, 3]
    full_dst[:nd, :nd], full_dst[:nd, nd] = dst[:nd, :nd], dst[:nd, 3]
    if nd == 2 and (np.any(src[2, :2]) or np.any(dst[2, :2])):
        raise GeometryError("2D grids must lie in one plane to be resampled onto each other")
    m = np.linalg.solve(full_src, full_dst)  # target index -> source index
    cval = 0 if label else float(np.min(arr)) if arr.size else 0.0
    shape = tuple(int(s) for s in target_shape)
    # scipy counts a point past the last voxel CENTRE as outside; a voxel reaches half a voxel
    # further (ITK's rule, too). So the array is padded by one voxel (shifting indices by 1): labels
    # with 0, so rounding to the pad gives 0; images with their edge values, then every point
    # outside [-0.5, n - 0.5] on any axis is set to cval through a resampled inside-mask.
    offset = m[:nd, nd] + 1.0

    def warp(c: np.ndarray, how: int, fill: float, dtype: np.dtype) -> np.ndarray:
        return ndimage.affine_transform(c, m[:nd, :nd], offset=offset, output_shape=shape, order=how,
                                        mode="constant", cval=fill, prefilter=how > 1, output=dtype)

    if label:
        out = np.stack([warp(np.pad(c, 1), 0, 0, arr.dtype) for c in arr])
    else:
        inside = warp(np.pad(np.ones(arr.shape[1:], np.uint8), 1), 0, 0, np.uint8).astype(bool)
        out = np.stack([warp(np.pad(c.astype(np.float32, copy=False), 1, mode="edge"), order, cval, np.float32)
                        for c in arr])
        out[:, ~inside] = cval
    return out[0] if added else out
