"""``read_dicom``: one DICOM series (or multi-frame object, or radiograph) -> MetaTensor.

The output follows :mod:`medseg.io` exactly: shape (1, i, j, k) for volumes and (1, i, j) for
radiographs, float32 (CT in HU after RescaleSlope/Intercept, applied per slice), affine voxel ->
RAS mm (DICOM's LPS with x and y negated), ``i`` along the row direction IOP[0:3], ``j`` along the
column direction IOP[3:6], ``k`` along the normal in increasing position.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.uid import UID

from medseg.errors import InputError, UnsafeInputError
from medseg.io.dicom.geometry import assemble, slice_from_header
from medseg.io.dicom.headers import Header, check_pixel_size, int_attr, max_voxels
from medseg.io.dicom.multiframe import read_multiframe
from medseg.io.dicom.pixels import (  # noqa: F401 - load_frames, _read_native, check_rescale: importable here too
    _read_native,
    _rescale,
    base_meta,
    check_rescale,
    file_label,
    load_frames,
    read_native_into,
)
from medseg.io.dicom.series import SeriesInfo, scanned, select_series
from medseg.io.dicom.source import DicomSource
from medseg.io.dicom.xray import read_xray

if TYPE_CHECKING:
    from monai.data import MetaTensor

#: Projection radiography modalities read as a 2D image (no patient position).
XRAY_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX", "RG", "DR"})


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
        slices.append(slice_from_header(h.ds, h.name, load, file_label(h, info.source)))
        slices[-1].fill = fill
    for h in info.headers:
        check_pixel_size(h)
    volume, affine, ginfo = assemble(slices, allow_missing_slices=allow_missing_slices,
                                     what=f"series {info.series_instance_uid}", progress=progress, dtype=dtype)
    meta = base_meta(info, path)
    meta["spacing"] = ginfo["spacing"]
    meta["sop_instance_uids"] = [slices[o].sop_instance_uid if o >= 0 else "" for o in ginfo["order"]]
    meta["dicom_files"] = [slices[o].file if o >= 0 else "" for o in ginfo["order"]]
    meta["missing_slices"] = ginfo["missing_slices"]
    return volume, affine, meta


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
    from medseg.io.image import to_metatensor, volume_meta
    from medseg.io.volume import Volume

    volume, affine, meta = read_dicom_arrays(path, series=series, allow_missing_slices=allow_missing_slices,
                                             progress=progress)
    array = np.expand_dims(volume, 0)  # no copy: a Fortran-ordered (i, j, k) view stays one
    return to_metatensor(Volume(array, affine, volume_meta(array, affine, meta, path)))


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
        volume, affine, meta = read_multiframe(info, path, allow_missing_slices, progress)
    elif _is_projection(info):
        volume, affine, meta = read_xray(info, path)
    else:
        volume, affine, meta = _read_classic(info, path, allow_missing_slices, progress, keep_integers)
    meta.setdefault("missing_slices", [])
    # the scanned headers travel with the image: SEG/RTSTRUCT writers reference them, never the files
    meta["dicom_source"] = DicomSource.from_scan(
        meta["dicom_files"], {file_label(h, info.source): h for h in info.headers})
    meta["skipped_files"] = skipped
    if n_series is not None:
        meta["n_series_found"] = n_series
    return volume, affine, meta
