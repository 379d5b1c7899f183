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
from dataclasses import dataclass, field, replace

import torch

from medseg.errors import ConfigError, ModelError
from medseg.inference.stitch import RingBuffer, _ring_pieces  # noqa: F401  (_ring_pieces: tests)
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
    stitch = torch.device(stitch_device) if stitch_device is not None else None
    cfg = WindowSettings(roi_size=tuple(roi_size), overlap=overlap, sw_batch_size=int(sw_batch_size),
                         sigma_scale=sigma_scale, mode=mode, device=device, stitch_device=stitch,
                         accumulate_dtype=accumulate_dtype, amp=amp, channels_last=channels_last, tta=tta,
                         progress=progress)
    tried_cpu_stitch = stitch is not None and stitch.type == "cpu"
    while True:
        try:
            return _run(x, predictor, cfg, stats)
        except torch.cuda.OutOfMemoryError:
            if device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if cfg.sw_batch_size > 1:
                cfg = replace(cfg, sw_batch_size=max(cfg.sw_batch_size // 2, 1))
                stats.fallbacks.append(f"cuda out of memory: sw_batch_size -> {cfg.sw_batch_size}")
            elif not tried_cpu_stitch:
                cfg, tried_cpu_stitch = replace(cfg, stitch_device=torch.device("cpu")), True
                stats.fallbacks.append("cuda out of memory: stitching on the CPU")
            else:
                raise ModelError("the GPU ran out of memory even for one window with CPU stitching; "
                                 "use a smaller roi_size or --device cpu") from None
            log.warning(stats.fallbacks[-1])


@dataclass(frozen=True)
class WindowSettings:
    """The options of one :func:`sliding_window_labels` run (see there); the CUDA out-of-memory
    retries change ``sw_batch_size`` and ``stitch_device`` only."""

    roi_size: tuple[int | None, ...]
    overlap: float = 0.25
    sw_batch_size: int = 4
    sigma_scale: float = 0.125
    mode: str = "gaussian"
    device: torch.device = torch.device("cpu")
    stitch_device: torch.device | None = None
    accumulate_dtype: torch.dtype | None = None
    amp: bool = True
    channels_last: bool = True
    tta: bool = False
    progress: bool = True


@dataclass(frozen=True)
class _Layout:
    """Where the windows go: the image's spatial ``size``, the window ``roi``, the ``padded``
    size (at least one window per axis), ``pad`` in ``F.pad`` order, and the window starts grouped
    by their start along the last axis (ascending: the order the ring buffer needs)."""

    size: tuple[int, ...]
    roi: tuple[int, ...]
    padded: tuple[int, ...]
    pad: tuple[int, ...]
    groups: tuple[tuple[tuple[int, ...], ...], ...]
    fp16_limit: float

    @property
    def n_windows(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def crop(self) -> tuple[slice, ...]:
        """The image inside the padded grid."""
        n = len(self.size)
        return tuple(slice(self.pad[2 * (n - 1 - d)], self.pad[2 * (n - 1 - d)] + s) for d, s in enumerate(self.size))

    def done_to(self, gi: int) -> int:
        """After group ``gi``, every position before this one (last axis) is final."""
        return self.groups[gi + 1][0][-1] if gi + 1 < len(self.groups) else self.padded[-1]


def _layout(size: tuple[int, ...], cfg: WindowSettings) -> _Layout:
    n_sp = len(size)
    roi = tuple(int(r) if r is not None and int(r) > 0 else s for r, s in zip(cfg.roi_size, size, strict=False))
    padded = tuple(max(s, r) for s, r in zip(size, roi, strict=False))
    pad: list[int] = []
    for d in reversed(range(n_sp)):
        diff = max(roi[d] - size[d], 0)
        pad.extend([diff // 2, diff - diff // 2])
    starts = window_starts(padded, roi, cfg.overlap)
    starts.sort(key=lambda s: (s[-1], s))
    groups: list[list[tuple[int, ...]]] = []
    for s in starts:
        if groups and groups[-1][0][-1] == s[-1]:
            groups[-1].append(s)
        else:
            groups.append([s])
    # most windows that can cover one voxel: a float16 sum stays finite below _FP16_MAX / max_cover
    interval = scan_interval(padded, roi, cfg.overlap)
    max_cover = math.prod(math.ceil(r / i) for r, i in zip(roi, interval, strict=True))
    return _Layout(size=size, roi=roi, padded=padded, pad=tuple(pad), groups=tuple(tuple(g) for g in groups),
                   fp16_limit=_FP16_MAX / max_cover)


def _network_runner(predictor, x_dtype: torch.dtype, cfg: WindowSettings, roi: tuple[int, ...],
                    stats: StitchStats) -> Callable[[torch.Tensor], torch.Tensor]:
    """``batch -> float32 scores``: the network on ``cfg.device`` under autocast (where the
    hardware has reduced precision natively) and channels_last on CUDA; the output must keep the
    window's grid. Records the precision in ``stats``."""
    device = cfg.device
    n_sp = len(roi)
    amp_dtype = autocast_dtype(device, cfg.amp)
    stats.precision = str(amp_dtype or torch.float32).replace("torch.", "")
    use_cl = device.type == "cuda" and cfg.channels_last
    mem_fmt = (torch.channels_last_3d if n_sp == 3 else torch.channels_last) if use_cl else None
    net_dtype = x_dtype
    if isinstance(predictor, torch.nn.Module):
        p0 = next(iter(predictor.parameters()), None)
        net_dtype = p0.dtype if p0 is not None else x_dtype
        if mem_fmt is not None:
            predictor = predictor.to(memory_format=mem_fmt)

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

    return run_net


def _weighted_scores(run_net, batch: torch.Tensor, tta: bool, wmap: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Importance-weighted scores of a window batch, and with ``tta`` the un-augmented ones:
    with TTA, softmax (sigmoid - 0.5 for one channel) probabilities averaged over the flips."""
    preds = []
    for fd in _flip_dims(batch.ndim - 2, tta):
        pr = run_net(torch.flip(batch, fd) if fd else batch)
        preds.append(torch.flip(pr, fd) if fd else pr)
    if not tta:  # the network's fresh output: ours to modify
        return preds[0].mul_(wmap), None
    probs = [torch.softmax(p, 1) if p.shape[1] > 1 else torch.sigmoid(p) - 0.5 for p in preds]
    return torch.stack(probs).mean(0).mul_(wmap), probs[0].mul_(wmap)


def _new_ring(n_classes: int, layout: _Layout, cfg: WindowSettings, stats: StitchStats) -> RingBuffer:
    """The ring buffer, once the number of classes is known: float32 while it stays under
    ``FLOAT32_RING_BYTES`` (unless ``cfg.accumulate_dtype`` says), on ``cfg.stitch_device`` or
    the network's device when it fits there (else the CPU)."""
    shape = (n_classes, *layout.padded[:-1], layout.roi[-1])
    dtype = cfg.accumulate_dtype
    if dtype is None:
        ring32 = math.prod(shape) * 4 * (2 if cfg.tta else 1)
        dtype = torch.float32 if ring32 <= FLOAT32_RING_BYTES else torch.float16
    device = cfg.stitch_device if cfg.stitch_device is not None else _pick_stitch_device(
        cfg.device, shape, dtype, cfg.tta)
    ring = RingBuffer(n_classes, layout.padded, layout.roi[-1], dtype=dtype, device=device, tta=cfg.tta,
                      fp16_limit=layout.fp16_limit)
    stats.accumulator_bytes = ring.accumulator_bytes
    stats.accumulator_dtype = str(dtype).replace("torch.", "")
    stats.output_bytes = ring.output_bytes
    stats.stitch_device = str(device)
    return ring


def _run(x: torch.Tensor, predictor, cfg: WindowSettings, stats: StitchStats) -> torch.Tensor:
    """One pass over the windows of ``x`` ``(1, C, *spatial)``, group by group along the last axis."""
    import torch.nn.functional as F
    from monai.data.utils import compute_importance_map
    from tqdm.auto import tqdm

    layout = _layout(tuple(int(s) for s in x.shape[2:]), cfg)
    roi, bs = layout.roi, cfg.sw_batch_size
    if cfg.device.type == "cuda" and _fits(x.nbytes * 2, cfg.device):
        x = x.to(cfg.device)
    if any(layout.pad):
        x = F.pad(x, pad=list(layout.pad), mode="constant", value=0.0)
    wmap = compute_importance_map(roi, mode=cfg.mode, sigma_scale=cfg.sigma_scale, device=cfg.device,
                                  dtype=torch.float32)[None, None]
    run_net = _network_runner(predictor, x.dtype, cfg, roi, stats)
    ring: RingBuffer | None = None
    bar = tqdm(total=layout.n_windows, desc="sliding window", unit="win", disable=not progress_enabled(cfg.progress))
    try:
        for gi, group in enumerate(layout.groups):
            for b0 in range(0, len(group), bs):
                chunk = group[b0:b0 + bs]
                batch = torch.cat([x[(slice(None), slice(None), *[slice(s, s + r) for s, r in zip(st, roi, strict=False)])]
                                   for st in chunk])
                pred, ref_pred = _weighted_scores(run_net, batch, cfg.tta, wmap)
                if ring is None:
                    ring = _new_ring(pred.shape[1], layout, cfg, stats)
                if ring.add(pred, ref_pred, chunk, roi):
                    stats.fallbacks.append("scores beyond float16 range: accumulating in float32")
                    stats.accumulator_dtype = "float32"
                    stats.accumulator_bytes = ring.accumulator_bytes
                    log.info(stats.fallbacks[-1])
                bar.update(len(chunk))
            ring.finish(group[0][-1], layout.done_to(gi))
    finally:
        bar.close()
    stats.n_windows, stats.n_groups, stats.sw_batch_size = layout.n_windows, len(layout.groups), bs
    out_labels = ring.labels[layout.crop]
    if cfg.tta:
        stats.tta_disagreement = float((out_labels != ring.ref_labels[layout.crop]).float().mean())
    return out_labels.contiguous()


def _fits(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes < 0.6 * free


def _pick_stitch_device(device: torch.device, shape, dtype, tta: bool) -> torch.device:
    nbytes = math.prod(shape) * torch.tensor([], dtype=dtype).element_size() * (2 if tta else 1)
    return device if _fits(nbytes, device) else torch.device("cpu")
