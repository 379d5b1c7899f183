"""``medseg.prompt.segment``: one object from clicks, a box, extreme points, scribbles and/or a
previous mask, on 2D or 3D images. Coordinates are world millimetres (RAS) by default, see
:mod:`medseg.prompt.coords`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import PromptError
from medseg.prompt.coords import box_to_voxels, points_to_voxels
from medseg.prompt.methods import Prompts, get_method

BOX_MARGIN_MM = 10.0
POINT_MARGIN_MM = 60.0


def _image_array(image: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    from monai.data import MetaTensor

    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        from medseg.io.read import load

        image = load(image)
    if not isinstance(image, MetaTensor):
        raise PromptError("segment() needs a MetaTensor with an affine (medseg.io.load) or a file path")
    if image.shape[0] != 1:
        raise PromptError(f"prompted segmentation takes one channel; this image has {image.shape[0]}")
    if image.ndim - 1 not in (2, 3):
        raise PromptError(f"prompted segmentation needs a 2D or 3D image; got shape {tuple(image.shape)}")
    arr = np.asarray(image.detach().cpu().numpy()[0], dtype=np.float32)
    return arr, np.asarray(image.affine, dtype=np.float64), image


def _grid_mask(mask: Any, image: Any, shape: Sequence[int], what: str) -> np.ndarray:
    arr = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
    if arr.ndim == len(shape) + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if tuple(arr.shape) != tuple(shape):
        raise PromptError(f"{what} of shape {tuple(arr.shape)} is not on the image grid {tuple(shape)}")
    own = getattr(mask, "affine", None)
    if own is not None and not np.allclose(np.asarray(own, dtype=np.float64), np.asarray(image.affine), atol=1e-4):
        raise PromptError(f"{what} has another affine than the image; resample it onto the image grid first")
    return arr


def build_prompts(arr: np.ndarray, affine: np.ndarray, image: Any, *, points=None, labels=None, box=None,
                  extreme_points=None, scribbles=None, previous=None, voxel: bool = False,
                  space: str = "RAS") -> Prompts:
    """All prompts as voxel indices on ``arr``'s grid (see :func:`segment` for the arguments)."""
    shape = arr.shape
    pos: list[tuple[int, ...]] = []
    neg: list[tuple[int, ...]] = []
    if points is not None and len(points):
        vox = points_to_voxels(points, affine, shape, space=space, voxel=voxel, what="point")
        labs = [1] * len(vox) if labels is None else [int(v) for v in np.asarray(labels).ravel()]
        if len(labs) != len(vox):
            raise PromptError(f"{len(vox)} point(s) but {len(labs)} label(s); give one label (1/0) per point")
        if any(v not in (0, 1) for v in labs):
            raise PromptError("point labels are 1 (object) or 0 (background)")
        pos = [v for v, lab in zip(vox, labs, strict=True) if lab == 1]
        neg = [v for v, lab in zip(vox, labs, strict=True) if lab == 0]
    vbox = box_to_voxels(box, affine, shape, space=space, voxel=voxel) if box is not None else None
    extreme: list[tuple[int, ...]] = []
    if extreme_points is not None and len(extreme_points):
        extreme = points_to_voxels(extreme_points, affine, shape, space=space, voxel=voxel, what="extreme point")
        if len(extreme) < 2:
            raise PromptError("give at least two extreme points (DEXTR uses 2 per axis)")
        if vbox is None:
            e = np.asarray(extreme)
            vbox = (tuple(int(v) for v in e.min(0)), tuple(int(v) for v in e.max(0)))
    scr = None
    if scribbles is not None:
        scr = _grid_mask(scribbles, image, shape, "scribbles").astype(np.uint8)
        if not set(np.unique(scr).tolist()) <= {0, 1, 2}:
            raise PromptError("scribbles hold 0 (unmarked), 1 (object) and 2 (background) only")
    prev = _grid_mask(previous, image, shape, "previous mask") > 0 if previous is not None else None
    p = Prompts(pos, neg, vbox, extreme, scr, prev)
    if not (pos or extreme or vbox is not None or (scr is not None and (scr == 1).any())
            or (prev is not None and prev.any())):
        raise PromptError("no prompt: give a positive point, a box, extreme points, object scribbles or a previous mask")
    return p


def roi_of(p: Prompts, shape: Sequence[int], spacing: Sequence[float], margin_mm: float | None = None):
    """Inclusive voxel bounds of the region a method works on."""
    pts = list(p.positive) + list(p.negative) + list(p.extreme)
    boxes = []
    if p.box is not None:
        boxes.append(p.box)
    for m in (p.previous, None if p.scribbles is None else p.scribbles > 0):
        if m is not None and m.any():
            idx = np.argwhere(m)
            boxes.append((tuple(idx.min(0)), tuple(idx.max(0))))
    if p.box is not None:
        lo, hi = np.asarray(p.box[0]), np.asarray(p.box[1])
        margin = BOX_MARGIN_MM if margin_mm is None else margin_mm
        for q in pts:  # clicks outside the box widen it
            lo, hi = np.minimum(lo, q), np.maximum(hi, q)
    else:
        allp = pts + [b[0] for b in boxes] + [b[1] for b in boxes]
        arr = np.asarray(allp)
        lo, hi = arr.min(0), arr.max(0)
        margin = (POINT_MARGIN_MM if p.previous is None else BOX_MARGIN_MM) if margin_mm is None else margin_mm
    pad = np.maximum(3, np.ceil(margin / np.asarray(spacing, dtype=np.float64))).astype(int)
    lo = np.maximum(0, lo - pad)
    hi = np.minimum(np.asarray(shape) - 1, hi + pad)
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def _bounds(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Inclusive voxel bounds of a mask (zeros when empty), from per-axis projections."""
    lo, hi = [], []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        lo.append(int(hit[0]) if hit.size else 0)
        hi.append(int(hit[-1]) if hit.size else 0)
    return tuple(lo), tuple(hi)


def default_method(ndim: int = 3) -> str:
    """``promptable`` (the trained network) when the ``promptable_3d`` (3D) / ``promptable_2d``
    (2D) bundle is present AND met its shipping rule (its metadata says ``default: true``), else
    ``auto`` (classical). promptable_3d 0.1.0 did not meet the rule: ``auto`` stays its default."""
    from medseg.prompt import network

    return "promptable" if ndim in network.BUNDLES and network.default_enabled(ndim) else "auto"


def segment(image: Any, points: Sequence[Sequence[float]] | None = None, labels: Sequence[int] | None = None,
            box: Sequence[float] | None = None, extreme_points: Sequence[Sequence[float]] | None = None,
            scribbles: Any = None, previous: Any = None, *, method: str | None = None, voxel: bool = False,
            space: str = "RAS", margin_mm: float | None = None, model: str | Path | None = None):
    """Segment one object from prompts; returns a uint8 MetaTensor ``(1, *spatial)`` (1 = object)
    on exactly the image's grid.

    Args:
        image: channel-first MetaTensor (:func:`medseg.io.load`) or a path.
        points: clicks, each ``(x, y[, z])`` in world mm (RAS unless ``space="LPS"``), or voxel
            indices ``(i, j[, k])`` with ``voxel=True``.
        labels: one per point, 1 = object (positive), 0 = background (negative); default all 1.
        box: two opposite corners ``(x0, y0[, z0], x1, y1[, z1])`` in the same units.
        extreme_points: the object's extreme points (DEXTR: left/right/front/back/top/bottom);
            they give the box when none is given and seed the object.
        scribbles: array on the image grid: 1 object, 2 background, 0 unmarked.
        previous: a mask on the image grid to refine with the new clicks.
        method: a registered method (:func:`medseg.prompt.methods.method_names`): ``promptable``
            (the trained network of the ``promptable_3d`` bundle, :mod:`medseg.prompt.network`),
            ``auto`` (classical: GrabCut-like for a box, region growing for clicks),
            ``region-growing``, ``random-walker``, ``grabcut``, or one registered later.
            ``None`` (default): :func:`default_method` for this image.
        margin_mm: context around the prompts the method sees (default 10 mm around a box,
            60 mm around clicks alone).
        model: a promptable bundle (a folder, or ``promptable_3d`` / ``promptable_2d``) for the
            ``promptable`` method; giving one makes ``promptable`` the method when none is named
            (:func:`medseg.prompt.network.resolve_bundle`; anything else is a ``BundleError``).
    ``meta["prompt"]`` records the method, the voxel prompts, the region worked on and the time.
    """
    import torch
    from monai.data import MetaTensor

    from medseg.classical._sitk import spacing_of

    t0 = time.perf_counter()
    arr, affine, image = _image_array(image)
    spacing = spacing_of(affine, arr.ndim)
    p = build_prompts(arr, affine, image, points=points, labels=labels, box=box, extreme_points=extreme_points,
                      scribbles=scribbles, previous=previous, voxel=voxel, space=space)
    if model is not None and method not in (None, "promptable"):
        raise PromptError(f"model= is a promptable network; method '{method}' does not take one")
    method = ("promptable" if model is not None else default_method(arr.ndim)) if method is None else method
    fn = get_method(method)
    if getattr(fn, "whole_image", False):  # the method picks its own region (the network's crop)
        out = np.asarray(fn(arr, spacing, p, model=model), dtype=np.uint8)
        lo, hi = _bounds(out)
    else:
        lo, hi = roi_of(p, arr.shape, spacing, margin_mm)
        sl = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
        crop_mask = np.asarray(fn(arr[sl], spacing, p.crop(lo, hi)), dtype=bool)
        out = np.zeros(arr.shape, dtype=np.uint8)
        if p.previous is not None:  # outside the region worked on, the previous mask stands
            out[p.previous] = 1
            out[sl] = 0
        out[sl] = crop_mask
    meta = {"space": "RAS", "kind": "label", "labels": {1: "object"},
            "prompt": {"method": method, "coordinates": "voxel" if voxel else f"world mm ({space.upper()})",
                       "positive_voxels": [list(v) for v in p.positive],
                       "negative_voxels": [list(v) for v in p.negative],
                       "box_voxels": None if p.box is None else [list(p.box[0]), list(p.box[1])],
                       "extreme_voxels": [list(v) for v in p.extreme],
                       "roi_voxels": [list(lo), list(hi)], "seconds": time.perf_counter() - t0}}
    res = MetaTensor(torch.from_numpy(out)[None], affine=torch.as_tensor(affine).clone(), meta=meta)
    res.applied_operations = []
    return res
