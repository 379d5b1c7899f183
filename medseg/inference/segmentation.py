"""``segment(image, model)``: preset -> sliding window -> argmax -> postprocess -> source grid.

The label map comes back on EXACTLY the source grid, with nearest-neighbour copies only. When the
source grid is axis-aligned with the network grid (every non-oblique CT/MR), the preset's
reorientation + resampling runs one axis at a time (:mod:`medseg.inference.grid`: the same grid
and voxels as MONAI's ``Spacingd``, several times faster) and the labels go back by per-axis
index copies; otherwise MONAI's transforms run and ``Invertd(nearest_interp=True)`` inverts them,
then the affine and spatial shape are checked against the source.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from medseg.errors import GeometryError, ModelError
from medseg.geometry import Geometry
from medseg.inference.grid import gather_axes, monai_nearest_indices, resample_linear, separable_map
from medseg.inference.model import SegmentationModel
from medseg.inference.result import InferenceRecord, Prediction, label_meta
from medseg.inference.sliding_window import StitchStats, sliding_window_labels


def resolve_device(device: str | Any = "auto"):
    """``"auto"`` -> CUDA when available, else CPU; ModelError when CUDA is asked but absent."""
    import torch

    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked but no CUDA device is available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {name!r}; use auto, cpu or cuda") from exc


class _SliceWise:
    """Run a 2D network on windows of shape (B, C, H, W, 1): the slice axis is the last one."""

    def __init__(self, net) -> None:
        self.net = net

    def __call__(self, x):
        out = self.net(x[..., 0])
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out[..., None]


def segment(image, model: SegmentationModel, *, device: str | Any = "auto", tta: bool = False,
            progress: bool = True, stats: StitchStats | None = None, amp: bool = True):
    """Segment ``image`` with ``model`` and return the label map on the source grid: the
    ``labels`` of :func:`infer` (which also says how it was computed).

    Args:
        image: channel-first :class:`monai.data.MetaTensor` with a voxel -> RAS mm affine
            (what :func:`medseg.io.load` returns); CT in HU.
        model: a :class:`SegmentationModel`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (or a ``torch.device``).
        tta: flip test-time augmentation (probabilities averaged over identity + one flip per
            axis); :attr:`InferenceRecord.tta_disagreement` of :func:`infer` is the fraction of
            voxels (network grid) whose label the augmentation changed.
        progress: progress bar (off when ``MEDSEG_PROGRESS=0``).
        stats: optional :class:`StitchStats` filled with buffer sizes and fallbacks.
        amp: run the network in float16 (CUDA) / bfloat16 (CPUs with native bf16); False: float32.

    Returns:
        MetaTensor ``(1, *spatial)`` of an integer dtype (uint8 up to 255 classes, int32 for
        instances) holding only 0 and the model's label indices, with exactly the source affine
        and spatial shape. ``meta`` holds the grid and the meaning of the values only
        (:func:`medseg.inference.result.label_meta`: ``spacing``, ``labels`` index -> name, ``task``).
    """
    return infer(image, model, device=device, tta=tta, progress=progress, stats=stats, amp=amp).labels


def _checked_postprocess(model: SegmentationModel) -> dict:
    """The model's postprocess; a ``lung_field`` must name the HU window its preset scales to 0..1."""
    from medseg.transforms.postprocess import validate_postprocess
    from medseg.transforms.presets import get_preset

    post = validate_postprocess(model.postprocess)
    lf = post.get("lung_field")
    if lf is not None:
        spec = get_preset(model.preset, **dict(model.preset_overrides))
        window = tuple(float(v) for v in lf.get("input_window_hu") or ())
        if spec.intensity != "window" or tuple(spec.window or ()) != window:
            raise ModelError(f"postprocess lung_field: input_window_hu {list(window)} is not the window of the "
                             f"model's preset {model.preset!r} ({spec.intensity} {list(spec.window or ())})")
    return post


def infer(image, model: SegmentationModel, *, device: str | Any = "auto", tta: bool = False,
          progress: bool = True, stats: StitchStats | None = None, amp: bool = True) -> Prediction:
    """:func:`segment`, returning a :class:`Prediction`: the label map and the
    :class:`InferenceRecord` of how it was computed (device, TTA and its disagreement, stitching
    statistics, timings per stage: preprocess, inference, postprocess, invert)."""
    import torch
    from monai.data import MetaTensor

    from medseg.transforms.postprocess import apply_postprocess
    from medseg.transforms.presets import preprocessing

    if not isinstance(image, MetaTensor):
        raise ModelError("segment() needs a MetaTensor with an affine (use medseg.io.load)")
    n_sp = image.ndim - 1
    dims = model.spatial_dims
    if n_sp not in (2, 3):
        raise ModelError(f"image must be (C, i, j[, k]); got shape {tuple(image.shape)}")
    slice_mode = dims == 2 and n_sp == 3
    if slice_mode and not model.slice_by_slice:
        raise ModelError("a 2D model got a 3D volume; set inference.slice_by_slice=true in the model spec")
    if dims == 3 and n_sp != 3:
        raise ModelError(f"a 3D model needs a 3D volume; got {n_sp} spatial axes")
    cin = int(model.network_spec.get("in_channels", 1))
    if image.shape[0] != cin:
        raise ModelError(f"the model expects {cin} input channel(s), the image has {image.shape[0]}")
    dev = resolve_device(device)
    stats = stats if stats is not None else StitchStats()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    src_affine = torch.as_tensor(image.affine, dtype=torch.float64).clone()
    src_shape = tuple(int(s) for s in image.shape[1:])
    src = MetaTensor(image.as_tensor().to(torch.float32), affine=src_affine.clone(),
                     meta={k: v for k, v in image.meta.items() if k in ("filename_or_obj", "space")})
    src.applied_operations = []
    overrides = dict(model.preset_overrides)
    fast = _separable_plan(model.preset, src, overrides)
    if fast is not None:  # axis-aligned: resample one axis at a time (same voxels as MONAI's Spacingd)
        grid, forward, back = fast
        pre = preprocessing(model.preset, keys=("image",), geometry=False, **overrides)
        on_grid = MetaTensor(resample_linear(src.as_tensor(), forward, grid.shape), affine=grid.affine.clone(),
                             meta={k: v for k, v in src.meta.items() if k != "affine"})
        x = pre({"image": on_grid})["image"]
    else:
        pre = preprocessing(model.preset, keys=("image",), **overrides)
        x = pre({"image": src})["image"]
    spacing = [float(s) for s in x.pixdim[:n_sp]]
    timings["preprocess"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    net = model.network.eval().to(dev)
    predictor = _SliceWise(net) if slice_mode else net
    roi = (*model.roi_size, 1) if slice_mode else model.roi_size
    labels = sliding_window_labels(x.as_tensor(), predictor, roi, overlap=model.overlap,
                                   sw_batch_size=model.sw_batch_size, device=dev, tta=tta,
                                   progress=progress, stats=stats, amp=amp)
    timings["inference"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    lab = labels.numpy()
    keep = np.zeros(max(int(lab.max()) + 1, 1), dtype=bool)
    for k in model.labels:
        if k < keep.size:
            keep[k] = True
    lab = np.where(keep[lab], lab, 0).astype(lab.dtype)
    lab = apply_postprocess(lab, spacing, _checked_postprocess(model), task=model.task,
                            affine=np.asarray(x.affine, dtype=np.float64),
                            image=x.as_tensor()[0].numpy() if "lung_field" in model.postprocess else None)
    timings["postprocess"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out_dtype = torch.int32 if model.task == "instance" else (
        torch.uint8 if max(model.labels, default=0) <= 255 else torch.int16)
    if fast is not None:
        values = gather_axes(torch.from_numpy(np.ascontiguousarray(lab))[None], back).to(out_dtype)
        if tuple(values.shape[1:]) != src_shape:
            raise GeometryError(f"the label map did not return to the source grid (shape {tuple(values.shape[1:])} "
                                f"vs {src_shape}); this is a bug in the per-axis inverse, please report it")
    else:
        values = _invert_with_monai(lab, x, pre, src_shape, src_affine, out_dtype)
    timings["invert"] = time.perf_counter() - t0
    out = MetaTensor(values, affine=src_affine.clone(),
                     meta=label_meta(image, labels=model.labels, task=model.task,
                                     spacing=Geometry(src_affine.numpy(), src_shape).spacing))
    out.applied_operations = []
    stitching = {"n_windows": stats.n_windows, "accumulator_bytes": stats.accumulator_bytes,
                 "accumulator_dtype": stats.accumulator_dtype, "stitch_device": stats.stitch_device,
                 "precision": stats.precision, "fallbacks": list(stats.fallbacks)}
    return Prediction(out, InferenceRecord(device=str(dev), tta=bool(tta), tta_disagreement=stats.tta_disagreement,
                                           timings_s=timings, stitching=stitching))


def _separable_plan(preset: str, src, overrides: dict[str, Any]):
    """``(network grid, maps source -> network, picks network -> source)`` when the preset only
    reorients and resamples and the source grid is axis-aligned with it; else None (MONAI's
    general path). The picks, for :func:`gather_axes`, hold MONAI's own nearest-index choice for
    the inverse resampling followed by the inverse reorientation (a permutation + flips)."""
    import torch

    from medseg.transforms.presets import get_preset, network_grid

    if get_preset(preset, **overrides).intensity == "zscore_nonzero" and bool((src.as_tensor() == 0).any()):
        # NormalizeIntensity(nonzero=True) takes its statistics over the voxels that are not exactly 0.
        # On a masked volume (e.g. a skull-stripped T1) MONAI's Spacingd leaves ~1e-11 residue in part
        # of the zero background, which then counts as tissue; the model was trained through MONAI's
        # resampler, so exact zeros from the per-axis path would normalise differently (Dice on the
        # masked MNI152 T1: 0.924 vs 0.937). Such inputs take MONAI's path, as in training.
        return None
    grid = network_grid(preset, src, **overrides)
    if grid is None:
        return None
    n_sp = src.ndim - 1
    forward = separable_map(src.affine, grid.affine, n_spatial=n_sp)
    orient = separable_map(src.affine, grid.oriented_affine, n_spatial=n_sp)
    if forward is None or orient is None:
        return None
    if any(abs(abs(am.scale) - 1) > 1e-6 or abs(am.offset - round(am.offset)) > 1e-6 for am in orient):
        return None  # reorientation must be a pure axis permutation with flips
    if n_sp == 3:
        picks_oriented = monai_nearest_indices(grid.affine, grid.shape, grid.oriented_affine, grid.oriented_shape)
        if picks_oriented is None:
            return None
    else:  # 2D presets keep the stored grid (no spacing step)
        picks_oriented = [torch.arange(s) for s in grid.oriented_shape]
    src_shape = tuple(int(s) for s in src.shape[1:])
    back: list = [None] * n_sp
    for am in orient:  # oriented axis am.out_axis reads source axis am.in_axis at scale * i + offset
        j = torch.arange(src_shape[am.in_axis], dtype=torch.float64)
        i = torch.round((j - am.offset) / am.scale).to(torch.long)
        back[am.in_axis] = (am.out_axis, picks_oriented[am.out_axis][i])
    return grid, forward, back


def _invert_with_monai(lab, x, pre, src_shape, src_affine, out_dtype):
    """Labels on the network grid -> source grid with MONAI ``Invertd`` (nearest): oblique grids."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    pred = MetaTensor(torch.from_numpy(np.ascontiguousarray(lab)).to(torch.float32)[None],
                      affine=x.affine.clone(),
                      meta={k: copy.deepcopy(v) for k, v in x.meta.items() if k != "affine"})
    pred.applied_operations = copy.deepcopy(x.applied_operations)
    inverted = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True,
                       to_tensor=True)({"image": x, "pred": pred})["pred"]
    inv_affine = torch.as_tensor(inverted.affine, dtype=torch.float64)
    if tuple(inverted.shape[1:]) != src_shape or not torch.allclose(inv_affine, src_affine, atol=1e-4, rtol=0):
        raise GeometryError(f"the label map did not return to the source grid (shape {tuple(inverted.shape[1:])} "
                            f"vs {src_shape}); this is a bug in the preset inverse, please report it")
    return torch.round(inverted.as_tensor()).to(out_dtype)
