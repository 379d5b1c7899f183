"""The grid the page is sent, the editable label map and its history, and the checked crops that
carry changes between the page and the server.

* :class:`DisplayGrid`: the source grid, or, for a study larger than ``max_voxels``, every
  ``f``-th voxel along each axis (``f`` the smallest integer that fits; the affine becomes
  ``A @ diag(f, f, f, 1)``, so a shown voxel sits exactly on the source voxel it samples). The page
  is told when the volume it shows is reduced. Prompts travel in world mm and run on the source
  grid; a brush stroke on a reduced grid sets the ``f x f x f`` blocks of the voxels it changed.
* :class:`EditableMask`: the label map being built (uint8 on the source grid) with undo/redo kept as
  the changed box and its voxels before and after (not whole copies).
* :func:`crop_nifti` / :func:`read_crop`: a box of the display grid as gzip NIfTI whose affine is the
  grid's shifted to the box's first voxel; :func:`read_crop` takes one from the page and checks it
  before anything uses it: size of the upload and of what it unpacks to, NIfTI-1 uint8 3D, the
  affine's rotation and spacing equal to the grid's, its origin on a whole voxel of the grid, the box
  inside the grid, and its values in the allowed set.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import ConfigError, GeometryError

MAX_UPLOAD_BYTES = 64 << 20  # a gzip crop from the page; a full 512x512x300 binary mask packs to ~1 MiB
DEFAULT_MAX_VOXELS = 1 << 25  # 33.5 M voxels (512 x 512 x 128) are sent whole; larger studies reduced
MAX_HISTORY = 50
FULL_SIDE = 160  # a full-resolution crop of a reduced study: at most this many voxels along each axis
Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # inclusive (lo, hi) voxel indices


def reduction_factor(shape: Sequence[int], max_voxels: int) -> tuple[int, ...]:
    """The smallest integer ``f`` with ``prod(ceil(s / f)) <= max_voxels`` (axes of one voxel stay 1)."""
    if max_voxels < 1:
        raise ConfigError("--max-voxels must be at least 1")
    f = 1
    while math.prod(math.ceil(s / f) if s > 1 else 1 for s in shape) > max_voxels:
        f += 1
    return tuple(f if s > 1 else 1 for s in shape)


@dataclass(frozen=True)
class DisplayGrid:
    """The grid of what the page shows: ``shape`` (3 axes; a 2D image has a third axis of 1),
    ``affine`` (voxel -> RAS mm) and the per-axis ``factor`` from the source grid."""

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    factor: tuple[int, int, int]

    @classmethod
    def for_image(cls, shape3: Sequence[int], affine: np.ndarray, max_voxels: int = DEFAULT_MAX_VOXELS) -> DisplayGrid:
        shape3 = tuple(int(s) for s in shape3)
        return cls(shape3, np.asarray(affine, dtype=np.float64), reduction_factor(shape3, max_voxels))  # type: ignore[arg-type]

    @property
    def reduced(self) -> bool:
        return any(f > 1 for f in self.factor)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(math.ceil(s / f) for s, f in zip(self.source_shape, self.factor, strict=True))  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        return self.source_affine @ np.diag([*map(float, self.factor), 1.0])

    def sample(self, arr3: np.ndarray) -> np.ndarray:
        """The display-grid voxels of a source-grid array (every ``f``-th voxel)."""
        f = self.factor
        return arr3[:: f[0], :: f[1], :: f[2]]

    def to_display(self, box: Box) -> Box | None:
        """The display voxels inside a source-grid box (None when it holds none)."""
        lo = tuple(-(-a // f) for a, f in zip(box[0], self.factor, strict=True))
        hi = tuple(b // f for b, f in zip(box[1], self.factor, strict=True))
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            return None
        return lo, hi  # type: ignore[return-value]

    def box_affine(self, lo: Sequence[int]) -> np.ndarray:
        a = self.affine.copy()
        a[:3, 3] = a[:3, :3] @ np.asarray(lo, dtype=np.float64) + a[:3, 3]
        return a

    def info(self) -> dict:
        return {"shape": list(self.shape), "factor": list(self.factor), "reduced": self.reduced,
                "affine": [[float(v) for v in row] for row in self.affine]}


def full_resolution_box(shape3: Sequence[int], affine: np.ndarray, centre_mm: Sequence[float],
                        side: int = FULL_SIDE) -> Box:
    """The source-grid box (inclusive) of at most ``side`` voxels per axis centred, as far as the
    grid allows, on the voxel nearest ``centre_mm`` (RAS mm); a position outside the grid is refused."""
    c = np.asarray(centre_mm, dtype=np.float64)
    if c.shape != (3,) or not np.isfinite(c).all():
        raise ConfigError("a position is three finite numbers (x, y, z in mm)")
    if not 1 <= int(side) <= FULL_SIDE:
        raise ConfigError(f"a full-resolution crop has 1 to {FULL_SIDE} voxels per axis")
    ijk = np.linalg.solve(np.asarray(affine, dtype=np.float64)[:3, :3], c - np.asarray(affine)[:3, 3])
    n = np.asarray(shape3, dtype=np.int64)
    if np.any(ijk < -0.5) or np.any(ijk > n - 0.5):
        raise ConfigError("the position is outside the image")
    k = np.minimum(n, int(side))
    lo = np.clip(np.rint(ijk).astype(np.int64) - k // 2, 0, n - k)
    return tuple(int(v) for v in lo), tuple(int(v) for v in lo + k - 1)  # type: ignore[return-value]


def _slices(box: Box) -> tuple[slice, ...]:
    return tuple(slice(a, b + 1) for a, b in zip(box[0], box[1], strict=True))


def changed_box(a: np.ndarray, b: np.ndarray) -> Box | None:
    """The smallest box holding every voxel where ``a`` and ``b`` differ (None: equal)."""
    d = a != b
    if not d.any():
        return None
    lo, hi = [], []
    for ax in range(d.ndim):
        idx = np.flatnonzero(d.any(axis=tuple(x for x in range(d.ndim) if x != ax)))
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]))
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


class EditableMask:
    """A uint8 label map on the source grid (3 axes) with undo / redo of each change."""

    def __init__(self, shape3: Sequence[int], initial: np.ndarray | None = None) -> None:
        self.array = np.zeros(tuple(shape3), dtype=np.uint8) if initial is None else np.array(initial, dtype=np.uint8)
        self._undo: list[tuple[Box, np.ndarray, np.ndarray]] = []
        self._redo: list[tuple[Box, np.ndarray, np.ndarray]] = []

    def replace(self, new: np.ndarray) -> Box | None:
        """Make ``new`` (same shape) the label map; returns the changed box."""
        box = changed_box(self.array, new)
        if box is not None:
            self.set_box(box, new[_slices(box)])
        return box

    def set_box(self, box: Box, values: np.ndarray) -> Box | None:
        sl = _slices(box)
        old = self.array[sl].copy()
        if np.array_equal(old, values):
            return None
        self.array[sl] = values
        self._undo.append((box, old, np.array(values, dtype=np.uint8)))
        del self._undo[:-MAX_HISTORY]
        self._redo.clear()
        return box

    def undo(self) -> Box:
        if not self._undo:
            raise ConfigError("nothing to undo")
        box, old, new = self._undo.pop()
        self.array[_slices(box)] = old
        self._redo.append((box, old, new))
        return box

    def redo(self) -> Box:
        if not self._redo:
            raise ConfigError("nothing to redo")
        box, old, new = self._redo.pop()
        self.array[_slices(box)] = new
        self._undo.append((box, old, new))
        return box

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def apply_display_edit(self, grid: DisplayGrid, lo: Sequence[int], crop: np.ndarray) -> Box | None:
        """A box of display voxels from the page: every display voxel whose value changed sets its
        ``f x f x f`` block of the source grid (itself when the grid is not reduced)."""
        f = grid.factor
        hi = [a + s - 1 for a, s in zip(lo, crop.shape, strict=True)]
        current = grid.sample(self.array)[_slices((tuple(lo), tuple(hi)))]  # type: ignore[arg-type]
        changed = crop != current
        if not changed.any():
            return None
        src_lo = tuple(a * k for a, k in zip(lo, f, strict=True))
        src_hi = tuple(min((b + 1) * k, s) - 1 for b, k, s in zip(hi, f, grid.source_shape, strict=True))
        size = [b - a + 1 for a, b in zip(src_lo, src_hi, strict=True)]
        up_vals, up_changed = crop, changed
        for ax, k in enumerate(f):
            up_vals = np.repeat(up_vals, k, axis=ax)
            up_changed = np.repeat(up_changed, k, axis=ax)
        up_vals = up_vals[: size[0], : size[1], : size[2]]
        up_changed = up_changed[: size[0], : size[1], : size[2]]
        box: Box = (src_lo, src_hi)  # type: ignore[assignment]
        new = self.array[_slices(box)].copy()
        new[up_changed] = up_vals[up_changed]
        return self.set_box(box, new)


def crop_nifti(grid: DisplayGrid, arr3: np.ndarray, box: Box | None) -> bytes:
    """gzip NIfTI of the display-grid voxels of ``arr3`` (source grid) in the display box ``box``
    (the whole grid when None), with the grid's affine shifted to the box's first voxel."""
    import nibabel as nib

    disp = grid.sample(arr3)
    if box is None:
        box = ((0, 0, 0), tuple(s - 1 for s in disp.shape))  # type: ignore[assignment]
    crop = np.ascontiguousarray(disp[_slices(box)], dtype=np.uint8)  # type: ignore[arg-type]
    affine = grid.box_affine(box[0])  # type: ignore[index]
    img = nib.Nifti1Image(crop, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=1)


def _gunzip_bounded(body: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error:
        raise ConfigError("the upload is not gzip data") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ConfigError("the upload unpacks to more than the grid holds")
    if not d.eof:
        raise ConfigError("the upload is a truncated gzip stream")
    return out


def read_crop(body: bytes, grid: DisplayGrid, allowed: Iterable[int]) -> tuple[tuple[int, int, int], np.ndarray]:
    """A gzip NIfTI box from the page -> (first display voxel, uint8 values), checked (see module doc).

    Raises :class:`~medseg.errors.ConfigError` (size, format, values) or
    :class:`~medseg.errors.GeometryError` (a box not on the display grid)."""
    import nibabel as nib

    if len(body) > MAX_UPLOAD_BYTES:
        raise ConfigError(f"the upload is larger than {MAX_UPLOAD_BYTES >> 20} MiB")
    raw = _gunzip_bounded(body, math.prod(grid.shape) + 64 * 1024)
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        img = nib.Nifti1Image.from_bytes(raw)
        img.get_data_dtype()
    except (ValueError, EOFError, ImageFileError, HeaderDataError):
        raise ConfigError("the upload is not a NIfTI-1 image") from None
    if len(img.shape) != 3 or img.get_data_dtype() != np.uint8:
        raise ConfigError("an edit is a 3D uint8 NIfTI box")
    sform, code = img.get_sform(coded=True)
    if sform is None or not code:
        raise GeometryError("the edit has no sform: its place on the grid is unknown")
    ref = grid.affine
    scale = float(np.abs(ref[:3, :3]).max())
    if not np.allclose(sform[:3, :3], ref[:3, :3], atol=1e-3 * max(scale, 1.0), rtol=0):
        raise GeometryError("the edit's affine is not the viewed grid's (rotation or spacing differ)")
    offset = np.linalg.solve(ref[:3, :3], sform[:3, 3] - ref[:3, 3])
    lo = np.rint(offset)
    if not np.all(np.abs(offset - lo) < 0.05):
        raise GeometryError("the edit's origin is not on a voxel of the viewed grid")
    lo_i = tuple(int(v) for v in lo)
    if any(a < 0 or a + s > g for a, s, g in zip(lo_i, img.shape, grid.shape, strict=True)):
        raise GeometryError("the edit reaches outside the viewed grid")
    try:
        arr = np.asarray(img.dataobj, dtype=np.uint8)
    except (ValueError, EOFError, OSError):
        raise ConfigError("the upload's voxels are truncated") from None
    bad = set(np.unique(arr).tolist()) - {int(v) for v in allowed}
    if bad:
        raise ConfigError(f"the edit holds values {sorted(bad)[:5]} that this label map does not allow")
    return lo_i, arr  # type: ignore[return-value]
