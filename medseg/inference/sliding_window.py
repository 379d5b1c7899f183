"""Memory-bounded sliding-window inference with Gaussian blending.

MONAI's ``sliding_window_inference`` keeps a float32 ``C x D x H x W`` output buffer (plus a
count map) for the whole volume: 100 classes on a 384^3 CT is 22.6 GB. Here the windows (same
positions and the same Gaussian importance map as MONAI) are grouped by their start along the
LAST spatial axis and processed group by group. A ring buffer only ``roi[-1]`` wide along that
axis accumulates the importance-weighted network outputs in float16 (float32 on request, or
automatically when the outputs leave float16's range), each window's scores shifted per voxel so
that its best class is 0 (argmax is invariant to a per-voxel shift; small numbers keep float16's
precision where the decision is made). When a group is done, every position
before the next group's start is final: it is reduced to the argmax at once (uint8 / int16) and
its ring slots are reused. Because the argmax of a weighted average equals the argmax of the
weighted sum (the weight sum is the same for all classes), the labels equal MONAI's up to
float16 rounding of near ties.

Windows run on ``device`` (CUDA: autocast float16 and channels_last); the ring buffer lives on
the same device when it fits, else on the CPU. ``torch.cuda.OutOfMemoryError`` (only that) makes
the engine retry with a smaller window batch, then with the ring buffer on the CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from medseg.errors import ConfigError, ModelError
from medseg.settings import progress_enabled

log = logging.getLogger(__name__)

_FP16_MAX = 6.0e4  # float16 overflows at 65504
FLOAT32_RING_BYTES = 256 * 1024**2  # auto dtype: float32 ring buffers up to this size


@dataclass
class StitchStats:
    """What a stitching run used: buffer sizes in bytes, window counts, fallbacks taken."""

    n_windows: int = 0
    n_groups: int = 0
    accumulator_bytes: int = 0
    accumulator_dtype: str = ""
    output_bytes: int = 0
    stitch_device: str = ""
    sw_batch_size: int = 0
    fallbacks: list[str] = field(default_factory=list)
    tta_disagreement: float | None = None
    precision: str = ""  # the network's compute precision: float32, bfloat16 (CPU) or float16 (CUDA)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles): bf16 autocast is
    then 2-3x faster than float32 for convolutions. Elsewhere bf16 is emulated and slower."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if callable(check))


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """Reduced precision for the network under ``amp``: float16 on CUDA, bfloat16 on a CPU with
    native bf16, else None (float32). Stitching always accumulates in float32/float16 as documented."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Step between window starts per axis (voxels): ``int(roi * (1 - overlap))``, at least 1."""
    out = []
    for img, roi in zip(image_size, roi_size, strict=False):
        out.append(roi if roi == img else max(int(roi * (1 - overlap)), 1))
    return tuple(out)


def window_starts(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[tuple[int, ...]]:
    """Start index of every window (the same grid as MONAI's ``dense_patch_slices``)."""
    from monai.data.utils import dense_patch_slices

    interval = scan_interval(image_size, roi_size, overlap)
    return [tuple(s.start for s in sl) for sl in dense_patch_slices(image_size, roi_size, interval)]


def _ring_pieces(start: int, stop: int, width: int) -> list[tuple[slice, slice]]:
    """Split absolute range [start, stop) into (ring slice, local slice) pieces modulo ``width``."""
    pieces = []
    pos = start
    while pos < stop:
        r0 = pos % width
        n = min(stop - pos, width - r0)
        pieces.append((slice(r0, r0 + n), slice(pos - start, pos - start + n)))
        pos += n
    return pieces


def _flip_dims(n_spatial: int, tta: bool) -> list[tuple[int, ...]]:
    if not tta:
        return [()]
    return [()] + [(2 + d,) for d in range(n_spatial)]


def _network_output(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict) and out:
        return next(iter(out.values()))
    raise ModelError(f"the network returned {type(out).__name__}; expected a tensor of class scores")


def _label_dtype(n_classes: int) -> torch.dtype:
    return torch.uint8 if n_classes <= 256 else torch.int16 if n_classes <= 32767 else torch.int32


def _reduce(acc: torch.Tensor) -> torch.Tensor:
    """Class scores (C, ...) -> labels: argmax, or ``score > 0`` for a single channel.

    The argmax runs as a running maximum over the class planes: each plane is a plain strided
    view, where ``torch.argmax(dim=0)`` on the (non-contiguous) ring-buffer view walks the class
    axis voxel by voxel, about 10x slower on CPU. Ties keep the lowest class, as argmax does.
    """
    if acc.shape[0] == 1:
        return (acc[0] > 0).to(torch.uint8)
    labels = torch.zeros(acc.shape[1:], dtype=_label_dtype(acc.shape[0]), device=acc.device)
    best = acc[0].clone()
    for c in range(1, acc.shape[0]):
        plane = acc[c]
        labels.masked_fill_(plane > best, c)
        torch.maximum(best, plane, out=best)
    return labels


def sliding_window_labels(
    image: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    roi_size: Sequence[int],
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 4,
    sigma_scale: float = 0.125,
    mode: str = "gaussian",
    device: str | torch.device = "cpu",
    stitch_device: str | torch.device | None = None,
    accumulate_dtype: torch.dtype | None = None,
    amp: bool = True,
    channels_last: bool = True,
    tta: bool = False,
    progress: bool = True,
    stats: StitchStats | None = None,
) -> torch.Tensor:
    """Segment ``image`` window by window and return the label map (argmax over classes).

    Args:
        image: ``(C_in, *spatial)`` or ``(1, C_in, *spatial)`` float tensor (on any device).
        predictor: network or callable mapping ``(B, C_in, *roi)`` to ``(B, C_out, *roi)`` scores
            (logits; a tuple/list output uses its first element).
        roi_size: window size in voxels; values <= 0 take the full image extent (as in MONAI).
        overlap: fraction of a window shared with its neighbour (0 <= overlap < 1).
        sw_batch_size: windows per network call.
        sigma_scale: Gaussian sigma as a fraction of the window size (``mode="gaussian"``).
        mode: ``"gaussian"`` or ``"constant"`` blending.
        device: where the network runs (``"cpu"``, ``"cuda"``, ``torch.device``).
        stitch_device: where the ring buffer lives; None: ``device`` if it fits there, else CPU.
        accumulate_dtype: ring-buffer dtype; None: float32 while the float32 ring stays under
            ``FLOAT32_RING_BYTES`` (few classes: exact sums, fastest), else float16.
        amp: reduced precision for the network where the hardware has it natively: float16 on
            CUDA, bfloat16 on a CPU with AVX512-BF16/AMX (:func:`autocast_dtype`); float32 elsewhere
            or with ``amp=False``. ``stats.precision`` records what was used.
        channels_last: channels_last(_3d) memory format on CUDA.
        tta: flip test-time augmentation per window (identity + one flip per spatial axis);
            softmax (sigmoid for one channel) probabilities are averaged. The fraction of
            voxels whose label differs from the un-augmented prediction goes to
            ``stats.tta_disagreement``.
        progress: tqdm bar over windows (also off when ``MEDSEG_PROGRESS=0``).
        stats: optional :class:`StitchStats` filled in place.

    Returns:
        A CPU tensor of shape ``spatial`` holding class indices (uint8 for <= 256 classes).
    """
    if image.ndim < 3:
        raise ModelError(f"image must be (C, *spatial) with 2 or 3 spatial axes, got shape {tuple(image.shape)}")
    x = image[None] if image.ndim in (3, 4) and (image.ndim - 1) == len(roi_size) else image
    if x.ndim - 2 != len(roi_size) or x.shape[0] != 1:
        raise ModelError(f"roi_size {tuple(roi_size)} does not fit an image of shape {tuple(image.shape)}")
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    if sw_batch_size < 1:
        raise ConfigError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
    stats = stats if stats is not None else StitchStats()
    device = torch.device(device)
    bs = int(sw_batch_size)
    stitch = torch.device(stitch_device) if stitch_device is not None else None
    tried_cpu_stitch = stitch is not None and stitch.type == "cpu"
    while True:
        try:
            return _run(x, predictor, roi_size, overlap, bs, sigma_scale, mode, device, stitch,
                        accumulate_dtype, amp, channels_last, tta, progress, stats)
        except torch.cuda.OutOfMemoryError:
            if device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if bs > 1:
                bs = max(bs // 2, 1)
                stats.fallbacks.append(f"cuda out of memory: sw_batch_size -> {bs}")
            elif not tried_cpu_stitch:
                stitch, tried_cpu_stitch = torch.device("cpu"), True
                stats.fallbacks.append("cuda out of memory: stitching on the CPU")
            else:
                raise ModelError("the GPU ran out of memory even for one window with CPU stitching; "
                                 "use a smaller roi_size or --device cpu") from None
            log.warning(stats.fallbacks[-1])


def _run(x, predictor, roi_size, overlap, bs, sigma_scale, mode, device, stitch, acc_dtype, amp,
         channels_last, tta, progress, stats: StitchStats) -> torch.Tensor:
    import torch.nn.functional as F
    from monai.data.utils import compute_importance_map
    from tqdm.auto import tqdm

    n_sp = x.ndim - 2
    image_size_ = tuple(int(s) for s in x.shape[2:])
    roi = tuple(int(r) if r is not None and int(r) > 0 else s for r, s in zip(roi_size, image_size_, strict=False))
    image_size = tuple(max(s, r) for s, r in zip(image_size_, roi, strict=False))
    pad = []
    for d in reversed(range(n_sp)):
        diff = max(roi[d] - image_size_[d], 0)
        pad.extend([diff // 2, diff - diff // 2])
    on_cuda = device.type == "cuda"
    x = x.to(device) if on_cuda and _fits(x.nbytes * 2, device) else x
    if any(pad):
        x = F.pad(x, pad=pad, mode="constant", value=0.0)
    starts = window_starts(image_size, roi, overlap)
    starts.sort(key=lambda s: (s[-1], s))
    groups: list[list[tuple[int, ...]]] = []
    for s in starts:
        if groups and groups[-1][0][-1] == s[-1]:
            groups[-1].append(s)
        else:
            groups.append([s])
    wmap = compute_importance_map(roi, mode=mode, sigma_scale=sigma_scale, device=device,
                                  dtype=torch.float32)[None, None]
    ring_w = roi[-1]
    # most windows that can cover one voxel: a float16 sum stays finite below _FP16_MAX / max_cover
    interval = scan_interval(image_size, roi, overlap)
    max_cover = math.prod(math.ceil(r / i) for r, i in zip(roi, interval, strict=True))
    fp16_limit = _FP16_MAX / max_cover
    flips = _flip_dims(n_sp, tta)

    amp_dtype = autocast_dtype(device, amp)
    stats.precision = str(amp_dtype or torch.float32).replace("torch.", "")
    net_dtype = x.dtype
    if isinstance(predictor, torch.nn.Module):
        p0 = next(iter(predictor.parameters()), None)
        net_dtype = p0.dtype if p0 is not None else x.dtype
        if on_cuda and channels_last:
            predictor = predictor.to(memory_format=torch.channels_last_3d if n_sp == 3 else torch.channels_last)
    mem_fmt = (torch.channels_last_3d if n_sp == 3 else torch.channels_last) if on_cuda and channels_last else None

    def run_net(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device=device, dtype=net_dtype)
        if mem_fmt is not None:
            batch = batch.contiguous(memory_format=mem_fmt)
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32,
                                             enabled=amp_dtype is not None):
            out = _network_output(predictor(batch))
        if tuple(out.shape[2:]) != roi:
            raise ModelError(f"the network changed the window size {roi} to {tuple(out.shape[2:])}; "
                             "use a network whose output grid equals its input grid")
        return out.float()

    out_labels = None
    ref_labels = None  # un-augmented labels when tta is on
    acc = ref_acc = None
    n_classes = 0
    bar = tqdm(total=len(starts), desc="sliding window", unit="win", disable=not progress_enabled(progress))
    try:
        for gi, group in enumerate(groups):
            g_start = group[0][-1]
            for b0 in range(0, len(group), bs):
                chunk = group[b0:b0 + bs]
                batch = torch.cat([x[(slice(None), slice(None), *[slice(s, s + r) for s, r in zip(st, roi, strict=False)])]
                                   for st in chunk])
                preds = []
                for fd in flips:
                    pr = run_net(torch.flip(batch, fd) if fd else batch)
                    preds.append(torch.flip(pr, fd) if fd else pr)
                if tta:
                    probs = [torch.softmax(p, 1) if p.shape[1] > 1 else torch.sigmoid(p) - 0.5 for p in preds]
                    ref_pred = probs[0]
                    pred = torch.stack(probs).mean(0)
                else:
                    pred, ref_pred = preds[0], None
                pred = pred.mul_(wmap)  # the network's fresh output (or our flip average): ours to modify
                if acc is None:
                    n_classes = pred.shape[1]
                    acc_shape = (n_classes, *image_size[:-1], ring_w)
                    if acc_dtype is None:
                        ring32 = math.prod(acc_shape) * 4 * (2 if tta else 1)
                        acc_dtype = torch.float32 if ring32 <= FLOAT32_RING_BYTES else torch.float16
                    stitch_dev = stitch if stitch is not None else _pick_stitch_device(
                        device, acc_shape, acc_dtype, tta)
                    acc = torch.zeros(acc_shape, dtype=acc_dtype, device=stitch_dev)
                    ref_acc = torch.zeros_like(acc) if tta else None
                    out_labels = torch.zeros(image_size, dtype=_label_dtype(n_classes))
                    ref_labels = torch.zeros_like(out_labels) if tta else None
                    stats.accumulator_bytes = acc.nbytes * (2 if tta else 1)
                    stats.accumulator_dtype = str(acc_dtype).replace("torch.", "")
                    stats.output_bytes = out_labels.nbytes * (2 if tta else 1)
                    stats.stitch_device = str(stitch_dev)
                if tta:
                    ref_pred = ref_pred.mul_(wmap)
                if acc.dtype == torch.float16:
                    pred = _shift(pred)
                    ref_pred = _shift(ref_pred) if tta else None
                    if _magnitude(pred) > fp16_limit or (tta and _magnitude(ref_pred) > fp16_limit):
                        acc = acc.float()
                        ref_acc = ref_acc.float() if ref_acc is not None else None
                        stats.fallbacks.append("scores beyond float16 range: accumulating in float32")
                        stats.accumulator_dtype = "float32"
                        stats.accumulator_bytes = acc.nbytes * (2 if tta else 1)
                        log.info(stats.fallbacks[-1])
                _accumulate(acc, pred, chunk, roi, ring_w)
                if tta:
                    _accumulate(ref_acc, ref_pred, chunk, roi, ring_w)
                bar.update(len(chunk))
            done_to = groups[gi + 1][0][-1] if gi + 1 < len(groups) else image_size[-1]
            for ring_sl, local in _ring_pieces(g_start, done_to, ring_w):
                k0 = g_start + local.start
                k_sl = slice(k0, k0 + (local.stop - local.start))
                _finish(acc, ring_sl, out_labels, k_sl)
                if tta:
                    _finish(ref_acc, ring_sl, ref_labels, k_sl)
    finally:
        bar.close()
    stats.n_windows, stats.n_groups, stats.sw_batch_size = len(starts), len(groups), bs
    crop = tuple(slice(p_lo, p_lo + s) for p_lo, s in zip(
        [pad[2 * (n_sp - 1 - d)] for d in range(n_sp)], image_size_, strict=False))
    out_labels = out_labels[crop]
    if tta:
        ref_labels = ref_labels[crop]
        stats.tta_disagreement = float((out_labels != ref_labels).float().mean())
    return out_labels.contiguous()


def _finish(acc: torch.Tensor, ring_sl: slice, out: torch.Tensor, k_sl: slice,
            chunk_bytes: int = 64 * 1024**2) -> None:
    """Reduce finished ring positions to labels in row chunks (bounded temporaries), then zero them."""
    row_bytes = acc[:, :1, ..., ring_sl].numel() * acc.element_size()
    step = max(1, chunk_bytes // max(row_bytes, 1))
    for i0 in range(0, acc.shape[1], step):
        rows = slice(i0, i0 + step)
        out[rows, ..., k_sl] = _reduce(acc[:, rows, ..., ring_sl]).cpu()
    acc[..., ring_sl] = 0


def _shift(weighted: torch.Tensor) -> torch.Tensor:
    """Subtract each voxel's largest class score in place (several classes only).

    The argmax of a sum is unchanged when every class at a voxel is shifted by the same amount,
    and the shifted top scores sit near 0, where float16 resolves far finer steps: near ties
    between the leading classes survive float16 accumulation.
    """
    if weighted.shape[1] == 1:
        return weighted
    return weighted.sub_(weighted.amax(dim=1, keepdim=True))


def _magnitude(t: torch.Tensor) -> float:
    """Largest absolute value, without an ``abs()`` copy of a big tensor (shifted scores are <= 0)."""
    if t.shape[1] > 1:
        return -float(t.amin())
    return max(float(t.amax()), -float(t.amin()))


def _accumulate(acc: torch.Tensor, pred: torch.Tensor, chunk, roi, ring_w: int) -> None:
    # one conversion of the whole batch: a same-dtype add is ~2x faster on CPU than a mixed one
    pred = pred.to(device=acc.device, dtype=acc.dtype)
    for p, st in zip(pred, chunk, strict=False):
        lead = tuple(slice(s, s + r) for s, r in zip(st[:-1], roi[:-1], strict=False))
        for ring_sl, local in _ring_pieces(st[-1], st[-1] + roi[-1], ring_w):
            acc[(slice(None), *lead, ring_sl)] += p[..., local]


def _fits(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes < 0.6 * free


def _pick_stitch_device(device: torch.device, shape, dtype, tta: bool) -> torch.device:
    nbytes = math.prod(shape) * torch.tensor([], dtype=dtype).element_size() * (2 if tta else 1)
    return device if _fits(nbytes, device) else torch.device("cpu")
