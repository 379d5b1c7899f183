"""Classical automatic segmentation: thresholds, clustering, region growing, watershed, edges.

Every method wraps a SimpleITK / scikit-image / scikit-learn implementation (nothing here
re-implements a filter) and works on one channel of intensities indexed ``(i, j[, k])`` with the
voxel spacing in mm. A method returns a :class:`Result`: the label map, the class names, the task
(``"semantic"`` or ``"instance"``) and the parameters it chose (thresholds, cluster means), which
go into ``provenance.json``.

Method strings (``medseg segment INPUT --method ...``):

* ``otsu``: one Otsu threshold (SimpleITK ``OtsuThresholdImageFilter``); label 1 = above it.
* ``multi-otsu[:K]``: K classes (default 3) by scikit-image ``threshold_multiotsu``; the darkest
  class is background, labels 1..K-1 go up in intensity.
* ``threshold:LOW,HIGH``: SimpleITK ``BinaryThreshold``, both bounds inclusive (``inf``/``-inf``
  allowed).
* ``region-growing``: SimpleITK ``ConfidenceConnected`` from seeds (voxel indices; by default the
  centre voxel of the image), multiplier 2.5, 5 iterations, radius 1.
* ``kmeans:K`` / ``gmm:K``: scikit-learn ``KMeans`` / ``GaussianMixture`` on intensities (fitted on
  at most 200,000 voxels drawn with a fixed seed, then applied to all); clusters ordered by mean,
  the darkest is background.
* ``watershed[:H]``: Otsu foreground of the image smoothed by one voxel (objects under 15 voxels
  removed, holes filled), its Euclidean distance map in mm (scipy), one marker per regional
  maximum of depth H mm (scikit-image ``h_maxima``, default 1), scikit-image ``watershed``: one id
  per object (instance output, e.g. nuclei).
* ``edges``: Canny edges (scikit-image in 2D, SimpleITK ``CannyEdgeDetection`` in 3D, thresholds
  at the 80th/90th percentile of the gradient magnitude), morphological closing (SimpleITK), holes
  filled (SimpleITK ``BinaryFillhole``, per slice in 3D), components under 0.1 % of the image removed.
* ``preset:NAME``: CT Hounsfield presets, see :mod:`medseg.classical.presets`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.classical._sitk import from_sitk, to_sitk
from medseg.errors import ConfigError

_FIT_SAMPLE = 200_000


@dataclass
class Result:
    """Output of one classical method (label map on the input's array grid)."""

    labels: np.ndarray
    names: dict[int, str]
    task: str = "semantic"
    params: dict[str, Any] = field(default_factory=dict)
    scores: dict[int, float] | None = None  # per label, when the method has a probability model


@dataclass(frozen=True)
class MethodSpec:
    """A parsed ``--method`` string."""

    name: str
    args: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.name + (":" + ",".join(self.args) if self.args else "")


def parse_method(text: str) -> MethodSpec:
    """``"kmeans:3"`` -> ``MethodSpec("kmeans", ("3",))``; ConfigError for unknown names."""
    raw = str(text).strip()
    name, _, rest = raw.partition(":")
    name = name.strip().lower()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    args = tuple(a.strip() for a in rest.split(",") if a.strip()) if rest else ()
    return MethodSpec(name, args)


def run_method(spec: str | MethodSpec, arr: np.ndarray, spacing: Sequence[float], *,
               seeds: Sequence[Sequence[int]] | None = None, affine: np.ndarray | None = None) -> Result:
    """Run one method on ``arr`` (spatial axes only) with ``spacing`` (mm per axis); ``seeds`` are
    voxel indices (region growing), ``affine`` (voxel -> RAS mm) tells the CT presets the axial axis."""
    spec = parse_method(spec) if isinstance(spec, str) else spec
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3):
        raise ConfigError(f"classical methods need a 2D or 3D single-channel image; got shape {arr.shape}")
    if arr.size == 0:
        raise ConfigError("the image is empty")
    fn = METHODS[spec.name]
    if spec.name == "preset":
        from medseg.classical.presets import run_preset

        if len(spec.args) != 1:
            raise ConfigError("preset needs a name, e.g. preset:bone")
        return run_preset(spec.args[0], arr.astype(np.float32, copy=False), spacing, affine)
    return fn(arr.astype(np.float32, copy=False), tuple(float(s) for s in spacing), spec.args, seeds)


def _int_arg(args: tuple[str, ...], default: int, name: str, lo: int = 2, hi: int = 16) -> int:
    if not args:
        return default
    try:
        k = int(args[0])
    except ValueError:
        raise ConfigError(f"{name} needs an integer number of classes, e.g. {name}:3") from None
    if not lo <= k <= hi:
        raise ConfigError(f"{name}: number of classes must be between {lo} and {hi}")
    return k


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"threshold: {what} must be a number (or inf / -inf), e.g. threshold:200,3000") from None


def otsu_threshold(arr: np.ndarray, spacing: Sequence[float]) -> float:
    """SimpleITK's Otsu threshold of ``arr`` (256 bins)."""
    import SimpleITK as sitk

    f = sitk.OtsuThresholdImageFilter()
    f.SetNumberOfHistogramBins(256)
    f.Execute(to_sitk(arr, spacing))
    return float(f.GetThreshold())


def _otsu(arr, spacing, args, seeds) -> Result:
    t = otsu_threshold(arr, spacing)
    return Result((arr > t).astype(np.uint8), {1: "foreground"}, params={"threshold": t})


def _multi_otsu(arr, spacing, args, seeds) -> Result:
    from skimage.filters import threshold_multiotsu

    k = _int_arg(args, 3, "multi-otsu", 2, 6)
    th = threshold_multiotsu(arr, classes=k)
    labels = np.digitize(arr, th).astype(np.uint8)
    return Result(labels, {i: f"class_{i}" for i in range(1, k)}, params={"thresholds": [float(t) for t in th]})


def _threshold(arr, spacing, args, seeds) -> Result:
    import SimpleITK as sitk

    if len(args) != 2:
        raise ConfigError("threshold needs two bounds: threshold:LOW,HIGH (inclusive, inf allowed)")
    lo, hi = _float(args[0], "LOW"), _float(args[1], "HIGH")
    if lo > hi:
        raise ConfigError("threshold: LOW must not exceed HIGH")
    big = float(np.finfo(np.float32).max)
    out = sitk.BinaryThreshold(to_sitk(arr, spacing), lowerThreshold=max(lo, -big), upperThreshold=min(hi, big),
                               insideValue=1, outsideValue=0)
    return Result(from_sitk(out).astype(np.uint8), {1: "foreground"}, params={"low": lo, "high": hi})


def _region_growing(arr, spacing, args, seeds) -> Result:
    import SimpleITK as sitk

    if not seeds:
        seeds = [tuple(s // 2 for s in arr.shape)]
    pts = [[int(v) for v in s] for s in seeds]
    for p in pts:
        if len(p) != arr.ndim or any(not 0 <= v < n for v, n in zip(p, arr.shape, strict=True)):
            raise ConfigError("a region-growing seed lies outside the image")
    out = sitk.ConfidenceConnected(to_sitk(arr, spacing), seedList=pts, numberOfIterations=5, multiplier=2.5,
                                   initialNeighborhoodRadius=1, replaceValue=1)
    return Result(from_sitk(out).astype(np.uint8), {1: "region"}, params={"seeds_voxel": pts, "multiplier": 2.5})


def _fit_sample(arr: np.ndarray) -> np.ndarray:
    flat = arr.reshape(-1, 1)
    if flat.shape[0] <= _FIT_SAMPLE:
        return flat
    rng = np.random.default_rng(0)
    return flat[rng.choice(flat.shape[0], _FIT_SAMPLE, replace=False)]


def _ordered(predict: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(means.ravel())
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[predict].astype(np.uint8), order


def _kmeans(arr, spacing, args, seeds) -> Result:
    from sklearn.cluster import KMeans

    k = _int_arg(args, 2, "kmeans")
    km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(_fit_sample(arr))
    labels, order = _ordered(km.predict(arr.reshape(-1, 1)).reshape(arr.shape), km.cluster_centers_)
    return Result(labels, {i: f"class_{i}" for i in range(1, k)},
                  params={"means": [float(km.cluster_centers_[o, 0]) for o in order]})


def _gmm(arr, spacing, args, seeds) -> Result:
    from sklearn.mixture import GaussianMixture

    k = _int_arg(args, 2, "gmm")
    gm = GaussianMixture(n_components=k, random_state=0).fit(_fit_sample(arr))
    post = gm.predict_proba(arr.reshape(-1, 1))
    hard = post.argmax(1)
    labels, order = _ordered(hard.reshape(arr.shape), gm.means_)
    # score of a class: mean posterior of that class over the voxels given to it
    scores = {}
    for rank_i, comp in enumerate(order):
        if rank_i == 0:
            continue
        sel = hard == comp
        scores[rank_i] = float(post[sel, comp].mean()) if sel.any() else float("nan")
    return Result(labels, {i: f"class_{i}" for i in range(1, k)},
                  params={"means": [float(gm.means_[o, 0]) for o in order]}, scores=scores)


def _watershed(arr, spacing, args, seeds) -> Result:
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    sigma = [1.0 / 1.0] * arr.ndim  # one voxel
    smooth = ndimage.gaussian_filter(arr, sigma)
    t = otsu_threshold(smooth, spacing)
    fg = ndimage.binary_fill_holes(_remove_small(smooth > t, 15))
    dist = ndimage.gaussian_filter(ndimage.distance_transform_edt(fg, sampling=spacing), sigma)
    try:
        h = float(args[0]) if args else 1.0
    except ValueError:
        raise ConfigError("watershed:H takes the marker depth H in mm, e.g. watershed:1") from None
    markers, n = ndimage.label(h_maxima(dist, h))
    labels = watershed(-dist, markers, mask=fg).astype(np.int32)
    return Result(labels, {1: "object"}, task="instance",
                  params={"threshold": t, "marker_depth_mm": h, "n_objects": int(n)})


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    import SimpleITK as sitk

    if mask.ndim == 2:
        return from_sitk(sitk.BinaryFillhole(to_sitk(mask.astype(np.uint8), (1, 1)))).astype(bool)
    out = np.empty_like(mask, dtype=bool)
    for k in range(mask.shape[2]):
        out[..., k] = from_sitk(sitk.BinaryFillhole(to_sitk(mask[..., k].astype(np.uint8), (1, 1)))).astype(bool)
    return out


def _remove_small(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    from skimage.morphology import remove_small_objects

    return remove_small_objects(mask.astype(bool), max_size=min_voxels)


def _edges(arr, spacing, args, seeds) -> Result:
    import SimpleITK as sitk

    if arr.ndim == 2:
        from skimage.feature import canny

        edges = canny(arr, sigma=2.0, low_threshold=0.8, high_threshold=0.9, use_quantiles=True)
    else:
        img = to_sitk(arr, spacing)
        grad = from_sitk(sitk.GradientMagnitudeRecursiveGaussian(img, sigma=float(min(spacing)) * 1.5))
        lo, hi = np.percentile(grad, [80, 90])
        edges = from_sitk(sitk.CannyEdgeDetection(img, lowerThreshold=float(lo), upperThreshold=float(hi),
                                                  variance=[float(min(spacing)) ** 2 * 2.25] * 3)) > 0
    closed = from_sitk(sitk.BinaryMorphologicalClosing(to_sitk(edges.astype(np.uint8), spacing),
                                                       [2] * arr.ndim)).astype(bool)
    filled = _fill_holes(closed)
    mask = _remove_small(filled, max(1, int(arr.size * 0.001)))
    return Result(mask.astype(np.uint8), {1: "enclosed"}, params={"closing_radius_voxels": 2})


def _preset(arr, spacing, args, seeds) -> Result:  # dispatched in run_method (needs the affine)
    from medseg.classical.presets import run_preset

    return run_preset(args[0] if args else "", arr, spacing)


METHODS: dict[str, Callable[..., Result]] = {
    "otsu": _otsu, "multi-otsu": _multi_otsu, "threshold": _threshold, "region-growing": _region_growing,
    "kmeans": _kmeans, "gmm": _gmm, "watershed": _watershed, "edges": _edges, "preset": _preset,
}
