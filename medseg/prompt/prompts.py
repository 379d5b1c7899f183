"""What a prompt is, in the voxel indices of the array it goes with (:class:`Prompts`), and how
every method's raw mask is finished (:func:`finish`): the components the prompts point at, holes
filled. Shared by the classical methods (:mod:`medseg.prompt.methods`) and the network
(:mod:`medseg.prompt.network`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prompts:
    """Prompts in voxel indices of the array they go with."""

    positive: list[tuple[int, ...]] = field(default_factory=list)
    negative: list[tuple[int, ...]] = field(default_factory=list)
    box: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    extreme: list[tuple[int, ...]] = field(default_factory=list)
    scribbles: np.ndarray | None = None  # 0 unmarked, 1 object, 2 background
    previous: np.ndarray | None = None  # bool

    @property
    def object_points(self) -> list[tuple[int, ...]]:
        return list(self.positive) + list(self.extreme)

    def crop(self, lo: Sequence[int], hi: Sequence[int]) -> Prompts:
        """The same prompts in the crop ``[lo, hi]`` (inclusive); points outside it are dropped."""
        lo_a, hi_a = np.asarray(lo), np.asarray(hi)
        sl = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))

        def inside(pts):
            return [tuple(int(v) for v in np.asarray(p) - lo_a) for p in pts
                    if np.all(np.asarray(p) >= lo_a) and np.all(np.asarray(p) <= hi_a)]

        box = None
        if self.box is not None:
            b0 = np.clip(np.asarray(self.box[0]) - lo_a, 0, hi_a - lo_a)
            b1 = np.clip(np.asarray(self.box[1]) - lo_a, 0, hi_a - lo_a)
            box = (tuple(int(v) for v in b0), tuple(int(v) for v in b1))
        return Prompts(inside(self.positive), inside(self.negative), box, inside(self.extreme),
                       None if self.scribbles is None else self.scribbles[sl],
                       None if self.previous is None else self.previous[sl])


def _core(shape, box) -> np.ndarray:
    """The middle half of the box along each axis (at least its centre voxel)."""
    out = np.zeros(shape, dtype=bool)
    sl = []
    for a, b in zip(box[0], box[1], strict=True):
        q = (b - a) / 4.0
        lo, hi = int(np.ceil(a + q)), int(np.floor(b - q))
        if hi < lo:
            lo = hi = (a + b) // 2
        sl.append(slice(lo, hi + 1))
    out[tuple(sl)] = True
    return out


def finish(mask: np.ndarray, prompts: Prompts, spacing) -> np.ndarray:
    """Components holding an object seed (else the one filling most of the box's middle half, else
    the largest), holes filled."""
    from scipy import ndimage

    if not mask.any():
        return mask
    cc, n = ndimage.label(mask)
    keep = {int(cc[p]) for p in prompts.object_points if cc[p] > 0}
    if prompts.scribbles is not None:
        keep |= {int(v) for v in np.unique(cc[prompts.scribbles == 1]) if v > 0}
    if prompts.previous is not None:
        keep |= {int(v) for v in np.unique(cc[prompts.previous & mask]) if v > 0}
    if not keep and prompts.box is not None:
        in_core = np.bincount(cc[_core(mask.shape, prompts.box)].ravel(), minlength=n + 1)[1:]
        if in_core.max() > 0:
            keep = {int(np.argmax(in_core)) + 1}
    if not keep:
        keep = {int(np.argmax(np.bincount(cc.ravel())[1:])) + 1}
    out = np.isin(cc, sorted(keep))
    return ndimage.binary_fill_holes(out)
