"""Reading a DICOM SEG (BINARY, FRACTIONAL or LABELMAP) into an integer label map, on a reference
series' grid (frames placed by position, cross-checked with their referenced instances) or on the
SEG's own geometry (see :func:`read_dicom_seg`)."""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, GeometryError, InputError, MedsegError, UnsafeInputError
from medseg.geometry import affine_of, as_numpy, spacing_of, spatial
from medseg.io.dicom.planes import LPS, GridPlanes
from medseg.io.dicom.source import PYDICOM_ERRORS, first_item, unit
from medseg.io.formats import LABELMAP_SEG_SOP_CLASS, SEG_SOP_CLASS
from medseg.io.image import volume_meta
from medseg.io.volume import Volume
from medseg.labels import lookup_label
from medseg.logsafe import scrub

# Refuse SEG objects whose decoded frames would exceed this many voxels (untrusted input).
_MAX_VOXELS = 2_000_000_000


def _check_header(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        head = pydicom.dcmread(path, stop_before_pixels=True)
        for _ in head.iterall():  # decode every value now: corruption surfaces here, as one line
            pass
    except (InvalidDicomError, *PYDICOM_ERRORS) as exc:
        raise InputError(f"{path.name} is not a readable DICOM file (header corrupt or truncated: "
                         f"{type(exc).__name__})") from None
    if str(getattr(head, "SOPClassUID", "")) not in (SEG_SOP_CLASS, LABELMAP_SEG_SOP_CLASS):
        raise InputError(f"{path.name} is not a DICOM Segmentation (SOP class "
                         f"{getattr(head, 'SOPClassUID', 'missing')}); use medseg.io.load for images")
    try:
        n_frames = int(head.get("NumberOfFrames") or 1)  # absent: one frame, as pydicom reads it
        n = n_frames * int(head.Rows) * int(head.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(f"{path.name} lacks valid Rows/Columns/NumberOfFrames") from exc
    if n <= 0 or n > _MAX_VOXELS:
        raise UnsafeInputError(f"{path.name} declares {n} voxels; refusing (limit {_MAX_VOXELS})")
    per_frame = head.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        n_items = 0 if per_frame is None else len(per_frame)
        raise InputError(f"{path.name} has {n_items} per-frame functional group items for {n_frames} "
                         "frame(s); the SEG is inconsistent and its geometry cannot be trusted")
    return head


def _label_value_map(segments: Mapping[int, str], label_names: Mapping[int, str] | None) -> dict[int, int]:
    """Segment number -> output label value (identity unless ``label_names`` maps names back)."""
    if not label_names:
        return {n: n for n in segments}
    wanted: dict[str, int] = {}
    for value, name in label_names.items():
        wanted[str(name).strip().lower()] = int(value)
        reg = lookup_label(str(name))
        if reg is not None:
            wanted[reg.display.strip().lower()] = int(value)
    out = {}
    for n, seg_label in segments.items():
        key = str(seg_label).strip().lower()
        if key not in wanted:
            raise ConfigError(f"segment {n} ({seg_label!r}) matches no name in label_names "
                              f"{sorted(set(label_names.values()))}")
        out[n] = wanted[key]
    return out


def _paint(painted: np.ndarray, mask: np.ndarray, segno: int) -> int:
    """Paint ``segno`` where ``mask``; return how many voxels already held another segment.
    Called in increasing segment number, so the higher segment wins an overlap."""
    if not mask.any():
        return 0
    clash = int(np.count_nonzero(mask & (painted != 0) & (painted != segno)))
    np.copyto(painted, np.asarray(segno, dtype=painted.dtype), where=mask)
    return clash


def _warn_overlap(n: int, where: str) -> None:
    if n:
        warnings.warn(f"{where}: {n} voxels belong to several segments; each gets the label of the "
                      "highest segment number", stacklevel=3)


def _seg_frame_info(seg: Any) -> tuple[np.ndarray | None, list[tuple[int, np.ndarray | None, str | None]]]:
    """(shared IOP or None, per frame: (segment number, LPS position or None, referenced SOP UID)).
    A LABELMAP SEG holds segment numbers in its pixels: its frames get segment number 0."""
    labelmap = str(getattr(seg, "SegmentationType", "")) == "LABELMAP"
    shared = first_item(seg, "SharedFunctionalGroupsSequence")
    ori = first_item(shared, "PlaneOrientationSequence") if shared is not None else None
    iop = np.asarray(ori.ImageOrientationPatient, dtype=float) if ori is not None else None
    shared_ident = first_item(shared, "SegmentIdentificationSequence") if shared is not None else None
    frames = []
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        # a SEG of one segment may identify it once for all frames, in the shared groups
        ident = first_item(item, "SegmentIdentificationSequence") or shared_ident
        if ident is None and not labelmap:
            raise InputError(f"SEG frame {f + 1} has no SegmentIdentificationSequence")
        pos = first_item(item, "PlanePositionSequence")
        position = np.asarray(pos.ImagePositionPatient, dtype=float) if pos is not None else None
        if iop is None:
            fori = first_item(item, "PlaneOrientationSequence")
            if fori is not None:
                iop = np.asarray(fori.ImageOrientationPatient, dtype=float)
        uid = None
        deriv = first_item(item, "DerivationImageSequence")
        if deriv is not None:
            srcimg = first_item(deriv, "SourceImageSequence")
            if srcimg is not None and "ReferencedSOPInstanceUID" in srcimg:
                uid = str(srcimg.ReferencedSOPInstanceUID)
        frames.append((0 if labelmap else int(ident.ReferencedSegmentNumber), position, uid))
    return iop, frames


def _frames_binary(seg: Any) -> np.ndarray:
    """All frames (n_frames, rows, cols): booleans, FRACTIONAL thresholded at one half; for a
    LABELMAP SEG the stored segment numbers."""
    pix = np.asarray(seg.pixel_array)
    if pix.ndim == 2:
        pix = pix[None]
    kind = str(seg.SegmentationType)
    if kind == "LABELMAP":
        return pix
    if kind == "FRACTIONAL":
        return pix >= (float(seg.MaximumFractionalValue) / 2.0)
    return pix > 0


def _read_on_reference(seg: Any, reference: Any, name: str, values: dict[int, int]) -> np.ndarray:
    ref_arr_shape = tuple(spatial(as_numpy(reference), "reference", ndims=(3,)).shape)
    ni, nj, nk = ref_arr_shape
    ref_aff = affine_of(reference, "reference")
    grid = GridPlanes(ref_aff, nk)
    if int(seg.Rows) != nj or int(seg.Columns) != ni:
        raise GeometryError(f"{name} frames are {seg.Columns}x{seg.Rows} (columns x rows) but the "
                            f"reference planes are {ni}x{nj}; it segments another series")
    ref_meta = getattr(reference, "meta", None) or {}
    ref_for = ref_meta.get("frame_of_reference_uid")
    seg_for = getattr(seg, "FrameOfReferenceUID", None)
    if ref_for and seg_for and str(ref_for) != str(seg_for):
        raise GeometryError(f"{name} is in frame of reference {seg_for}, the reference in {ref_for}; "
                            "it does not belong to this series")
    iop, frames = _seg_frame_info(seg)
    if iop is not None and not grid.follows(unit(iop[:3]), unit(iop[3:])):
        raise GeometryError(f"{name} has an image orientation different from the reference's")
    uids = [str(u) for u in ref_meta.get("sop_instance_uids") or []]
    uid_to_k = {u: k for k, u in enumerate(uids)} if len(set(uids)) == len(uids) == nk else {}
    binary = _frames_binary(seg)
    placed: list[tuple[int, int, int]] = []  # (segment number, k, frame)
    for f, (segno, position, uid) in enumerate(frames):
        k_pos = None
        if position is not None:
            best, along, _, ok = grid.nearest(grid.origins, position)
            if not ok:
                raise GeometryError(f"{name} frame {f + 1} lies {along:.3g} mm off the nearest "
                                    "reference plane; the SEG is not on the reference grid")
            k_pos = best
        k_uid = uid_to_k.get(uid) if uid is not None else None
        if k_pos is not None and k_uid is not None and k_pos != k_uid:
            raise GeometryError(f"{name} frame {f + 1} references the instance at plane {k_uid} but lies "
                                f"at plane {k_pos}; the SEG is inconsistent with the reference")
        k = k_pos if k_pos is not None else k_uid
        if k is None:
            raise GeometryError(f"{name} frame {f + 1} has neither a plane position nor a referenced "
                                "instance of the reference series")
        if segno not in values and segno != 0:
            raise InputError(f"{name} frame {f + 1} refers to segment {segno}, which is not described")
        placed.append((segno, k, f))
    painted_kji = np.zeros((nk, nj, ni), dtype=np.int32)  # plane-contiguous while painting
    clashes = 0
    for segno, k, f in sorted(placed):
        if segno == 0:  # LABELMAP: the frame holds segment numbers
            frame = binary[f]
            undescribed = set(np.unique(frame).tolist()) - set(values) - {0}
            if undescribed:
                raise InputError(f"{name} frame {f + 1} holds undescribed segment number(s) "
                                 f"{sorted(undescribed)}")
            np.copyto(painted_kji[k], frame.astype(np.int32), where=frame != 0)
        else:
            clashes += _paint(painted_kji[k], binary[f], segno)
    _warn_overlap(clashes, name)
    painted = np.ascontiguousarray(np.transpose(painted_kji, (2, 1, 0)))
    return _relabel(painted, values)


def _relabel(painted: np.ndarray, values: dict[int, int]) -> np.ndarray:
    if all(k == v for k, v in values.items()):
        return painted.astype(np.int32)
    lut = np.zeros(max(values) + 1, dtype=np.int32)
    for segno, value in values.items():
        lut[segno] = value
    return lut[painted]


def _read_own_geometry(seg: Any, name: str, values: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    labelmap = str(getattr(seg, "SegmentationType", "")) == "LABELMAP"
    try:
        vol = seg.get_volume(combine_segments=labelmap, allow_missing_positions=True)
    except (ValueError, RuntimeError, AttributeError) as exc:
        raise GeometryError(f"{name} frames do not form a regular 3D grid ({scrub(str(exc))}); read it with a "
                            "reference series instead") from exc
    if vol is None:
        raise GeometryError(f"{name} has no 3D plane positions; read it with a reference series")
    arr = np.asarray(vol.array)  # (slices, rows, cols, segments), LABELMAP: (slices, rows, cols)
    seg_numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    if labelmap:
        undescribed = set(np.unique(arr).tolist()) - set(seg_numbers) - {0}
        if undescribed:
            raise InputError(f"{name} holds undescribed segment number(s) {sorted(undescribed)}")
        arr = np.stack([arr == n for n in seg_numbers], axis=-1)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.shape[-1] != len(seg_numbers):
        raise InputError(f"{name}: {arr.shape[-1]} segment channels for {len(seg_numbers)} segments")
    aff_hd = np.asarray(vol.affine, dtype=float)  # (slice, row, col) index -> LPS
    if str(seg.SegmentationType) == "FRACTIONAL":
        bin_arr = arr >= 0.5 if arr.dtype.kind == "f" else arr >= float(seg.MaximumFractionalValue) / 2
    else:
        bin_arr = arr > 0
    painted_kji = np.zeros(bin_arr.shape[:3], dtype=np.int32)  # (slice, row, col) while painting
    clashes = 0
    for c, n in sorted(enumerate(seg_numbers), key=lambda t: t[1]):
        clashes += _paint(painted_kji, np.ascontiguousarray(bin_arr[..., c]), n)
    _warn_overlap(clashes, name)
    painted = np.transpose(painted_kji, (2, 1, 0))
    shape = painted.shape
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2], aff[:3, 3] = aff_hd[:3, 2], aff_hd[:3, 1], aff_hd[:3, 0], aff_hd[:3, 3]
    normal = np.cross(aff[:3, 0], aff[:3, 1])
    if float(normal @ aff[:3, 2]) < 0:  # make k run along row x col, as for a DICOM series
        painted = painted[:, :, ::-1]
        aff[:3, 3] = aff[:3, 3] + aff[:3, 2] * (shape[2] - 1)
        aff[:3, 2] = -aff[:3, 2]
    return _relabel(np.ascontiguousarray(painted), values), LPS @ aff


def read_dicom_seg(path: str | os.PathLike[str], reference: Any | None = None, *,
                   label_names: Mapping[int, str] | None = None) -> Any:
    """Read a DICOM SEG into an integer label MetaTensor ``(1, i, j, k)`` with a RAS affine.

    With ``reference`` (the MetaTensor of the source series) the result lies on exactly the
    reference grid: each frame is placed by its PlanePositionSequence (LPS mm), cross-checked with
    its referenced SOP instance; :class:`GeometryError` if it does not fit. Without one, the SEG's
    own geometry is used (missing planes between frames are filled with 0). Values are segment
    numbers, or the keys of ``label_names`` when given (segments matched by label/name).
    Overlapping segments: the higher segment number wins, with a warning. ``meta['labels']`` maps
    value -> segment label.
    """
    from medseg.io.image import to_metatensor

    return to_metatensor(read_seg_volume(path, reference, label_names=label_names))


def read_seg_volume(path: str | os.PathLike[str], reference: Any | None = None, *,
                    label_names: Mapping[int, str] | None = None) -> Volume:
    """:func:`read_dicom_seg` as a numpy :class:`~medseg.io.volume.Volume` (no torch or MONAI)."""
    p = Path(path)
    _check_header(p)
    try:
        return _read_seg(p, reference, label_names)
    except MedsegError:
        raise
    except (*PYDICOM_ERRORS, MemoryError, sqlite3.Error) as exc:  # broken past the header (highdicom
        # indexes frames in sqlite)
        raise InputError(f"{p.name} is not a valid DICOM SEG ({type(exc).__name__} while decoding it); "
                         "re-export or re-transfer the file") from None


def _read_seg(p: Path, reference: Any | None, label_names: Mapping[int, str] | None) -> Volume:
    import highdicom as hd

    seg = hd.seg.segread(p)
    segments = {int(s.SegmentNumber): str(getattr(s, "SegmentLabel", f"segment {s.SegmentNumber}"))
                for s in seg.SegmentSequence}
    values = _label_value_map(segments, label_names)

    if reference is not None:
        arr = _read_on_reference(seg, reference, p.name, values)
        affine = affine_of(reference, "reference")
    else:
        arr, affine = _read_own_geometry(seg, p.name, values)
    meta = {
        "space": "RAS",
        "kind": "label",
        "format": "dicom-seg",
        "modality": "SEG",
        "spacing": spacing_of(affine, 3),
        "filename_or_obj": str(p),
        "series_instance_uid": str(getattr(seg, "SeriesInstanceUID", "")),
        "study_instance_uid": str(getattr(seg, "StudyInstanceUID", "")),
        "frame_of_reference_uid": str(getattr(seg, "FrameOfReferenceUID", "")),
        "series_description": str(getattr(seg, "SeriesDescription", "")),
        "labels": {values[n]: segments[n] for n in sorted(segments)},
        "segment_numbers": {values[n]: n for n in sorted(segments)},
    }
    array = np.ascontiguousarray(arr)[None]
    return Volume(array, np.asarray(affine, dtype=np.float64), volume_meta(array, affine, meta, p))
