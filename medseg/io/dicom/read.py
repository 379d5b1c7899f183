"""``read_dicom``: one DICOM series (or multi-frame object, or radiograph) -> MetaTensor.

The output follows :mod:`medseg.io` exactly: shape (1, i, j, k) for volumes and (1, i, j) for
radiographs, float32 (CT in HU after RescaleSlope/Intercept, applied per slice), affine voxel ->
RAS mm (DICOM's LPS with x and y negated), ``i`` along the row direction IOP[0:3], ``j`` along the
column direction IOP[3:6], ``k`` along the normal in increasing position.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medseg.errors import InputError, UnsafeInputError
from medseg.io.dicom.geometry import assemble, slice_from_header
from medseg.io.dicom.headers import Header, check_pixel_size, float_attr, int_attr, max_voxels
from medseg.io.dicom.series import SeriesInfo, scanned, select_series

if TYPE_CHECKING:
    from monai.data import MetaTensor

#: Projection radiography modalities read as a 2D image (no patient position).
XRAY_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX", "RG", "DR"})


_NATIVE_LE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


def _native_layout(header: Header) -> tuple[np.dtype, int, int, int, int] | None:
    """``(dtype, rows, columns, bits stored, bits allocated)`` of uncompressed little-endian
    8/16/32-bit pixel data that can be read straight from the file, else None."""
    ds = header.ds
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts not in _NATIVE_LE or header.pixel_offset is None or header.pixel_length in (None, 0xFFFFFFFF):
        return None
    name = header.name
    bits = int_attr(ds, "BitsAllocated", name)
    if bits is None:
        return None
    stored = int_attr(ds, "BitsStored", name, bits) or bits
    signed = (int_attr(ds, "PixelRepresentation", name, 0) or 0) == 1
    rows, cols = int_attr(ds, "Rows", name, 0), int_attr(ds, "Columns", name, 0)
    if bits not in (8, 16, 32) or not 0 < stored <= bits or rows <= 0 or cols <= 0:
        return None
    return np.dtype(f"<{'i' if signed else 'u'}{bits // 8}"), rows, cols, stored, bits


def _read_native(header: Header) -> np.ndarray | None:
    """Stored values read straight from the file for uncompressed little-endian 8/16/32-bit data.

    Returns None when the fast path does not apply (pydicom's decoder is used instead). Bits
    above BitsStored are not pixel data: masked off (unsigned) or sign-extended (signed).
    """
    layout = _native_layout(header)
    if layout is None:
        return None
    dtype, rows, cols, stored, bits = layout
    signed = dtype.kind == "i"
    count = header.n_frames * rows * cols
    arr = np.fromfile(header.path, dtype=dtype, count=count, offset=header.pixel_offset)
    if arr.size != count:
        raise InputError(f"{header.name}: pixel data shorter than declared: truncated or corrupt; "
                         "re-export or re-transfer it")
    if stored < bits:
        if signed:
            shift = bits - stored
            arr = (arr << shift) >> shift
        else:
            arr &= dtype.type((1 << stored) - 1)
    return arr.reshape(header.n_frames, rows, cols)


#: JPEG Extended (process 2 and 4): 12-bit lossy JPEG, common for older CT / MR archives.
_JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


def _decoder_hint(header: Header, ts) -> str:
    """What to do when pydicom's decoders (Pillow, python-gdcm, pyjpegls: all installed with
    medseg) cannot decode the pixel data."""
    try:
        bits = int_attr(header.ds, "BitsStored", header.name, 8) or 8
    except InputError:
        bits = 8
    if str(ts or "") == _JPEG_EXTENDED and bits > 8:
        return ("12-bit JPEG Extended needs one more decoder: pip install pylibjpeg pylibjpeg-libjpeg "
                "(GPL-3, hence not installed with medseg), or decompress it first (dcmdjpeg)")
    return "the file is corrupt or its compression has no decoder here (medseg installs python-gdcm and pyjpegls)"


#: what pydicom's decoders (and the plug-ins they call) raise on corrupt pixel data: caught at
#: that boundary only, and reported as "cannot be decoded"
_DECODE_ERRORS = (ValueError, RuntimeError, NotImplementedError, EOFError, OSError, AttributeError, KeyError,
                  TypeError, IndexError, OverflowError, ZeroDivisionError, struct.error, zlib.error, LookupError,
                  ImportError)


def _check_loadable(header: Header) -> None:
    check_pixel_size(header)
    spp = int_attr(header.ds, "SamplesPerPixel", header.name, 1) or 1
    if spp != 1:
        raise InputError(f"{header.name}: {spp} samples per pixel (colour); medseg reads greyscale images only")


def read_native_into(header: Header, out: np.ndarray) -> bool:
    """Read a single-frame file's stored values straight into ``out`` (rows, columns), with no
    intermediate array, when they are uncompressed, of exactly ``out``'s type and use every bit
    allocated; False (nothing read) otherwise. Size checks first, as :func:`load_frames`."""
    _check_loadable(header)
    layout = _native_layout(header)
    if layout is None or header.n_frames != 1 or not out.flags.c_contiguous:
        return False
    dtype, rows, cols, stored, bits = layout
    if dtype != out.dtype or stored != bits or out.shape != (rows, cols):
        return False
    with open(header.path, "rb") as fh:
        fh.seek(header.pixel_offset)
        n = fh.readinto(memoryview(out).cast("B"))
    if n != out.nbytes:
        raise InputError(f"{header.name}: pixel data shorter than declared: truncated or corrupt; "
                         "re-export or re-transfer it")
    return True


def load_frames(header: Header) -> np.ndarray:
    """Decoded stored values of all frames, shape (frames, rows, columns), after size checks."""
    _check_loadable(header)
    fast = _read_native(header)
    if fast is not None:
        return fast
    try:
        ds = pydicom.dcmread(header.path)
        arr = ds.pixel_array
    except _DECODE_ERRORS as exc:
        ts = getattr(getattr(header.ds, "file_meta", None), "TransferSyntaxUID", None)
        uid = UID(str(ts or ""))
        ts_name = uid.name if uid and uid.is_transfer_syntax else "unknown transfer syntax"
        raise InputError(f"{header.name}: pixel data cannot be decoded ({ts_name}: {type(exc).__name__}); "
                         f"{_decoder_hint(header, uid)}") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] != header.n_frames:
        raise InputError(f"{header.name}: decoded {arr.shape[0]} frames, header says {header.n_frames}")
    return arr


def _rescale(ds, name: str = "DICOM file") -> tuple[float, float]:
    """RescaleSlope/Intercept (1/0 when absent): finite, slope not 0, and small enough that no
    stored value can overflow float32 (else :class:`InputError`: NaN/inf voxels are refused)."""
    slope = float_attr(ds, "RescaleSlope", name, 1.0)
    intercept = float_attr(ds, "RescaleIntercept", name, 0.0)
    check_rescale(slope, intercept, ds, name)
    return slope, intercept


def check_rescale(slope: float, intercept: float, ds, name: str) -> None:
    """Refuse a rescale that gives NaN/inf or a constant image (see :func:`_rescale`)."""
    import math

    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise InputError(f"{name}: RescaleSlope/RescaleIntercept are not finite; the file is corrupt")
    if slope == 0:
        raise InputError(f"{name}: RescaleSlope is 0 (every voxel would be the intercept); the file is corrupt")
    try:
        bits = int_attr(ds, "BitsAllocated", name, 16) or 16
    except InputError:
        bits = 64
    if abs(slope) * 2.0 ** min(bits, 64) + abs(intercept) > 3.0e38:
        raise InputError(f"{name}: RescaleSlope/RescaleIntercept overflow 32-bit floats; the file is corrupt")


def _file_label(h: Header, source: Path | None) -> str:
    return f"{source}!{h.display_name}" if source is not None else str(h.path)


def _base_meta(info: SeriesInfo, path: Path) -> dict:
    return {
        "space": "RAS",
        "kind": "image",
        "format": "dicom",
        "modality": info.modality or "unknown",
        "filename_or_obj": str(path),
        "series_instance_uid": info.series_instance_uid,
        "study_instance_uid": info.study_instance_uid,
        "frame_of_reference_uid": info.frame_of_reference_uid,
        "series_description": info.series_description,
        "series_number": info.series_number,
        "sop_class_uid": info.sop_class_uid,
    }


def integer_dtype(headers, rescales) -> np.dtype | None:
    """The smallest integer type holding ``stored * slope + intercept`` exactly for every value
    the headers' BitsStored / PixelRepresentation allow, or None when a slope or intercept is
    not an integer (or the range needs more than 32 bits): then the voxels are float32."""
    lo = hi = None
    for h, (slope, intercept) in zip(headers, rescales, strict=True):
        if not (float(slope).is_integer() and float(intercept).is_integer()):
            return None
        ds, name = h.ds, h.name
        bits = int_attr(ds, "BitsAllocated", name, 16) or 16
        stored = int_attr(ds, "BitsStored", name, bits) or bits
        if stored > 32 or bits > 32:
            return None
        signed = (int_attr(ds, "PixelRepresentation", name, 0) or 0) == 1
        s_lo, s_hi = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
        ends = (s_lo * int(slope) + int(intercept), s_hi * int(slope) + int(intercept))
        lo = min(ends) if lo is None else min(lo, *ends)
        hi = max(ends) if hi is None else max(hi, *ends)
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if lo is not None and info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return None


def _plane_loader(h: Header, slope: float, intercept: float, dtype: np.dtype):
    """``Slice.load`` and ``Slice.fill`` for one single-frame file: the rescaled plane, exact in
    ``dtype`` (an integer type chosen to hold every rescaled value, or float32)."""
    identity = (slope, intercept) == (1.0, 0.0)

    def load() -> np.ndarray:
        raw = load_frames(h)[0]
        if dtype.kind in "iu":  # integer slope and intercept, the result fits ``dtype``
            return raw if identity else raw.astype(np.int64) * int(slope) + int(intercept)
        plane = raw.astype(np.float32)
        if not identity:  # the same float32 operations as ``plane * slope + intercept``, in place
            plane *= np.float32(slope)
            plane += np.float32(intercept)
        return plane

    def fill(out: np.ndarray) -> None:
        if identity and read_native_into(h, out):  # the file's bytes are the voxels
            return
        raw = load_frames(h)[0]
        if raw.shape != out.shape:
            raise InputError(f"{h.name}: pixel data is {raw.shape}, header says {out.shape[0]}x{out.shape[1]}")
        if dtype.kind in "iu":
            out[...] = raw if identity else raw.astype(np.int64) * int(slope) + int(intercept)
        elif identity:
            out[...] = raw
        else:  # float32 arithmetic as in ``load``, written in place
            np.multiply(raw, np.float32(slope), out=out, dtype=np.float32)
            out += np.float32(intercept)
    return load, fill


def _read_classic(info: SeriesInfo, path: Path, allow_missing_slices: bool, progress: bool,
                  keep_integers: bool = False):
    slices = []
    rescales = []
    for h in info.headers:
        if h.n_frames != 1:
            raise InputError(f"{h.name}: {h.n_frames} frames without per-frame geometry in a series of "
                             "single-frame images; unsupported")
        rescales.append(_rescale(h.ds, h.name))
    dtype = (integer_dtype(info.headers, rescales) if keep_integers else None) or np.dtype(np.float32)
    for h, (slope, intercept) in zip(info.headers, rescales, strict=True):
        load, fill = _plane_loader(h, slope, intercept, dtype)
        slices.append(slice_from_header(h.ds, h.name, load, _file_label(h, info.source)))
        slices[-1].fill = fill
    for h in info.headers:
        check_pixel_size(h)
    volume, affine, ginfo = assemble(slices, allow_missing_slices=allow_missing_slices,
                                     what=f"series {info.series_instance_uid}", progress=progress, dtype=dtype)
    meta = _base_meta(info, path)
    meta["spacing"] = ginfo["spacing"]
    meta["sop_instance_uids"] = [slices[o].sop_instance_uid if o >= 0 else "" for o in ginfo["order"]]
    meta["dicom_files"] = [slices[o].file if o >= 0 else "" for o in ginfo["order"]]
    meta["missing_slices"] = ginfo["missing_slices"]
    return volume, affine, meta


def _to_metatensor(volume: np.ndarray, affine: np.ndarray, meta: dict):
    import torch
    from monai.data import MetaTensor

    meta = dict(meta)
    meta["original_affine"] = np.asarray(affine, dtype=np.float64).copy()
    meta.pop("affine", None)
    # No copy: a Fortran-ordered (i, j, k) view stays one (torch keeps numpy's strides).
    return MetaTensor(torch.from_numpy(np.expand_dims(volume, 0)),
                      affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _is_enhanced(info: SeriesInfo) -> bool:
    """Enhanced/legacy-converted multi-frame (functional groups), or any multi-frame CT/MR/PT."""
    h = info.headers[0]
    if "PerFrameFunctionalGroupsSequence" in h.ds or "SharedFunctionalGroupsSequence" in h.ds:
        return True
    sop = UID(info.sop_class_uid).name if info.sop_class_uid else ""
    return sop.startswith(("Enhanced", "Legacy Converted")) or (
        h.n_frames > 1 and info.modality in ("CT", "MR", "PT"))


def _is_projection(info: SeriesInfo) -> bool:
    h = info.headers[0]
    if info.modality in XRAY_MODALITIES and "ImagePositionPatient" not in h.ds and not _is_enhanced(info):
        return True
    return False


def read_dicom(path: str | os.PathLike[str], *, series: str | SeriesInfo | None = None,
               allow_missing_slices: bool = False, progress: bool = True) -> MetaTensor:
    """Read one DICOM image series from a folder (recursive), a file or a zip/tar(.gz) archive.

    ``series`` selects among several series: a SeriesInstanceUID or rules such as "modality=CT",
    "description~REGEX", "largest" (see :func:`select_series`); without it a folder holding
    several series raises :class:`SeriesSelectionError` listing them. Returns a MetaTensor
    (1, i, j, k) float32 with a voxel->RAS affine (mm); enhanced multi-frame CT/MR objects are
    read frame by frame with their per-frame geometry; X-ray projections (CR/DX/MG...) give
    (1, i, j). Raises :class:`GeometryError` for missing/inconsistent geometry, gaps (unless
    ``allow_missing_slices``, which fills them with the minimum value and lists them in
    ``meta["missing_slices"]``) and gantry tilt; :class:`UnsafeInputError` for oversized inputs.

    ``series`` may also be a :class:`SeriesInfo` that :func:`list_series` found under ``path`` (a
    folder or file, not an archive): its headers are used as they are, so a batch over a tree of
    many series reads each header once instead of rescanning the tree for every series.
    """
    volume, affine, meta = read_dicom_arrays(path, series=series, allow_missing_slices=allow_missing_slices,
                                             progress=progress)
    return _to_metatensor(volume, affine, meta)


def read_dicom_arrays(path: str | os.PathLike[str], *, series: str | SeriesInfo | None = None,
                      allow_missing_slices: bool = False, progress: bool = True,
                      keep_integers: bool = False, found: list | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`read_dicom` without torch or MONAI: ``(volume (i, j[, k]), affine_ras, meta)``.

    ``keep_integers=True``: a single-frame series whose RescaleSlope and RescaleIntercept are
    integers comes back in the smallest integer type that holds every rescaled value exactly
    (int16 for most CT), as dcm2niix keeps it; otherwise, and always for multi-frame objects and
    radiographs, float32 as :func:`read_dicom` gives it. ``found``: a list that receives every
    series the scan found (:class:`SeriesInfo`), also when the selection then fails, so that a
    caller listing them (``medseg info``) does not scan the headers a second time.
    """
    path = Path(path)
    if isinstance(series, SeriesInfo):
        if series.source is not None:
            raise InputError(f"series {series.series_instance_uid} was found in an archive; pass its UID instead")
        return _read_info(series, path, allow_missing_slices, progress, skipped=0, n_series=None,
                          keep_integers=keep_integers)
    with scanned(path, progress=progress) as result:
        if found is not None:
            found.extend(result.series)
        info = select_series(result.series, series)
        return _read_info(info, path, allow_missing_slices, progress,
                          skipped=result.skipped_non_dicom + result.skipped_non_image, n_series=len(result.series),
                          keep_integers=keep_integers)


def _read_info(info: SeriesInfo, path: Path, allow_missing_slices: bool, progress: bool, *, skipped: int,
               n_series: int | None, keep_integers: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read the selected series ``info`` (inside the scan's ``with`` block for an archive)."""
    total = sum(h.voxels() for h in info.headers)
    if total > max_voxels():
        raise UnsafeInputError(f"series {info.series_instance_uid}: {total} voxels, over the limit of "
                               f"{max_voxels()}; raise MEDSEG_MAX_VOXELS if this is genuine")
    if _is_enhanced(info):
        from medseg.io.dicom.multiframe import read_multiframe

        volume, affine, meta = read_multiframe(info, path, allow_missing_slices, progress)
    elif _is_projection(info):
        from medseg.io.dicom.xray import read_xray

        volume, affine, meta = read_xray(info, path)
    else:
        volume, affine, meta = _read_classic(info, path, allow_missing_slices, progress, keep_integers)
    meta.setdefault("missing_slices", [])
    meta["skipped_files"] = skipped
    if n_series is not None:
        meta["n_series_found"] = n_series
    return volume, affine, meta
