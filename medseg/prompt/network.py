"""The trained promptable networks (bundles ``promptable_3d`` and ``promptable_2d``) behind
:func:`medseg.prompt.segment`.

Design (DeepGrow / DEXTR / nnInteractive style: prompts as extra input channels), shared by the
training script (``bundles/promptable_3d/scripts/train.py``) and inference here:

* **Crop**: a cube of ``CROP``\\ :sup:`3` voxels (3D) or a square of ``CROP_2D``\\ :sup:`2` pixels
  (2D: :func:`crop_for` picks by the number of axes) at an isotropic spacing ``s`` mm, in the image's
  own array axes (no reorientation: training flips and transposes the axes at random). Its side in
  mm comes from the prompts: a box (or the box of the extreme points, or of a previous mask and
  the clicks) plus a margin of ``max(MARGIN_MM, MARGIN_FRACTION x extent)`` on each side; clicks
  alone start from a ``CLICK_FOV_MM`` cube centred on the positive clicks; without a box the cube
  is grown by ``GROW`` (at most ``MAX_GROW`` times) while the object touches one of its faces
  that lies inside the image. ``s`` = side / ``CROP``,
  clamped to ``[MIN_SPACING, MAX_SPACING]`` mm. The image is sampled trilinearly.
* **Channels** (7): two image channels, positive clicks, negative clicks, box, previous mask.

  - CT (the image's 0.5th percentile below -500, i.e. air in HU): ``clip(HU, -1000, 1000) / 1000``
    and the soft-tissue window ``clip((HU - 40) / 200, -1, 1)``.
  - anything else (MR, ...): robust z-score of the crop ``(x - median) / (1.4826 MAD)`` clipped to
    +-5 and divided by 5, and the crop's 1st-99th percentile scaled to [-1, 1].
  - clicks: a Gaussian of sigma ``CLICK_SIGMA`` crop voxels (max over clicks); box: 1 inside;
    previous mask: resampled, 0/1. The fifth channel marks that there is no box (1 everywhere),
    so "no box" and "box everywhere" differ.
* **Output**: one logit map; its trilinear resampling onto the image grid inside the crop,
  thresholded at 0, keeps the components holding a positive click / extreme point (or the
  largest in the box's core), holes filled (:func:`medseg.prompt.prompts.finish`).

The 2D network is the same design with ``spatial_dims=2`` (same seven channels); 3D images go to
``promptable_3d``, 2D images (X-ray, microscopy, one slice) to ``promptable_2d``.

Weights: ``bundles/promptable_{3d,2d}/models/model.pt`` (a state dict), its sha256 recorded in
``models/sha256sums.txt`` and checked before ``torch.load(weights_only=True)``; another promptable
bundle folder can be given as ``model`` (:func:`resolve_bundle`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from medseg.errors import BundleError

CROP = 48
CROP_2D = 96
IN_CHANNELS = 7
MARGIN_MM = 10.0
MARGIN_FRACTION = 0.15
CLICK_FOV_MM = 96.0
GROW = 1.8
MAX_GROW = 2
MIN_SPACING = 0.6
MAX_SPACING = 8.0
CLICK_SIGMA = 2.0
BUNDLES = {3: "promptable_3d", 2: "promptable_2d"}
NETWORK = {"arch": "UNet", "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1}


def crop_for(ndim: int) -> int:
    """The crop's side in voxels for an image of ``ndim`` spatial axes."""
    if ndim not in BUNDLES:
        raise BundleError(f"the promptable networks take 2D or 3D images, not {ndim}D")
    return CROP if ndim == 3 else CROP_2D


def build_net(ndim: int = 3):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=ndim, in_channels=IN_CHANNELS, out_channels=1, channels=tuple(NETWORK["channels"]),
                strides=tuple(NETWORK["strides"]), num_res_units=NETWORK["num_res_units"])


# ------------------------------------------------------------------ geometry of the crop


def crop_of_box(lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre mm, spacing mm) of the cube around a box given in index-scaled mm (index x spacing)."""
    lo_mm, hi_mm = np.asarray(lo_mm, float), np.asarray(hi_mm, float)
    ext = hi_mm - lo_mm
    side = float(np.max(ext + 2 * np.maximum(MARGIN_MM, MARGIN_FRACTION * ext)))
    return (lo_mm + hi_mm) / 2, float(np.clip(side / crop_for(lo_mm.size), MIN_SPACING, MAX_SPACING))


def crop_coords(centre_mm: np.ndarray, s: float) -> np.ndarray:
    """Index-scaled mm of the crop's voxel centres along one axis, per axis: (ndim, CROP)."""
    crop = crop_for(np.asarray(centre_mm).size)
    k = (np.arange(crop) - (crop - 1) / 2.0) * s
    return np.asarray(centre_mm, float)[:, None] + k[None, :]


def sample_crop(arr: np.ndarray, spacing: Sequence[float], centre_mm, s: float, order: int = 1,
                cval: float | None = None) -> np.ndarray:
    """``arr`` sampled on the crop grid (``order`` 1 trilinear, 0 nearest); outside: edge values
    (``cval=None``) or ``cval``."""
    from scipy import ndimage

    sp = np.asarray(spacing, float)
    crop = crop_for(arr.ndim)
    start = (np.asarray(centre_mm, float) - (crop - 1) / 2.0 * s) / sp
    step = s / sp
    mode = "nearest" if cval is None else "constant"
    return ndimage.affine_transform(arr, step, offset=start, output_shape=(crop,) * arr.ndim, order=order,
                                    mode=mode, cval=0.0 if cval is None else cval, prefilter=False)


def to_crop_index(points_vox, spacing, centre_mm, s: float) -> np.ndarray:
    p = np.asarray(points_vox, float).reshape(-1, len(spacing)) * np.asarray(spacing, float)
    return (p - np.asarray(centre_mm, float)) / s + (crop_for(len(spacing)) - 1) / 2.0


# ------------------------------------------------------------------ channels


def is_ct(arr: np.ndarray) -> bool:
    """CT in HU when air is there: the 0.5th percentile (of a subsample) below -500."""
    flat = np.asarray(arr).ravel()
    step = max(1, flat.size // 200_000)
    return bool(np.percentile(flat[::step], 0.5) < -500)


def image_channels(crop: np.ndarray, ct: bool) -> np.ndarray:
    crop = crop.astype(np.float32)
    if ct:
        return np.stack([np.clip(crop, -1000, 1000) / 1000.0, np.clip((crop - 40.0) / 200.0, -1, 1)])
    med = float(np.median(crop))
    mad = 1.4826 * float(np.median(np.abs(crop - med)))
    if mad <= 1e-6:
        mad = float(crop.std()) + 1e-6
    z = np.clip((crop - med) / mad, -5, 5) / 5.0
    lo, hi = np.percentile(crop, [1, 99])
    r = np.clip((crop - lo) / max(float(hi - lo), 1e-6), 0, 1) * 2 - 1
    return np.stack([z, r]).astype(np.float32)


def click_map(points: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    if points is None or len(points) == 0:
        return out
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij", sparse=True)
    for p in np.asarray(points, float).reshape(-1, len(shape)):
        d2 = sum((g - float(c)) ** 2 for g, c in zip(grids, p, strict=True))
        np.maximum(out, np.exp(-d2 / (2 * CLICK_SIGMA ** 2)).astype(np.float32), out=out)
    return out


def box_map(lo: np.ndarray | None, hi: np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
    """1 on the crop voxels whose centres lie in the box ``[lo, hi]`` (continuous crop indices of its
    outer faces)."""
    out = np.zeros(shape, np.float32)
    if lo is None:
        return out
    a = np.clip(np.ceil(np.asarray(lo) - 1e-6).astype(int), 0, np.asarray(shape) - 1)
    b = np.clip(np.floor(np.asarray(hi) + 1e-6).astype(int), 0, np.asarray(shape) - 1)
    if np.any(np.asarray(hi) < 0) or np.any(np.asarray(lo) > np.asarray(shape) - 1) or np.any(b < a):
        return out
    out[tuple(slice(x, y + 1) for x, y in zip(a, b, strict=True))] = 1.0
    return out


def encode(image_ch: np.ndarray, pos, neg, box_lo, box_hi, previous: np.ndarray | None) -> np.ndarray:
    """The network input (IN_CHANNELS, *crop shape) from crop-index prompts."""
    shape = image_ch.shape[1:]
    prev = np.zeros(shape, np.float32) if previous is None else previous.astype(np.float32)
    nobox = np.full(shape, 0.0 if box_lo is not None else 1.0, np.float32)
    return np.concatenate([image_ch, np.stack([click_map(pos, shape), click_map(neg, shape),
                                               box_map(box_lo, box_hi, shape), nobox, prev])]).astype(np.float32)


# ------------------------------------------------------------------ bundle


def bundle_dir(ndim: int = 3) -> Path:
    return Path(__file__).resolve().parents[2] / "bundles" / BUNDLES[ndim]


def available(ndim: int = 3) -> bool:
    d = bundle_dir(ndim)
    return (d / "models" / "model.pt").is_file() and (d / "models" / "sha256sums.txt").is_file()


def bundle_metadata(d: Path) -> dict:
    """``configs/metadata.json`` of bundle folder ``d`` as a dict; ``{}`` when it is missing,
    unreadable or not a JSON object."""
    try:
        meta = json.loads((d / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def default_enabled(ndim: int = 3) -> bool:
    """Whether the bundle met its shipping rule (docs/PLAN_prompt.md) and is the default method:
    ``configs/metadata.json`` -> ``medseg_promptable.default``."""
    if not available(ndim):
        return False
    section = bundle_metadata(bundle_dir(ndim)).get("medseg_promptable")
    return isinstance(section, dict) and section.get("default") is True


def resolve_bundle(model: str | Path | None, ndim: int) -> Path:
    """The promptable bundle folder for ``model``: ``None`` -> the shipped one for ``ndim`` axes;
    a shipped name (``promptable_3d`` / ``promptable_2d``); or a folder holding a promptable
    bundle (``configs/metadata.json`` with a ``medseg_promptable`` section). Anything else is a
    one-line :class:`~medseg.errors.BundleError`."""
    if model is None:
        return bundle_dir(ndim)
    text = str(model)
    by_name = {name: bundle_dir(nd) for nd, name in BUNDLES.items()}
    d = by_name.get(text, Path(text))
    if not d.is_dir():
        raise BundleError(f"--model: '{text}' is neither a promptable bundle name ({', '.join(by_name)}) "
                          "nor a bundle folder")
    meta = bundle_metadata(d).get("medseg_promptable")
    if not isinstance(meta, dict):
        raise BundleError(f"--model: '{d.name}' is not a promptable bundle (configs/metadata.json has no "
                          "medseg_promptable section)")
    dims = meta.get("spatial_dims", 3)
    if dims not in BUNDLES or isinstance(dims, bool):
        raise BundleError(f"--model: '{d.name}' declares spatial_dims {str(dims)[:20]!r}; a promptable "
                          "network is 2D or 3D")
    if dims != ndim:
        raise BundleError(f"--model: '{d.name}' is a {dims}D promptable network; this image is {ndim}D")
    return d


def load_network(path: str | None = None, ndim: int = 3):
    """The network in eval mode, weights checked against ``models/sha256sums.txt`` and loaded with
    ``torch.load(weights_only=True)``; ``path`` a promptable bundle folder (default: the shipped
    one for ``ndim``)."""
    return _load_network(str(resolve_bundle(path, ndim)), ndim)


@lru_cache(maxsize=4)
def _load_network(folder: str, ndim: int):
    from medseg.bundle.trust import read_checksums, sha256_file
    from medseg.models.weights import load_into, read_state_dict

    d = Path(folder)
    weights = d / "models" / "model.pt"
    if not weights.is_file():
        raise BundleError(f"the {d.name} bundle has no models/model.pt; train it with "
                          f"bundles/{BUNDLES[ndim]}/scripts/train.py")
    sums = read_checksums(d)
    if sums.get("models/model.pt") != sha256_file(weights):
        raise BundleError(f"{d.name}/models/model.pt does not match its sha256 in models/sha256sums.txt")
    net_cfg = bundle_metadata(d).get("medseg_promptable", {})  # its spatial_dims: checked by resolve_bundle
    if net_cfg.get("in_channels", IN_CHANNELS) != IN_CHANNELS or net_cfg.get("crop", CROP) != crop_for(ndim):
        raise BundleError(f"{d.name} was built for another prompt encoding than this medseg's")
    net = build_net(ndim)
    state = read_state_dict(weights, error=BundleError, what=f"{d.name}/models/model.pt")
    load_into(net, state, error=BundleError, what=f"{d.name}/models/model.pt does not fit the promptable network")
    net.eval()
    return net


load_network.cache_clear = _load_network.cache_clear  # type: ignore[attr-defined]


# ------------------------------------------------------------------ inference


def _forward(net, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return net(torch.from_numpy(x[None]))[0, 0].numpy()


def _lerp_axis(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` at continuous indices ``coords`` (edge clamped)."""
    c = np.clip(coords, 0, a.shape[axis] - 1).astype(np.float32)
    i0 = np.minimum(np.floor(c).astype(int), a.shape[axis] - 2)
    w = (c - i0).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
    a0 = np.take(a, i0, axis=axis)
    return a0 + (np.take(a, i0 + 1, axis=axis) - a0) * w


def _paste(logits: np.ndarray, shape, spacing, centre_mm, s: float):
    """Logits resampled (trilinear, separable) onto the image voxels the crop covers:
    (slices, logit block)."""
    sp = np.asarray(spacing, float)
    crop = crop_for(sp.size)
    lo_mm = np.asarray(centre_mm, float) - (crop - 1) / 2.0 * s
    hi_mm = np.asarray(centre_mm, float) + (crop - 1) / 2.0 * s
    lo = np.maximum(0, np.ceil(lo_mm / sp - 1e-6)).astype(int)
    hi = np.minimum(np.asarray(shape) - 1, np.floor(hi_mm / sp + 1e-6)).astype(int)
    if np.any(hi < lo):
        return None, None
    block = logits.astype(np.float32)
    for ax in range(sp.size):
        block = _lerp_axis(block, (np.arange(lo[ax], hi[ax] + 1) * sp[ax] - lo_mm[ax]) / s, ax)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi, strict=True)), block


def predict(arr: np.ndarray, spacing: Sequence[float], p, *, net=None, ct: bool | None = None,
            model: str | Path | None = None) -> np.ndarray:
    """Boolean mask of the whole ``arr`` (2D or 3D) from prompts ``p``
    (:class:`~medseg.prompt.prompts.Prompts`, voxel indices of ``arr``); ``model`` a promptable
    bundle (:func:`resolve_bundle`; default the shipped one for ``arr.ndim`` axes)."""
    from medseg.prompt.prompts import finish as _finish

    nd = arr.ndim
    crop = crop_for(nd)
    net = load_network(model, nd) if net is None else net
    ct = is_ct(arr) if ct is None else ct
    sp = np.asarray(spacing, float)
    pos = list(p.positive) + list(p.extreme)
    neg = list(p.negative)
    prev = p.previous if p.previous is not None and p.previous.any() else None
    box = p.box
    if box is None and p.extreme:
        e = np.asarray(p.extreme)
        box = (e.min(0), e.max(0))
    if p.scribbles is not None:  # scribbles: their voxels act as clicks (a subsample)
        for val, dest in ((1, pos), (2, neg)):
            idx = np.argwhere(p.scribbles == val)
            if len(idx):
                dest.extend(tuple(v) for v in idx[:: max(1, len(idx) // 10)])
    grow = 0
    if box is not None:
        lo_mm, hi_mm = (np.asarray(box[0]) - 0.5) * sp, (np.asarray(box[1]) + 0.5) * sp
        for q in pos + neg:  # clicks outside the box widen the crop
            lo_mm, hi_mm = np.minimum(lo_mm, np.asarray(q) * sp), np.maximum(hi_mm, np.asarray(q) * sp)
        centre, s = crop_of_box(lo_mm, hi_mm)
    elif prev is not None:
        idx = np.argwhere(prev)
        pts = np.concatenate([idx, np.asarray(pos + neg, float).reshape(-1, nd)]) if pos or neg else idx
        centre, s = crop_of_box((pts.min(0) - 0.5) * sp, (pts.max(0) + 0.5) * sp)
        grow = MAX_GROW  # a corrected object may reach past the old mask's box
    else:
        if not pos:
            raise BundleError("the promptable network needs a positive click, a box, extreme points or a mask")
        centre = np.asarray(pos, float).mean(0) * sp
        ext = np.ptp(np.asarray(pos, float) * sp, axis=0).max() if len(pos) > 1 else 0.0
        s = float(np.clip(max(CLICK_FOV_MM, ext * 1.5) / crop, MIN_SPACING, MAX_SPACING))
        grow = MAX_GROW
    while True:
        img = image_channels(sample_crop(arr, sp, centre, s), ct)
        c_pos = to_crop_index(pos, sp, centre, s) if pos else None
        c_neg = to_crop_index(neg, sp, centre, s) if neg else None
        b_lo = b_hi = None
        if box is not None:
            b_lo = to_crop_index([np.asarray(box[0]) - 0.5], sp, centre, s)[0]
            b_hi = to_crop_index([np.asarray(box[1]) + 0.5], sp, centre, s)[0]
        c_prev = None
        if prev is not None:
            c_prev = sample_crop(prev.view(np.uint8), sp, centre, s, order=0, cval=0.0) > 0
        logits = _forward(net, encode(img, c_pos, c_neg, b_lo, b_hi, c_prev))
        fg = logits > 0
        first = centre - (crop - 1) / 2.0 * s
        last = centre + (crop - 1) / 2.0 * s
        inside_lo = first >= -0.5 * sp  # faces beyond the image's edge do not ask for a larger crop
        inside_hi = last <= (np.asarray(arr.shape) - 0.5) * sp
        faces = [(inside_lo[a] and np.take(fg, 0, a).any()) or (inside_hi[a] and np.take(fg, -1, a).any())
                 for a in range(nd)]
        if grow <= 0 or not any(faces) or s >= MAX_SPACING:
            break
        grow -= 1
        s = float(min(s * GROW, MAX_SPACING))
    # components and holes on the crop grid (cheap), then one trilinear paste onto the image grid
    from medseg.prompt.prompts import Prompts

    inside = [tuple(int(v) for v in np.rint(q)) for q in ([] if c_pos is None else c_pos)
              if np.all(np.rint(q) >= 0) and np.all(np.rint(q) <= crop - 1)]
    c_box = None
    if b_lo is not None:
        a = np.clip(np.ceil(b_lo - 1e-6), 0, crop - 1).astype(int)
        b = np.clip(np.floor(b_hi + 1e-6), 0, crop - 1).astype(int)
        c_box = (tuple(int(v) for v in a), tuple(int(v) for v in np.maximum(a, b)))
    keep = _finish(fg, Prompts(inside, [], c_box, [], None, c_prev), (s,) * nd)
    adj = logits.copy()
    adj[~keep] = np.minimum(adj[~keep], -1.0)
    adj[keep & ~fg] = 1.0
    out = np.zeros(arr.shape, bool) if prev is None else prev.copy()  # outside the crop a previous mask stands
    sl, block = _paste(adj, arr.shape, sp, centre, s)
    if sl is not None:
        out[sl] = block > 0
    return out
