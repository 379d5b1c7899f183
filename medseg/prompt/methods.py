"""Interactive segmentation methods behind :func:`medseg.prompt.segment` (no weights needed).

Each method takes the image crop (float32, spatial axes only), its voxel spacing in mm and the
prompts in crop voxel indices (:class:`Prompts`), and returns a boolean mask of the crop. The
registry (:func:`register`) is how a trained promptable network joins later: register a function
of the same signature under its name and ``segment(..., method=NAME)`` calls it.

* ``region-growing``: SimpleITK ``ConfidenceConnected`` from the positive clicks (and extreme
  points), limited to the box when one is given; what grows from the negative clicks with the same
  rule is removed; a previous mask is kept and extended. Closing + hole filling (SimpleITK).
* ``random-walker``: scikit-image ``random_walker`` (Grady 2006) with seeds: positive clicks,
  extreme points and foreground scribbles for the object; negative clicks, background scribbles,
  everything outside the box (or the crop's border when there is no box) for the background;
  a previous mask adds its interior (away from new negative clicks) and exterior (away from new
  positive clicks) as seeds, so only the band around its boundary and around the clicks moves.
  Without any object seed the centre of the box is one. Larger crops are solved
  on a grid coarsened by block averaging to at most 250,000 voxels and the probabilities interpolated back.
* ``grabcut``: GrabCut-like (Rother et al. 2004) for a box: Gaussian mixtures (scikit-learn, 3
  components) for the object (inside the box) and the background (a ring outside it), then seeds
  where the likelihood ratio is clear, solved by the random walker in place of GrabCut's min-cut
  (no GPL max-flow library), refitting the mixtures on the result twice.
* ``promptable``: the trained class-agnostic network of the ``promptable_3d`` bundle (3D images;
  :mod:`medseg.prompt.network`); it gets the whole image and crops around the prompts itself.
  The default of :func:`medseg.prompt.segment` when the bundle is present.
* ``auto``: ``grabcut`` when there is a box (or extreme points) or a previous mask with clicks,
  else ``region-growing``.

All methods keep the connected components that hold a positive seed (or, without one, the
largest component inside the box) and fill holes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medseg.classical._sitk import from_sitk, to_sitk
from medseg.errors import PromptError
from medseg.prompt.prompts import Prompts
from medseg.prompt.prompts import finish as _finish

MAX_RW_VOXELS = 250_000


Method = Callable[[np.ndarray, tuple[float, ...], Prompts], np.ndarray]
_REGISTRY: dict[str, Method] = {}


def register(name: str, fn: Method | None = None):
    """Register ``fn(image_crop, spacing, prompts) -> bool mask`` as method ``name`` (decorator too)."""
    def deco(f: Method) -> Method:
        _REGISTRY[str(name)] = f
        return f
    return deco(fn) if fn is not None else deco


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise PromptError(f"unknown prompt method {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def method_names() -> list[str]:
    return sorted(_REGISTRY)


# ---------------------------------------------------------------- helpers


def _balls(shape, points, radius: int = 1) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for p in points:
        sl = tuple(slice(max(0, v - radius), min(n, v + radius + 1)) for v, n in zip(p, shape, strict=True))
        out[sl] = True
    return out


def _box_mask(shape, box) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    if box is None:
        return out
    out[tuple(slice(a, b + 1) for a, b in zip(box[0], box[1], strict=True))] = True
    return out


def _normalise(arr: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(arr, [1, 99])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((arr - lo) / (hi - lo), 0, 1).astype(np.float32)


def _distance_from(points, shape, spacing) -> np.ndarray:
    from scipy import ndimage

    if not points:
        return np.full(shape, np.inf)
    seeds = np.ones(shape, dtype=bool)
    for p in points:
        seeds[p] = False
    return ndimage.distance_transform_edt(seeds, sampling=spacing)


def _erode(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.distance_transform_edt(mask, sampling=spacing) > mm


def random_walk(data: np.ndarray, fg: np.ndarray, bg: np.ndarray, spacing, *, beta: float = 130.0,
                max_voxels: int = MAX_RW_VOXELS) -> np.ndarray:
    """scikit-image's random walker: probability of the object, on a coarsened grid when large."""
    from scipy import ndimage
    from skimage.segmentation import random_walker

    fg = fg & ~bg
    if not fg.any():
        return np.zeros(data.shape, dtype=np.float32)
    if not bg.any():
        return np.ones(data.shape, dtype=np.float32)
    factor = 1
    while data.size / factor ** data.ndim > max_voxels:
        factor += 1
    if factor > 1:
        from skimage.measure import block_reduce

        small = block_reduce(data, (factor,) * data.ndim, np.mean)
        fg_s = block_reduce(fg, (factor,) * data.ndim, np.max)
        bg_s = block_reduce(bg, (factor,) * data.ndim, np.max)
        sp = tuple(float(s) * factor for s in spacing)
    else:
        small, fg_s, bg_s, sp = data, fg, bg, tuple(float(s) for s in spacing)
    markers = np.zeros(small.shape, dtype=np.int32)
    markers[bg_s] = 2
    markers[fg_s & ~bg_s] = 1
    if not (markers == 1).any():
        markers[fg_s] = 1
    prob = random_walker(small, markers, beta=beta, mode="cg_j", tol=1e-3, spacing=np.asarray(sp),
                         return_full_prob=True)[0].astype(np.float32)
    if factor > 1:
        zoom = [a / b for a, b in zip(data.shape, prob.shape, strict=True)]
        prob = ndimage.zoom(prob, zoom, order=1, mode="nearest")
        prob = prob[tuple(slice(0, s) for s in data.shape)]
        if prob.shape != data.shape:
            prob = np.pad(prob, [(0, a - b) for a, b in zip(data.shape, prob.shape, strict=True)], mode="edge")
    prob[fg] = 1.0
    prob[bg] = 0.0
    return prob


def _seeds(arr, spacing, p: Prompts) -> tuple[np.ndarray, np.ndarray]:
    """Object / background seeds from clicks, extremes, scribbles, box and previous mask."""
    shape = arr.shape
    fg = _balls(shape, p.object_points, 1)
    bg = _balls(shape, p.negative, 1)
    if p.scribbles is not None:
        fg |= p.scribbles == 1
        bg |= p.scribbles == 2
    if p.box is not None:
        bg |= ~_box_mask(shape, p.box)
    if p.previous is not None and p.previous.any():
        near_neg = _distance_from(p.negative, shape, spacing) < 3 * max(spacing) + 5.0
        near_pos = _distance_from(p.positive, shape, spacing) < 3 * max(spacing) + 5.0
        fg |= _erode(p.previous, spacing, 1.5 * max(spacing)) & ~near_neg
        bg |= _erode(~p.previous, spacing, 1.5 * max(spacing)) & ~near_pos
    elif p.box is None:
        border = np.zeros(shape, dtype=bool)
        for ax in range(arr.ndim):
            idx = [slice(None)] * arr.ndim
            idx[ax] = 0
            border[tuple(idx)] = True
            idx[ax] = -1
            border[tuple(idx)] = True
        bg |= border
    if not fg.any() and p.box is not None:  # a box alone: its centre is the object
        centre = tuple((a + b) // 2 for a, b in zip(p.box[0], p.box[1], strict=True))
        fg = _balls(shape, [centre], 1)
    return fg, bg


# ---------------------------------------------------------------- methods


@register("region-growing")
def region_growing(arr: np.ndarray, spacing, p: Prompts) -> np.ndarray:
    import SimpleITK as sitk

    img = to_sitk(arr, spacing)
    inside = _box_mask(arr.shape, p.box) if p.box is not None else np.ones(arr.shape, dtype=bool)

    def grow(points) -> np.ndarray:
        if not points:
            return np.zeros(arr.shape, dtype=bool)
        out = sitk.ConfidenceConnected(img, seedList=[[int(v) for v in q] for q in points], numberOfIterations=4,
                                       multiplier=2.5, initialNeighborhoodRadius=1, replaceValue=1)
        return from_sitk(out).astype(bool)

    seeds = p.object_points
    if not seeds and p.scribbles is not None:
        seeds = [tuple(int(v) for v in q) for q in np.argwhere(p.scribbles == 1)[:50]]
    if not seeds and p.box is not None and p.previous is None:
        seeds = [tuple((a + b) // 2 for a, b in zip(p.box[0], p.box[1], strict=True))]
    mask = grow(seeds) & inside
    if p.previous is not None:
        mask |= p.previous
    if p.negative:
        neg = grow(p.negative)
        near = _distance_from(p.negative, arr.shape, spacing) < 10.0 + 2 * max(spacing)
        mask &= ~(neg | near) if p.previous is not None else ~neg
    if mask.any():
        closed = sitk.BinaryMorphologicalClosing(to_sitk(mask.astype(np.uint8), spacing), [1] * arr.ndim)
        mask = from_sitk(closed).astype(bool) & inside
    return _finish(mask, p, spacing)


@register("random-walker")
def random_walker_method(arr: np.ndarray, spacing, p: Prompts) -> np.ndarray:
    fg, bg = _seeds(arr, spacing, p)
    prob = random_walk(_normalise(arr), fg, bg, spacing)
    return _finish(prob > 0.5, p, spacing)


@register("grabcut")
def grabcut(arr: np.ndarray, spacing, p: Prompts, *, iterations: int = 3, sigma_mm: float = 1.5,
            clip: float = 4.0) -> np.ndarray:
    """GrabCut-like: mixtures for object and background, a smoothed likelihood ratio, refits."""
    from scipy import ndimage
    from sklearn.mixture import GaussianMixture

    if p.box is None:
        return random_walker_method(arr, spacing, p)
    if p.previous is not None and p.previous.any() and (p.positive or p.negative):
        return random_walker_method(arr, spacing, p)  # corrections: only the band around the clicks moves
    data = _normalise(arr)
    inside = _box_mask(arr.shape, p.box)
    fg_seed, bg_seed = _seeds(arr, spacing, p)
    if not p.object_points and (p.scribbles is None or not (p.scribbles == 1).any()):
        fg_seed = np.zeros_like(fg_seed)  # the box centre is no seed here: the object need not cover it
    rng = np.random.default_rng(0)
    flat = data.reshape(-1, 1)

    def fit(values: np.ndarray) -> GaussianMixture:
        v = values.reshape(-1, 1)
        if v.shape[0] > 30_000:
            v = v[rng.choice(v.shape[0], 30_000, replace=False)]
        return GaussianMixture(n_components=min(3, max(1, v.shape[0] // 20)), random_state=0,
                               reg_covar=1e-3).fit(v)

    mask = inside & ~bg_seed
    for it in range(iterations):
        back = (~inside if it == 0 else ~mask) | bg_seed
        obj = (mask | fg_seed) & ~bg_seed
        if obj.sum() < 5 or back.sum() < 5:
            break
        llr = (fit(data[obj]).score_samples(flat) - fit(data[back]).score_samples(flat)).reshape(arr.shape)
        # bounded before smoothing: one voxel the background model cannot explain at all must not
        # outvote its neighbours
        llr = ndimage.gaussian_filter(np.clip(llr, -clip, clip), [sigma_mm / s for s in spacing])
        new = ((llr > 0) & inside & ~bg_seed) | fg_seed
        new = _finish(new, p, spacing)
        if not new.any():
            break
        mask = new
    return mask


def _box_extent_mm(box, spacing) -> float:
    return float(min((b - a + 1) * s for a, b, s in zip(box[0], box[1], spacing, strict=True)))


@register("auto")
def auto(arr: np.ndarray, spacing, p: Prompts) -> np.ndarray:
    if p.box is not None or (p.previous is not None and p.previous.any()):
        return grabcut(arr, spacing, p)
    return region_growing(arr, spacing, p)


def _promptable(arr: np.ndarray, spacing, p: Prompts, model=None) -> np.ndarray:
    from medseg.prompt.network import predict

    return predict(arr, spacing, p, model=model)


_promptable.whole_image = True  # type: ignore[attr-defined]  # crops for itself; called with model=
register("promptable", _promptable)
