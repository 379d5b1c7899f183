"""Enhanced multi-frame CT/MR: per-frame geometry from the functional groups.

For frame ``f`` each attribute is taken from the PerFrameFunctionalGroupsSequence item ``f`` when
present there, else from the SharedFunctionalGroupsSequence: ImagePositionPatient from
PlanePositionSequence, ImageOrientationPatient from PlaneOrientationSequence, PixelSpacing and
SliceThickness from PixelMeasuresSequence, RescaleSlope/Intercept from
PixelValueTransformationSequence (else the top-level attributes, else 1/0). Frames are then
ordered along the slice normal exactly like the files of a classic series, with the same checks
(a frame without a plane position raises :class:`GeometryError`; several stacks, e.g. time
points, show up as duplicate positions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import GeometryError, InputError
from medseg.io.dicom.geometry import Slice, assemble, plane_slice
from medseg.io.dicom.headers import Header, check_pixel_size, values
from medseg.io.dicom.pixels import base_meta, check_rescale, file_label, load_frames
from medseg.io.dicom.series import SeriesInfo


def _item(fg, seq: str):
    if fg is None or seq not in fg:
        return None
    s = fg.get(seq)
    return s[0] if s is not None and len(s) else None


def _lookup(per, shared, seq: str, attr: str):
    for fg in (per, shared):
        item = _item(fg, seq)
        if item is not None and attr in item and item.get(attr) not in (None, ""):
            return item.get(attr)
    return None


def _number(value, keyword: str, name: str) -> float:
    items = values(value)
    if len(items) != 1:
        raise InputError(f"{name}: {keyword} holds {len(items)} values, not one; the file is corrupt")
    try:
        return float(items[0])
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: {keyword} is not a number; the file is corrupt") from None


def frame_slices(h: Header, file_label: str, loader) -> list[Slice]:
    """One :class:`Slice` per frame of an enhanced multi-frame object (geometry in LPS mm)."""
    ds = h.ds
    n = h.n_frames
    per_seq = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq is not None and len(shared_seq) else None
    if per_seq is not None and len(per_seq) not in (0, n):
        raise InputError(f"{h.name}: {len(per_seq)} per-frame functional groups for {n} frames")
    top_slope = ds.get("RescaleSlope")
    top_intercept = ds.get("RescaleIntercept")
    slices = []
    for f in range(n):
        per = per_seq[f] if per_seq is not None and len(per_seq) else None
        name = f"{h.name}#frame{f + 1}"
        ipp = _lookup(per, shared, "PlanePositionSequence", "ImagePositionPatient")
        iop = _lookup(per, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = _lookup(per, shared, "PixelMeasuresSequence", "PixelSpacing")
        thick = _lookup(per, shared, "PixelMeasuresSequence", "SliceThickness")
        slope = _lookup(per, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _lookup(per, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        slope = _number(slope if slope is not None else (top_slope if top_slope not in (None, "") else 1.0),
                        "RescaleSlope", name)
        intercept = _number(intercept if intercept is not None else
                            (top_intercept if top_intercept not in (None, "") else 0.0), "RescaleIntercept", name)
        check_rescale(slope, intercept, ds, name)
        if ipp is None or iop is None:
            missing = "PlanePositionSequence" if ipp is None else "PlaneOrientationSequence"
            raise GeometryError(f"{name}: multi-frame object without {missing} in its functional groups; "
                                "its frames cannot be placed in space (export it as a classic series)")

        def load(f=f, slope=slope, intercept=intercept):
            frame = loader()[f].astype(np.float32)
            if (slope, intercept) != (1.0, 0.0):
                frame = frame * np.float32(slope) + np.float32(intercept)
            return frame

        slices.append(plane_slice(name, ds, ipp=ipp, iop=iop, pixel_spacing=ps, thickness=thick, load=load,
                                  file=file_label, rows_name=h.name))
    return slices


def read_multiframe(info: SeriesInfo, path: Path, allow_missing_slices: bool, progress: bool):
    """Read the enhanced multi-frame object(s) of ``info`` as one volume (see module doc)."""
    slices: list[Slice] = []
    frame_numbers: list[int] = []
    for h in info.headers:
        check_pixel_size(h)
        cache: dict[str, np.ndarray] = {}

        def loader(h=h, cache=cache):
            if "a" not in cache:
                cache["a"] = load_frames(h)
            return cache["a"]

        fs = frame_slices(h, file_label(h, info.source), loader)
        slices.extend(fs)
        frame_numbers.extend(range(1, len(fs) + 1))
    volume, affine, ginfo = assemble(slices, allow_missing_slices=allow_missing_slices,
                                     what=f"series {info.series_instance_uid}", progress=progress)
    meta = base_meta(info, path)
    meta["spacing"] = ginfo["spacing"]
    order = ginfo["order"]
    meta["sop_instance_uids"] = [slices[o].sop_instance_uid if o >= 0 else "" for o in order]
    meta["dicom_files"] = [slices[o].file if o >= 0 else "" for o in order]
    meta["frame_numbers"] = [frame_numbers[o] if o >= 0 else 0 for o in order]
    meta["missing_slices"] = ginfo["missing_slices"]
    return volume, affine, meta
