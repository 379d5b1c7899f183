"""The ring buffer of :func:`medseg.inference.sliding_window.sliding_window_labels`.

Importance-weighted window scores are summed into a buffer only ``roi[-1]`` wide along the last
spatial axis (positions taken modulo that width); a position whose windows are all in is reduced
to its label at once (argmax, or ``score > 0`` for one channel) and its slots are zeroed for reuse.
With TTA a second buffer holds the un-augmented scores (for the disagreement fraction).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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


class RingBuffer:
    """Score sums for ``n_classes`` over a padded image of ``size`` voxels, ``width`` positions
    deep along the last axis, and the label map they reduce to (on the CPU).

    ``fp16_limit``: the largest score a window may add while the sums stay finite in float16
    (beyond it the buffer widens to float32, see :meth:`add`)."""

    def __init__(self, n_classes: int, size: Sequence[int], width: int, *, dtype: torch.dtype,
                 device: torch.device, tta: bool, fp16_limit: float) -> None:
        self.width = int(width)
        self.fp16_limit = float(fp16_limit)
        self.acc = torch.zeros((n_classes, *size[:-1], self.width), dtype=dtype, device=device)
        self.ref_acc = torch.zeros_like(self.acc) if tta else None
        self.labels = torch.zeros(tuple(size), dtype=_label_dtype(n_classes))
        self.ref_labels = torch.zeros_like(self.labels) if tta else None

    @property
    def copies(self) -> int:
        return 1 if self.ref_acc is None else 2

    @property
    def accumulator_bytes(self) -> int:
        return self.acc.nbytes * self.copies

    @property
    def output_bytes(self) -> int:
        return self.labels.nbytes * self.copies

    def add(self, pred: torch.Tensor, ref_pred: torch.Tensor | None, chunk, roi) -> bool:
        """Add the weighted scores ``pred`` (and the un-augmented ``ref_pred``) of the windows
        starting at ``chunk``; True when the float16 buffer had to widen to float32 first."""
        widened = False
        if self.acc.dtype == torch.float16:
            pred = _shift(pred)
            ref_pred = _shift(ref_pred) if ref_pred is not None else None
            if _magnitude(pred) > self.fp16_limit or (ref_pred is not None
                                                      and _magnitude(ref_pred) > self.fp16_limit):
                self.acc = self.acc.float()
                self.ref_acc = self.ref_acc.float() if self.ref_acc is not None else None
                widened = True
        _accumulate(self.acc, pred, chunk, roi, self.width)
        if ref_pred is not None:
            _accumulate(self.ref_acc, ref_pred, chunk, roi, self.width)
        return widened

    def finish(self, start: int, stop: int) -> None:
        """Positions ``[start, stop)`` along the last axis are complete: reduce them to labels."""
        for ring_sl, local in _ring_pieces(start, stop, self.width):
            k0 = start + local.start
            k_sl = slice(k0, k0 + (local.stop - local.start))
            _finish(self.acc, ring_sl, self.labels, k_sl)
            if self.ref_acc is not None:
                _finish(self.ref_acc, ring_sl, self.ref_labels, k_sl)
