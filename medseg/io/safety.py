"""Safety checks shared by every reader: declared sizes before allocating, non-finite voxels.

Untrusted files (PACS dumps, e-mail attachments, archives) can declare absurd sizes: a 1 KB
NIfTI header may claim 256 GB of voxels. Readers call :func:`check_declared_size` with the shape
and item size the *header* declares, before any array is allocated, and :func:`check_finite`
after decoding a floating-point image.

The voxel cap is ``$MEDSEG_MAX_VOXELS`` (default ``2**31`` voxels, all channels counted).

Compressed containers (gzip NIfTI/NRRD, zlib MetaImage, deflated DICOM, compressed TIFF strips,
PNG, zip/tar members) are also held to :func:`check_expansion` before anything is decoded: a
stream that would expand to more than ``$MEDSEG_MAX_EXPANSION`` (default 100) times its stored
size AND to more than a floor (256 MiB for NIfTI/NRRD/MHA/archives, 64 MiB for DICOM pixel data,
PNG and TIFF) is refused as a decompression bomb, so a 2 MB file cannot make medseg spend a
minute and gigabytes of memory. Real images compress far less (CT 2-4:1); label maps can reach a
few hundred to one, and those stay under the 256 MiB floor unless they are huge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medseg.errors import InputError, UnsafeInputError
from medseg.settings import current

DEFAULT_MAX_VOXELS = 2**31


def max_voxels() -> int:
    """The voxel cap: ``$MEDSEG_MAX_VOXELS`` if set (a positive integer), else ``2**31``."""
    raw = current().limit_text("MEDSEG_MAX_VOXELS")
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise InputError(
            f"MEDSEG_MAX_VOXELS={raw!r} is not a number; set it to a positive integer voxel count"
        ) from None
    if value <= 0:
        raise InputError(f"MEDSEG_MAX_VOXELS={raw!r} must be a positive integer voxel count")
    return value


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover


def check_declared_size(
    shape: Sequence[int],
    dtype_itemsize: int,
    *,
    file_size: int | None = None,
    data_offset: int = 0,
    what: str = "input",
) -> int:
    """Check the size a header declares before anything is allocated; return it in bytes.

    ``shape`` counts every stored element (spatial dims and channels/components), as the header
    declares it; ``dtype_itemsize`` is bytes per element. Python integers are used, so absurd
    products cannot overflow.

    Raises :class:`~medseg.errors.InputError` for a zero or negative dimension, and
    :class:`~medseg.errors.UnsafeInputError` when the element count exceeds the cap
    (:func:`max_voxels`). When ``file_size`` is given (only for *uncompressed* data stored in
    that file, starting at byte ``data_offset``), a file too small for what its header declares
    is reported as truncated (:class:`~medseg.errors.InputError`).
    """
    dims = [int(d) for d in shape]
    if not dims:
        raise InputError(f"{what}: the header declares no image dimensions; the file is not a usable image")
    if any(d <= 0 for d in dims):
        raise InputError(
            f"{what}: the header declares dimensions {tuple(dims)} with a zero or negative size; "
            "the file is corrupt"
        )
    if int(dtype_itemsize) <= 0:
        raise InputError(f"{what}: the header declares an element size of {dtype_itemsize} bytes")
    n_voxels = math.prod(dims)
    n_bytes = n_voxels * int(dtype_itemsize)
    cap = max_voxels()
    if n_voxels > cap:
        raise UnsafeInputError(
            f"{what}: the header declares {tuple(dims)} = {n_voxels} voxels ({_human_bytes(n_bytes)}), "
            f"over the cap of {cap} voxels; raise MEDSEG_MAX_VOXELS only if the file is trusted"
        )
    if file_size is not None:
        available = int(file_size) - int(data_offset)
        if available < n_bytes:
            raise InputError(
                f"{what}: the file is truncated: the header declares {n_bytes} bytes of voxel data "
                f"but only {max(available, 0)} are present"
            )
    return n_bytes


#: deflate (gzip/zlib) cannot compress better than about 1032:1, so a stream of N bytes never
#: holds more than this many times N bytes of data.
MAX_DEFLATE_RATIO = 1032


def check_compressed_size(n_bytes: int, compressed_size: int, *, what: str = "input") -> None:
    """Refuse, before decompressing, a gzip/zlib stream too small for what the header declares.

    ``n_bytes``: uncompressed bytes the header declares; ``compressed_size``: bytes of the
    compressed stream on disk. Deflate's ratio is bounded (:data:`MAX_DEFLATE_RATIO`), so a
    smaller stream must be truncated (:class:`~medseg.errors.InputError`); no memory is
    reserved for the declared size first.
    """
    if n_bytes > MAX_DEFLATE_RATIO * max(int(compressed_size), 0) + 4096:
        raise InputError(
            f"{what}: the file is truncated: {compressed_size} compressed bytes cannot hold the "
            f"{n_bytes} bytes its header declares (deflate compresses at most {MAX_DEFLATE_RATIO}:1)"
        )


DEFAULT_MAX_EXPANSION = 100
#: decoded sizes up to this many bytes are never refused by the expansion rule (label maps in
#: NIfTI/NRRD/MHA can compress several hundred to one, so they get the larger floor)
EXPANSION_FLOOR = 256 * 2**20
#: the floor for pixel data of DICOM files, PNG and TIFF images (a 1 MB file then decodes to at
#: most 64 MiB: seconds, not minutes, whatever the command does with it)
IMAGE_EXPANSION_FLOOR = 64 * 2**20


def max_expansion() -> float:
    """The expansion cap: ``$MEDSEG_MAX_EXPANSION`` if set (a positive number), else 100."""
    raw = current().limit_text("MEDSEG_MAX_EXPANSION")
    if not raw:
        return float(DEFAULT_MAX_EXPANSION)
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"MEDSEG_MAX_EXPANSION={raw!r} is not a number; set it to a positive ratio") from None
    if not value > 0 or not math.isfinite(value):
        raise InputError(f"MEDSEG_MAX_EXPANSION={raw!r} must be a positive finite ratio")
    return value


def expansion_budget(stored_bytes: int, floor: int = EXPANSION_FLOOR) -> int:
    """Most bytes a compressed stream of ``stored_bytes`` may decode to (see :func:`check_expansion`)."""
    return max(int(floor), int(max_expansion() * max(int(stored_bytes), 0)))


def check_expansion(n_bytes: int, stored_bytes: int, *, what: str = "input", floor: int = EXPANSION_FLOOR) -> None:
    """Refuse, before decoding, a compressed stream that would decode to more than
    :func:`expansion_budget` bytes (:class:`~medseg.errors.UnsafeInputError`)."""
    budget = expansion_budget(stored_bytes, floor)
    if int(n_bytes) > budget:
        raise UnsafeInputError(
            f"{what}: refused as a decompression bomb: {_human_bytes(stored_bytes)} of compressed data "
            f"would decode to {_human_bytes(n_bytes)} (over {max_expansion():g}x and {_human_bytes(floor)}); "
            "raise MEDSEG_MAX_EXPANSION only if the file is trusted"
        )


def inflated_size(fh, *, wbits: int, limit: int, what: str = "input") -> int:
    """Bytes a zlib/gzip/raw-deflate stream read from ``fh`` decodes to, counted in chunks
    without keeping them; :class:`~medseg.errors.UnsafeInputError` as soon as ``limit`` is
    passed, :class:`~medseg.errors.InputError` for a corrupt stream. Trailing data after the
    end of the stream is ignored."""
    import zlib

    d = zlib.decompressobj(wbits)
    total = 0
    try:
        while not d.eof:
            chunk = fh.read(1 << 16)
            if not chunk:
                break
            while chunk:
                out = d.decompress(chunk, 1 << 20)
                total += len(out)
                if total > limit:
                    raise UnsafeInputError(
                        f"{what}: refused as a decompression bomb: the compressed data decodes to more than "
                        f"{_human_bytes(limit)} (over {max_expansion():g}x its size); raise "
                        "MEDSEG_MAX_EXPANSION only if the file is trusted")
                chunk = d.unconsumed_tail
    except zlib.error:
        raise InputError(f"{what}: the compressed data is corrupt (not a valid deflate stream)") from None
    return total


#: voxel sizes outside this range (1 pm to 1 km) are a corrupt header, not an image
MIN_SPACING_MM, MAX_SPACING_MM = 1e-9, 1e6


def affine_usable(affine) -> bool:
    """True when a voxel->world affine is finite, invertible, its determinant does not overflow
    (a spacing of 1e308 mm is finite but its determinant is not) and every voxel size lies
    between :data:`MIN_SPACING_MM` and :data:`MAX_SPACING_MM`."""
    aff = np.asarray(affine, dtype=np.float64)
    if aff.ndim != 2 or not np.all(np.isfinite(aff)):
        return False
    n = min(aff.shape[0], aff.shape[1]) - 1
    with np.errstate(all="ignore"):
        cols = np.linalg.norm(aff[:n, :n], axis=0)
        det = float(np.linalg.det(aff[:n, :n]))
    return bool(np.all(np.isfinite(cols)) and np.all((cols >= MIN_SPACING_MM) & (cols <= MAX_SPACING_MM))
                and math.isfinite(det) and abs(det) > 1e-12)


def library_detail(exc: BaseException, limit: int = 160) -> str:
    """A third-party parser's message, one line, with every quoted part (where libraries put the
    offending header value) replaced by ``<value>``; the exception type when nothing is left."""
    import re

    text = " ".join(str(exc).split())
    text = re.sub(r"'[^']*'|\"[^\"]*\"|b'[^']*'", "<value>", text)
    text = (text[:limit] + "...") if len(text) > limit else text
    return text or type(exc).__name__


def count_nonfinite(array: np.ndarray) -> int:
    """Number of NaN / +-inf elements (0 for integer arrays)."""
    arr = np.asarray(array)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.complexfloating):
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def check_finite(array: np.ndarray, what: str, *, allow_nonfinite: bool = False) -> None:
    """Raise :class:`~medseg.errors.InputError` if ``array`` holds NaN or infinite values.

    The message names how many voxels are affected. ``allow_nonfinite=True`` skips the check
    (for callers that handle NaN themselves, e.g. masked parametric maps).
    """
    if allow_nonfinite:
        return
    n_bad = count_nonfinite(array)
    if n_bad:
        total = int(np.asarray(array).size)
        raise InputError(
            f"{what}: {n_bad} of {total} voxels are NaN or infinite; fix the file or pass "
            "allow_nonfinite=True to accept them"
        )


# --------------------------------------------------------------------------------------------
# Voxel validation shared by the readers: image (float32) vs label map (integer) conversion.
# --------------------------------------------------------------------------------------------

KINDS = ("image", "label", "auto")
_AUTO_LABEL_MAX_VALUES = 64


class GeometryWarning(UserWarning):
    """Geometry was read but is doubtful (no orientation stored, sform and qform disagree, ...)."""


def _looks_like_label(data: np.ndarray, label_hint: bool) -> bool:
    if data.dtype == bool:
        return True
    if not np.issubdtype(data.dtype, np.integer):
        return False
    if label_hint:
        return True
    if data.size == 0:
        return False
    lo, hi = int(data.min()), int(data.max())
    if lo < 0 or hi >= 65536:
        return False
    return int(np.count_nonzero(np.bincount(data.ravel().astype(np.int64, copy=False)))) <= _AUTO_LABEL_MAX_VALUES


def smallest_label_dtype(lo: int, hi: int) -> np.dtype:
    """Smallest integer dtype holding ``lo..hi`` (unsigned when ``lo >= 0``)."""
    candidates = (np.uint8, np.uint16, np.uint32, np.uint64) if lo >= 0 else (np.int8, np.int16, np.int32, np.int64)
    for dt in candidates:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise InputError(f"label values {lo}..{hi} do not fit a 64-bit integer")


def convert_voxels(
    data: np.ndarray,
    kind: str,
    what: str,
    *,
    allow_nonfinite: bool = False,
    label_hint: bool = False,
) -> tuple[np.ndarray, str]:
    """Convert decoded voxels to medseg's in-memory dtype; return ``(array, kind)``.

    * ``"image"``: float32 (intensity scaling already applied by the reader); NaN/inf refused
      unless ``allow_nonfinite``.
    * ``"label"``: an integer dtype. Stored integers keep their dtype (bool becomes uint8); stored
      floats must be finite whole numbers and become the smallest integer dtype that holds them.
    * ``"auto"``: ``"label"`` when the stored dtype is integer/bool and either the format marks
      it as a label map (``label_hint``, e.g. NIfTI intent LABEL) or it holds at most 64 distinct
      non-negative values; otherwise ``"image"``.
    """
    from medseg.errors import ConfigError

    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r} is not one of {KINDS}")
    data = np.asarray(data)
    if data.dtype.fields is not None:
        raise InputError(f"{what}: structured voxels ({data.dtype}) such as RGB24 are not supported; "
                         "store one channel per volume")
    if not data.dtype.isnative:  # big-endian files: torch only takes native byte order
        data = data.astype(data.dtype.newbyteorder("="))
    if kind == "auto":
        kind = "label" if _looks_like_label(data, label_hint) else "image"
    if kind == "image":
        if np.issubdtype(data.dtype, np.complexfloating):
            raise InputError(f"{what}: complex-valued voxels are not supported; store magnitude images")
        check_finite(data, what, allow_nonfinite=allow_nonfinite)
        return data.astype(np.float32, order="K", copy=False), kind  # keep memory order: no transposing copy
    # label map
    if data.dtype == bool:
        return data.astype(np.uint8), kind
    if np.issubdtype(data.dtype, np.integer):
        return data, kind
    if not np.issubdtype(data.dtype, np.floating):
        raise InputError(f"{what}: voxel type {data.dtype} cannot be a label map")
    check_finite(data, f"{what} (label map)")
    if data.size and not np.array_equal(data, np.round(data)):
        raise InputError(
            f"{what}: the label map holds non-integer values; load it with kind='image' instead"
        )
    lo = int(data.min()) if data.size else 0
    hi = int(data.max()) if data.size else 0
    return data.astype(smallest_label_dtype(lo, hi)), kind
