"""Input handling shared by the metric functions: arrays, spacing, grids, label boxes."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import EvaluationError, GeometryError
from medseg.geometry import affine_of, spacing_of

#: Largest distance (mm) between two grids' voxel centres still counted as "the same grid".
GRID_TOLERANCE_MM = 1e-3


def _affine_of(x: Any) -> np.ndarray | None:
    """The 4x4 affine of ``x`` (:func:`medseg.geometry.affine_of`), or None when it has none."""
    try:
        return affine_of(x)
    except GeometryError:
        return None


def as_label_array(x: Any, name: str = "input") -> np.ndarray:
    """Return ``x`` (numpy, torch or channel-first MetaTensor) as a spatial numpy array.

    Plain arrays are spatial ``(i, j)`` or ``(i, j, k)``; a leading channel of size 1
    (``(1, i, j, k)``, as every medseg reader returns) is dropped.
    """
    is_meta = hasattr(x, "affine")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim in (3, 4) and arr.shape[0] == 1 and (is_meta or arr.ndim == 4):
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise EvaluationError(
            f"{name} has shape {tuple(arr.shape)}: expected a 2D or 3D label map (one channel)"
        )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise EvaluationError(f"{name} holds non-integer values: pass a label map, not probabilities")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "biu":
        raise EvaluationError(f"{name} has dtype {arr.dtype}: expected an integer or boolean label map")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise EvaluationError(f"{name} holds negative labels: label values must be >= 0")
    return arr


def spacing_from_affine(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    """Voxel size in mm per spatial axis: the norms of the affine's first ``ndim`` columns
    (:func:`medseg.geometry.spacing_of`)."""
    return spacing_of(affine, ndim)


def check_orthogonal(affine: np.ndarray, ndim: int, name: str = "input") -> None:
    """Refuse sheared grids (e.g. gantry tilt): Euclidean distances need orthogonal voxel axes."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :ndim]
    unit = cols / np.linalg.norm(cols, axis=0)
    off = unit.T @ unit - np.eye(ndim)
    if np.max(np.abs(off)) > 1e-4:
        raise EvaluationError(
            f"{name} has a sheared voxel grid (non-orthogonal axes): resample it to an orthogonal grid first"
        )


def resolve_spacing(pred: Any, ref: Any, spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Spacing in mm per axis: the argument, else the MetaTensors' affines. Never unit spacing."""
    if spacing is None:
        aff = _affine_of(ref)
        if aff is None:
            aff = _affine_of(pred)
        if aff is None:
            raise EvaluationError(
                "spacing is missing: pass spacing=(mm per axis) for plain arrays, or MetaTensors with an affine"
            )
        check_orthogonal(aff, ndim)
        spacing = spacing_from_affine(aff, ndim)
    if isinstance(spacing, (int, float)):
        raise EvaluationError("spacing must give one value in mm per spatial axis, not a single number")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise EvaluationError(f"spacing has {len(sp)} values for a {ndim}D label map: give one per axis")
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise EvaluationError(f"spacing {sp} is invalid: every value must be a finite, positive mm size")
    return sp


def _corner_gap(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where two affines put the corner voxels of ``shape``."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(len(shape), -1)
    homog = np.zeros((4, corners.shape[1]))
    homog[: len(shape)] = corners
    homog[3] = 1.0
    return float(np.abs(a @ homog - b @ homog)[:3].max())


def axis_reorientation(a_src: np.ndarray, shape_src: tuple[int, ...], a_dst: np.ndarray,
                       shape_dst: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[bool, ...]] | None:
    """How to put an array on grid ``(a_src, shape_src)`` onto grid ``(a_dst, shape_dst)`` exactly,
    when the two are the same voxels in another axis order and direction (dcm2niix's LAS against
    medseg's LPS of one series): ``(perm, flips)`` for ``np.flip(np.transpose(src, perm), flipped
    axes)``, or None when no permutation and flips of the axes map every voxel centre onto one of
    the other grid within :data:`GRID_TOLERANCE_MM`. Nothing is interpolated."""
    nd = len(shape_dst)
    if len(shape_src) != nd or sorted(shape_src) != sorted(shape_dst):
        return None
    cols_s, cols_d = a_src[:3, :nd], a_dst[:3, :nd]
    perm, flips = [], []
    for d in range(nd):
        found = None
        for s_ax in range(nd):
            if s_ax in perm or shape_src[s_ax] != shape_dst[d]:
                continue
            for sign in (1.0, -1.0):
                if np.abs(sign * cols_s[:, s_ax] - cols_d[:, d]).max() * max(shape_dst[d] - 1, 1) <= GRID_TOLERANCE_MM:
                    found = (s_ax, sign < 0)
                    break
            if found:
                break
        if found is None:
            return None
        perm.append(found[0])
        flips.append(found[1])
    # the reoriented grid's affine: column d is +-column perm[d]; its origin is the source voxel at
    # index 0 (or n-1 on a flipped axis) of every axis
    a_new = np.eye(4)
    origin_index = np.zeros(4)
    origin_index[3] = 1.0
    for d, (s_ax, flip) in enumerate(zip(perm, flips, strict=True)):
        a_new[:3, d] = -cols_s[:, s_ax] if flip else cols_s[:, s_ax]
        origin_index[s_ax] = shape_src[s_ax] - 1 if flip else 0
    a_new[:3, 3] = (a_src @ origin_index)[:3]
    if _corner_gap(a_new, a_dst, tuple(shape_dst)) > GRID_TOLERANCE_MM:
        return None
    return tuple(perm), tuple(flips)


def align_to_reference(pred: Any, ref: Any, p: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, str]:
    """The prediction array on the reference grid, and what was done to it ("" when nothing).

    Same grid (shape, affine within 1e-3 mm at the corners): ``p`` as it is. The same grid in
    another axis order or direction: ``p`` transposed and flipped onto the reference grid, exactly
    (no interpolation), with a note saying how. Anything else raises EvaluationError: medseg never
    resamples silently.
    """
    a_p, a_r = _affine_of(pred), _affine_of(ref)
    if p.shape == r.shape and (a_p is None or a_r is None or _corner_gap(a_p, a_r, p.shape) <= GRID_TOLERANCE_MM):
        return p, ""
    if a_p is not None and a_r is not None:
        how = axis_reorientation(a_p, p.shape, a_r, r.shape)
        if how is not None:
            perm, flips = how
            out = np.transpose(p, perm)
            flipped = tuple(d for d, f in enumerate(flips) if f)
            if flipped:
                out = np.flip(out, flipped)
            return np.ascontiguousarray(out), (f"prediction reoriented exactly onto the reference grid (axes "
                                               f"{list(perm)}, flipped {list(flipped)}; no interpolation)")
    if p.shape != r.shape:
        raise EvaluationError(
            f"prediction grid {p.shape} differs from reference grid {r.shape}: resample the prediction "
            "to the reference grid first (medseg never resamples silently)"
        )
    diff = _corner_gap(a_p, a_r, p.shape)
    raise EvaluationError(
        f"prediction and reference affines differ by {diff:.4g} mm at the grid corners (tolerance "
        f"{GRID_TOLERANCE_MM} mm): resample the prediction to the reference grid first"
    )


def check_same_grid(pred: Any, ref: Any, p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``p`` on the reference grid (see :func:`align_to_reference`); a reorientation is announced
    with a warning. EvaluationError for grids that differ otherwise."""
    aligned, note = align_to_reference(pred, ref, p, r)
    if note:
        warnings.warn(note, stacklevel=3)
    return aligned


def label_boxes(arr: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Bounding box (tuple of slices) of every non-zero label value, from one pass over ``arr``."""
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    if arr.size == 0:
        return {}
    top = int(arr.max())
    if top == 0:
        return {}
    if top <= 1_000_000:
        objs = ndimage.find_objects(arr)
        return {i + 1: s for i, s in enumerate(objs) if s is not None}
    # sparse huge ids: fall back to one box per present value
    out = {}
    for v in np.unique(arr):
        if v == 0:
            continue
        idx = np.nonzero(arr == v)
        out[int(v)] = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    return out


def union_box(
    a: tuple[slice, ...] | None, b: tuple[slice, ...] | None, shape: tuple[int, ...], margin: int = 1
) -> tuple[slice, ...] | None:
    """Union of two boxes grown by ``margin`` voxels, clipped to ``shape``."""
    boxes = [x for x in (a, b) if x is not None]
    if not boxes:
        return None
    out = []
    for ax, n in enumerate(shape):
        lo = min(bx[ax].start for bx in boxes) - margin
        hi = max(bx[ax].stop for bx in boxes) + margin
        out.append(slice(max(lo, 0), min(hi, n)))
    return tuple(out)
