"""Simulated users for interactive segmentation, and the metrics they give.

The protocol is the one of the interactive-segmentation literature (DeepGrow, RITM, f-BRS):

* **first click** at the object's centre: the voxel farthest (in mm) from its boundary;
* **corrective clicks** at the centre of the largest error region: the connected component
  (full connectivity) of ``prediction XOR reference`` with the most voxels, clicked at its voxel
  farthest from the region's boundary; positive when that voxel belongs to the object, negative
  otherwise. Each new prediction gets all clicks so far and the previous mask;
* **jittered** clicks (robustness, as a person clicks): a voxel drawn uniformly among those of
  the region at least half as far from its boundary as its centre;
* **box**: the reference's bounding box, jittered by up to ``jitter`` voxels per side;
  **extreme points**: for each axis the reference voxel with the smallest and the largest index
  (the one nearest the object's centroid among ties), jittered inside the object;
* **NoC@T**: the number of clicks after which Dice first reaches T, ``cap`` (20) when never.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _bbox(mask: np.ndarray, pad: int, shape) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, np.asarray(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _pick(region: np.ndarray, spacing, rng: np.random.Generator | None) -> tuple[int, ...]:
    """Centre of ``region`` (farthest from its boundary), or a jittered voxel near it."""
    from scipy import ndimage

    sl = _bbox(region, 1, region.shape)
    sub = np.pad(region[sl], 1)  # the image border counts as boundary
    dist = ndimage.distance_transform_edt(sub, sampling=spacing)[tuple(slice(1, -1) for _ in sub.shape)]
    if rng is None:
        local = np.unravel_index(int(np.argmax(dist)), dist.shape)
    else:
        cand = np.argwhere(dist >= 0.5 * dist.max())
        local = tuple(cand[rng.integers(len(cand))])
    return tuple(int(s.start + v) for s, v in zip(sl, local, strict=True))


def first_click(ref: np.ndarray, spacing, rng: np.random.Generator | None = None) -> tuple[int, ...]:
    from scipy import ndimage

    cc, n = ndimage.label(ref, structure=np.ones((3,) * ref.ndim))
    largest = cc == (int(np.argmax(np.bincount(cc.ravel())[1:])) + 1) if n > 1 else ref.astype(bool)
    return _pick(largest, spacing, rng)


def corrective_click(pred: np.ndarray, ref: np.ndarray, spacing,
                     rng: np.random.Generator | None = None) -> tuple[tuple[int, ...], int] | None:
    """(voxel, 1 positive / 0 negative) at the largest error region, or None when there is none."""
    from scipy import ndimage

    err = np.asarray(pred, bool) ^ np.asarray(ref, bool)
    if not err.any():
        return None
    sl = _bbox(err, 0, err.shape)
    cc, n = ndimage.label(err[sl], structure=np.ones((3,) * err.ndim))
    biggest = int(np.argmax(np.bincount(cc.ravel())[1:])) + 1
    region = np.zeros(err.shape, dtype=bool)
    region[sl] = cc == biggest
    v = _pick(region, spacing, rng)
    return v, int(bool(ref[v]))


def box_of(ref: np.ndarray, jitter: int = 0, rng: np.random.Generator | None = None) -> list[int]:
    """Voxel box ``[i0, j0(, k0), i1, j1(, k1)]`` of the reference, each side moved by up to ``jitter``."""
    idx = np.argwhere(ref)
    lo, hi = idx.min(0), idx.max(0)
    if jitter and rng is not None:
        lo = lo + rng.integers(-jitter, jitter + 1, size=lo.size)
        hi = hi + rng.integers(-jitter, jitter + 1, size=hi.size)
    shape = np.asarray(ref.shape)
    lo = np.clip(lo, 0, shape - 1)
    hi = np.clip(np.maximum(hi, lo), 0, shape - 1)
    return [int(v) for v in lo] + [int(v) for v in hi]


def extreme_points(ref: np.ndarray, jitter: int = 0, rng: np.random.Generator | None = None) -> list[list[int]]:
    """Two points per axis (smallest and largest index), on the object; jittered inside it."""
    idx = np.argwhere(ref)
    centroid = idx.mean(0)
    out = []
    for ax in range(ref.ndim):
        for ext in (idx[:, ax].min(), idx[:, ax].max()):
            cand = idx[idx[:, ax] == ext]
            p = cand[np.argmin(((cand - centroid) ** 2).sum(1))]
            if jitter and rng is not None:
                near = idx[np.abs(idx - p).max(1) <= jitter]
                p = near[rng.integers(len(near))]
            out.append([int(v) for v in p])
    return out


def noc(dices: Sequence[float], threshold: float, cap: int = 20) -> int:
    """Clicks needed to reach ``threshold`` (Dice after click n is ``dices[n-1]``), ``cap`` if never."""
    for n, d in enumerate(dices[:cap], start=1):
        if d >= threshold:
            return n
    return cap


Segmenter = Callable[..., np.ndarray]


def click_session(segment: Segmenter, ref: np.ndarray, spacing, *, n_clicks: int = 20,
                  rng: np.random.Generator | None = None, stop_at: float | None = None) -> list[float]:
    """Dice after each of ``n_clicks`` simulated clicks. ``segment(points, labels, previous)``
    gets voxel indices and returns a mask on the reference grid. With ``stop_at`` the annotator
    stops once Dice reaches it and that Dice is carried forward to ``n_clicks``."""
    ref = np.asarray(ref, bool)
    points = [first_click(ref, spacing, rng)]
    labels = [1]
    pred = np.asarray(segment(points, labels, None), bool)
    out = [dice(pred, ref)]
    while len(out) < n_clicks:
        if stop_at is not None and out[-1] >= stop_at:
            out.extend([out[-1]] * (n_clicks - len(out)))
            break
        nxt = corrective_click(pred, ref, spacing, rng)
        if nxt is None:
            out.extend([1.0] * (n_clicks - len(out)))
            break
        points.append(nxt[0])
        labels.append(nxt[1])
        pred = np.asarray(segment(points, labels, pred), bool)
        out.append(dice(pred, ref))
    return out
