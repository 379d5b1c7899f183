"""Pixel data and the per-file facts every DICOM reader shares (classic series, enhanced
multi-frame, radiographs): stored values decoded after the size checks, the rescale, the meta
keys of a series, and how a file is named in messages. The readers import this module; it imports
none of them (no import cycle between read, multiframe and xray).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medseg.errors import InputError
from medseg.io.dicom.headers import Header, check_pixel_size, float_attr, int_attr
from medseg.io.dicom.series import SeriesInfo

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


def file_label(h: Header, source: Path | None) -> str:
    return f"{source}!{h.display_name}" if source is not None else str(h.path)


def base_meta(info: SeriesInfo, path: Path) -> dict:
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


