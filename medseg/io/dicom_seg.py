"""DICOM Segmentation (SEG) objects: write a label map as a SEG (highdicom), read a SEG back.

Geometry follows the in-memory contract of :mod:`medseg.io`: label maps are integer
``MetaTensor`` s of shape ``(1, i, j, k)`` whose affine maps voxel indices to RAS+ millimetres;
``i`` runs along the DICOM row direction (pixel column index), ``j`` along the column direction
(pixel row index), ``k`` along the slice normal. DICOM positions are LPS; the conversion negates x
and y. Frames are matched to source instances **by position in space**, never by their order.

Public API::

    write_dicom_seg(labels, source, out_path, *, label_names, ...) -> Path
    seg_source_problem(source) -> str   # why no valid SEG can reference this source ("" if one can)
    read_dicom_seg(path, reference=None, *, label_names=None) -> MetaTensor

A SEG is never written invalid: the source must carry every identifier a SEG references
(StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID, SOPClassUID and SOPInstanceUID of each
image; anonymisers often leave them empty), else :class:`SegNotWritable` is raised before
anything is built; the SEG built is checked (required attributes and UIDs, strict VR rules) and
read back with highdicom before it is renamed into place.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.errors import BytesLengthException

import medseg
from medseg.errors import ConfigError, GeometryError, InputError, MedsegError, UnsafeInputError
from medseg.geometry import affine_of as _affine_of
from medseg.geometry import as_numpy as _as_numpy
from medseg.geometry import spacing_of, spatial
from medseg.io.atomic import atomic_path
from medseg.io.read import LABELMAP_SEG_SOP_CLASS as _LABELMAP_SEG_SOP_CLASS
from medseg.io.read import SEG_SOP_CLASS as _SEG_SOP_CLASS
from medseg.labels import LabelDef, generic_label, lookup_label
from medseg.logsafe import scrub

__all__ = ["SegNotWritable", "read_dicom_seg", "seg_source_problem", "write_dicom_seg"]

log = logging.getLogger(__name__)

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)
# Refuse SEG objects whose decoded frames would exceed this many voxels (untrusted input).
_MAX_VOXELS = 2_000_000_000
# Position tolerances, as fractions of the spacing: along the slice normal / within the plane.
_NORMAL_TOL = 0.2
_INPLANE_TOL = 0.1




class SegNotWritable(InputError):
    """No valid DICOM SEG can be made: the source lacks identifiers a SEG must reference, or the
    SEG built fails validation. The message says why in one line (no header values)."""


#: Identifiers every referenced source image must carry (Type 1 references of the SEG IOD).
_SOURCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPClassUID", "SOPInstanceUID")
#: Parse errors pydicom (and highdicom on top of it) raise on malformed files.
_PYDICOM_ERRORS = (EOFError, OSError, ValueError, KeyError, TypeError, NotImplementedError, IndexError,
                   AttributeError, OverflowError, RuntimeError, struct.error, BytesLengthException)


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _spatial(arr: np.ndarray, what: str) -> np.ndarray:
    """(1, i, j, k) or (i, j, k) -> (i, j, k) (:func:`medseg.geometry.spatial`, 3D only)."""
    return spatial(arr, what, ndims=(3,))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass(frozen=True)
class _Plane:
    """One source plane: which dataset / frame, its LPS position and in-plane unit vectors."""

    ds_index: int
    frame: int | None  # 0-based frame of a multi-frame source, None for a single-frame instance
    position: np.ndarray  # LPS mm
    row_dir: np.ndarray  # IOP[0:3]
    col_dir: np.ndarray  # IOP[3:6]
    sop_instance_uid: str


def _first(seq_owner: Any, keyword: str) -> Any:
    seq = getattr(seq_owner, keyword, None)
    return seq[0] if seq else None


def _source_planes(datasets: Sequence[Any]) -> list[_Plane]:
    """Every image plane of the source datasets (single- or multi-frame), LPS geometry."""
    planes: list[_Plane] = []
    for d, ds in enumerate(datasets):
        n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
        if per_frame is not None:
            shared = _first(ds, "SharedFunctionalGroupsSequence")
            shared_ori = _first(shared, "PlaneOrientationSequence") if shared is not None else None
            for f, item in enumerate(per_frame):
                pos = _first(item, "PlanePositionSequence")
                ori = _first(item, "PlaneOrientationSequence") or shared_ori
                if pos is None or ori is None:
                    raise GeometryError(f"frame {f + 1} of the multi-frame source "
                                        f"{ds.SOPInstanceUID} has no plane position/orientation")
                iop = np.asarray(ori.ImageOrientationPatient, dtype=float)
                planes.append(_Plane(d, f, np.asarray(pos.ImagePositionPatient, dtype=float),
                                     _unit(iop[:3]), _unit(iop[3:]), str(ds.SOPInstanceUID)))
        else:
            if n_frames != 1:
                raise GeometryError(f"source instance {ds.SOPInstanceUID} has {n_frames} frames but "
                                    "no per-frame geometry; it cannot be a SEG source")
            if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
                raise GeometryError(f"source instance {ds.SOPInstanceUID} lacks ImagePositionPatient/"
                                    "ImageOrientationPatient; a SEG needs a 3D-positioned source")
            iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
            planes.append(_Plane(d, None, np.asarray(ds.ImagePositionPatient, dtype=float),
                                 _unit(iop[:3]), _unit(iop[3:]), str(ds.SOPInstanceUID)))
    return planes


def _grid_lps(affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LPS affine, unit vectors of i/j/k as columns, spacings in mm) of a RAS affine."""
    lps = _LPS @ affine_ras
    cols = lps[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise GeometryError("the affine has a zero-length axis; the grid is degenerate")
    return lps, cols / spacing, spacing


def _match_planes(affine_ras: np.ndarray, shape: tuple[int, int, int], planes: Sequence[_Plane],
                  what: str, may_miss: frozenset[int] = frozenset()) -> list[_Plane | None]:
    """For each k of the grid, the source plane at the same place in space (GeometryError if any k
    has none, a plane is matched twice, or orientations differ). Planes k in ``may_miss`` (missing
    slices of the source) get None when no source plane lies there."""
    lps, units, spacing = _grid_lps(affine_ras)
    ni, nj, nk = shape
    normal_tol = _NORMAL_TOL * spacing[2]
    inplane_tol = _INPLANE_TOL * float(min(spacing[0], spacing[1]))
    positions = np.array([p.position for p in planes]) if planes else np.zeros((0, 3))
    used: dict[int, int] = {}
    out: list[_Plane | None] = []
    if not len(planes):
        raise GeometryError(f"{what}: the source has no image planes to match")
    for k in range(nk):
        origin = (lps @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
        delta = positions - origin
        along = np.abs(delta @ units[:, 2])
        across = np.linalg.norm(delta - np.outer(delta @ units[:, 2], units[:, 2]), axis=1)
        best = int(np.argmin(along + across))
        if along[best] > normal_tol or across[best] > inplane_tol:
            if k in may_miss:
                out.append(None)
                continue
            raise GeometryError(
                f"{what}: no source slice at plane k={k} (nearest is {along[best]:.3g} mm off along the "
                f"normal, {across[best]:.3g} mm in-plane); the label map is not on the source grid")
        if best in used:
            raise GeometryError(f"{what}: planes k={used[best]} and k={k} fall on the same source slice; "
                                "the slice spacing of the label map does not match the source")
        plane = planes[best]
        if float(plane.row_dir @ units[:, 0]) < 0.999 or float(plane.col_dir @ units[:, 1]) < 0.999:
            raise GeometryError(f"{what}: the label map's i/j axes do not follow the source's "
                                "ImageOrientationPatient; resample it back to the source grid first")
        used[best] = k
        out.append(plane)
    del ni, nj
    return out


# ----------------------------------------------------------------------------------------------
# writer
# ----------------------------------------------------------------------------------------------
def _segment_description(number: int, label: LabelDef, algorithm_name: str, algorithm_version: str,
                         ) -> Any:
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(  # LO values: at most 64 characters
        name=algorithm_name[:64] or "medseg", family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version[:64] or "unknown")
    desc = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label.display[:64],
        segmented_property_category=label.category_code.to_code(),
        segmented_property_type=label.property_code.to_code(),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
        anatomic_regions=[label.anatomic_region.to_code()] if label.anatomic_region else None,
        display_color=hd.color.CIELabColor.from_rgb(*label.colour_rgb),
    )
    if label.property_modifier is not None:
        m = label.property_modifier
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            CodedConcept(value=m.value, scheme_designator=m.scheme, meaning=m.meaning)]
    return desc


def _read_files(paths: Sequence[str | Path], shown: Sequence[str]) -> list[Any]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for f, name in zip(paths, shown, strict=True):
        try:
            datasets.append(pydicom.dcmread(f, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise InputError(f"cannot read source DICOM file {Path(name).name}: {scrub(str(exc))}") from exc
    return datasets


def _read_source_datasets(source: Any) -> list[Any]:
    """Headers of the source instances named in ``source.meta['dicom_files']`` (files on disk, or
    members of the archive ``meta['filename_or_obj']`` for a series read from a zip/tar)."""
    meta = getattr(source, "meta", None) or {}
    files = meta.get("dicom_files")
    if not files:
        raise InputError("source has no meta['dicom_files']; pass the MetaTensor that medseg.io.load "
                         "returned for the source DICOM series")
    unique = [f for f in dict.fromkeys(str(f) for f in files) if f]  # "" marks a missing slice
    if all(os.path.isfile(f) for f in unique):
        return _read_files(unique, unique)
    archive = Path(str(meta.get("filename_or_obj", "")))
    from medseg.io.dicom.archive import extracted, is_archive

    if archive.is_file() and is_archive(archive):
        with extracted(archive) as (_, names):
            by_member = {str(member): path for path, member in names.items()}
            # the DICOM reader names archive members "ARCHIVE!member"
            by_member.update({f"{archive}!{m}": p for m, p in list(by_member.items())})
            missing = [f for f in unique if f not in by_member]
            if missing:
                raise InputError(f"{len(missing)} source file(s) are not in the archive {archive.name}; "
                                 "load the source series again")
            return _read_files([by_member[f] for f in unique], unique)
    gone = next(f for f in unique if not os.path.isfile(f))
    raise InputError(f"source DICOM file {Path(gone).name} is no longer on disk; load the source "
                     "series from a folder that still exists")


def _uid_text(ds: Any, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "").strip()
    except _PYDICOM_ERRORS:
        return ""


def _source_problem(datasets: Sequence[Any]) -> str:
    """Why a SEG cannot reference ``datasets`` validly ("" when it can). No header values."""
    from pydicom.uid import UID

    n = len(datasets)
    bad = {kw: sum(1 for ds in datasets if not UID(_uid_text(ds, kw)).is_valid) for kw in _SOURCE_UIDS}
    bad = {kw: c for kw, c in bad.items() if c}
    if bad:
        what = ", ".join(f"{kw} in {c} of {n}" for kw, c in bad.items())
        return (f"the source images lack identifiers a DICOM SEG must reference (empty or invalid: {what}; "
                "as an anonymised export often has them)")
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        distinct = len({_uid_text(ds, kw) for ds in datasets})
        if distinct > 1:
            return f"the source images carry {distinct} different {kw}s; a DICOM SEG references one"
    if len({_uid_text(ds, "SOPInstanceUID") for ds in datasets}) < n:
        return "several source images share one SOPInstanceUID; a DICOM SEG cannot tell them apart"
    return ""


def seg_source_problem(source: Any) -> str:
    """Why no valid DICOM SEG can reference ``source`` (the MetaTensor medseg read from a DICOM
    series), "" when one can. Re-reads the source headers; raises :class:`InputError` when they
    are gone."""
    return _source_problem(_read_source_datasets(source))


def _walk_uids(ds: Any, out: list[str]) -> None:
    """Every UID anywhere in ``ds`` that is not empty must be valid."""
    from pydicom.uid import UID

    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _walk_uids(item, out)
        elif elem.VR == "UI" and elem.value not in (None, ""):
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            if not all(UID(str(v)).is_valid for v in values):
                out.append(f"{elem.keyword or elem.tag} holds an invalid UID")


def _seg_problems(seg: Any, n_segments: int) -> list[str]:
    """Required attributes of the SEG built, checked before it is written (Type 1 identifiers,
    references to every source instance, per-frame geometry and segment identification)."""
    from pydicom.uid import UID

    problems: list[str] = []

    def need(owner: Any, keyword: str, where: str) -> None:
        if not UID(_uid_text(owner, keyword)).is_valid:
            problems.append(f"{where}{keyword} is empty or invalid")

    if _uid_text(seg, "SOPClassUID") != _SEG_SOP_CLASS:
        problems.append("SOPClassUID is not Segmentation Storage")
    for kw in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        need(seg, kw, "")
    refs = seg.get("ReferencedSeriesSequence") or []
    if not refs:
        problems.append("ReferencedSeriesSequence is empty")
    for item in refs:
        need(item, "SeriesInstanceUID", "ReferencedSeriesSequence ")
        instances = item.get("ReferencedInstanceSequence") or []
        if not instances:
            problems.append("ReferencedInstanceSequence is empty")
        for inst in instances:
            need(inst, "ReferencedSOPClassUID", "ReferencedInstanceSequence ")
            need(inst, "ReferencedSOPInstanceUID", "ReferencedInstanceSequence ")
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != int(seg.get("NumberOfFrames") or 0):
        problems.append("PerFrameFunctionalGroupsSequence does not have one item per frame")
    shared = _first(seg, "SharedFunctionalGroupsSequence")
    for item in per_frame:
        if any(_first(item, kw) is None and (shared is None or _first(shared, kw) is None)
               for kw in ("PlanePositionSequence", "SegmentIdentificationSequence")):
            problems.append("a frame lacks its plane position or segment identification")
            break
        deriv = _first(item, "DerivationImageSequence")
        for src in (deriv.get("SourceImageSequence") or []) if deriv is not None else []:
            need(src, "ReferencedSOPClassUID", "SourceImageSequence ")
            need(src, "ReferencedSOPInstanceUID", "SourceImageSequence ")
    if len(seg.get("SegmentSequence") or []) != n_segments:
        problems.append("SegmentSequence does not describe every segment")
    _walk_uids(seg, problems)
    return list(dict.fromkeys(problems))


def _check_written(path: Path, n_segments: int, n_frames: int) -> None:
    """Read the written file back strictly (pydicom VR rules, then highdicom's SEG reader)."""
    import highdicom as hd
    import pydicom
    from pydicom import config

    try:
        with config.strict_reading():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for _ in ds.iterall():  # decode every value under the strict rules
                pass
        seg = hd.seg.segread(path)
    except _PYDICOM_ERRORS as exc:
        raise SegNotWritable(f"the DICOM SEG built does not read back ({type(exc).__name__}: "
                             f"{scrub(str(exc), 200)})") from None
    if seg.number_of_segments != n_segments or int(seg.NumberOfFrames) != n_frames:
        raise SegNotWritable("the DICOM SEG read back differs from the one built (segments or frames)")


def write_dicom_seg(
    labels: Any,
    source: Any,
    out_path: str | os.PathLike[str],
    *,
    label_names: Mapping[int, str],
    algorithm_name: str = "medseg",
    algorithm_version: str = medseg.__version__,
    series_description: str = "medseg segmentation",
    manufacturer: str = "medseg",
    series_number: int = 300,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Path:
    """Write an integer label map as a BINARY DICOM SEG in the study of its source series.

    ``labels``: integer MetaTensor (1, i, j, k) on exactly the grid of ``source`` (RAS affine);
    ``source``: the MetaTensor medseg read from the DICOM series (its ``meta['dicom_files']`` are
    re-read). Each plane k is matched to its source instance by its position in space (LPS mm);
    :class:`GeometryError` if the grids differ. One segment per label value present (segments are
    numbered 1..n in increasing label value; an all-zero map gets one empty segment per entry of
    ``label_names``); ``label_names`` maps label value -> name, described
    with the SNOMED CT codes of :mod:`medseg.labels` (unknown names: generic "Tissue"). Empty
    frames are omitted. ``series_instance_uid`` / ``sop_instance_uid`` default to fresh UIDs; pass
    UIDs derived from the input and model to make a rerun produce the same instance (batch jobs
    rely on this so a PACS never receives a second SEG for the same input and model).
    Patient/study attributes are copied from the source as the SEG IOD
    requires; nothing is logged about them. Raises :class:`SegNotWritable` (one line, before
    anything is built) when the source lacks identifiers a SEG must reference, or when the SEG
    built fails validation (required attributes and UIDs, strict VR rules, highdicom's reader);
    nothing is written then. The file is validated by highdicom and written
    atomically. Returns ``out_path``.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    lab = _spatial(_as_numpy(labels), "labels")
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)) or not np.array_equal(lab, np.round(lab)):
            raise InputError("labels hold non-integer values; pass an integer label map, not "
                             "probabilities")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind not in "iub":
        raise InputError(f"labels must be an integer array, got dtype {lab.dtype}")
    if lab.dtype.kind == "b":
        lab = lab.astype(np.uint8)
    if lab.size and lab.dtype.kind == "i" and lab.min() < 0:
        raise InputError("labels hold negative values; label values must be 0 (background) or positive")
    if lab.size and int(lab.max()) > 65535:
        raise InputError(f"label value {int(lab.max())} is too large; DICOM SEG numbers segments below 65536")
    src_shape = tuple(_spatial(_as_numpy(source), "source").shape) if hasattr(source, "shape") else None
    if src_shape is not None and src_shape != lab.shape:
        raise GeometryError(f"label map shape {lab.shape} differs from the source's {src_shape}; "
                            "resample the labels to the source grid first")
    lab_aff = _affine_of(labels, "labels")
    src_aff = _affine_of(source, "source")
    _, _, sp = _grid_lps(src_aff)
    if not np.allclose(lab_aff[:3, :3], src_aff[:3, :3], atol=1e-3 * float(sp.min())) or \
            np.linalg.norm(lab_aff[:3, 3] - src_aff[:3, 3]) > _INPLANE_TOL * float(sp.min()):
        raise GeometryError("the label map's affine differs from the source's; resample the labels to "
                            "the source grid first")

    names = {int(k): str(v) for k, v in label_names.items()}
    present = [int(v) for v in np.flatnonzero(np.bincount(lab.ravel())) if v != 0] if lab.size else []
    if not present:
        # an empty result is still a result (e.g. no nodule found): describe every named label,
        # highdicom then stores empty frames, as a SEG needs at least one
        present = sorted(v for v in names if v > 0)
        if not present:
            raise InputError("the label map is empty and label_names names no label; a DICOM SEG "
                             "needs at least one segment")
        log.info("label map is empty: writing %d empty segment(s)", len(present))
    missing = [v for v in present if v not in names]
    if missing:
        raise ConfigError(f"label values {missing} are in the label map but not in label_names; "
                          "name every label value")

    datasets = _read_source_datasets(source)
    problem = _source_problem(datasets)
    if problem:
        raise SegNotWritable(problem)
    src_meta = getattr(source, "meta", None) or {}
    may_miss = frozenset(int(k) for k in (src_meta.get("missing_slices") or []))
    matched = _match_planes(lab_aff, lab.shape, _source_planes(datasets), "write_dicom_seg", may_miss)
    ni, nj, nk = lab.shape
    ks = [k for k, p in enumerate(matched) if p is not None]
    planes = [p for p in matched if p is not None]
    empty_missing = [k for k, p in enumerate(matched) if p is None and np.any(lab[:, :, k])]
    if empty_missing:
        raise GeometryError(f"labels on plane(s) k={empty_missing}, where the source series has a missing "
                            "slice; a SEG can only segment existing source images")
    used_ds = sorted({p.ds_index for p in planes})
    multi = any(p.frame is not None for p in planes)
    if multi and len(used_ds) != 1:
        raise InputError("a SEG can reference only one multi-frame source instance; this label map "
                         "spans several")
    for d in used_ds:
        ds = datasets[d]
        if int(ds.Rows) != nj or int(ds.Columns) != ni:
            raise GeometryError(f"source images are {ds.Columns}x{ds.Rows} (columns x rows) but the label "
                                f"map plane is {ni}x{nj}; resample the labels to the source grid first")

    # segment numbers 1..n in increasing label value
    seg_of_value = {v: n for n, v in enumerate(present, start=1)}
    remap = np.zeros(max(int(lab.max()), max(present)) + 1, dtype=np.uint16)
    for v, n in seg_of_value.items():
        remap[v] = n
    seg_numbers = remap[lab]  # (i, j, k)

    if multi:
        ds = datasets[used_ds[0]]
        source_images = [ds]
        n_frames = int(getattr(ds, "NumberOfFrames", 1))
        pixel = np.zeros((n_frames, nj, ni), dtype=np.uint16)
        for k, p in zip(ks, planes, strict=True):
            pixel[p.frame] = seg_numbers[:, :, k].T
    else:
        source_images = [datasets[p.ds_index] for p in planes]
        pixel = np.ascontiguousarray(np.transpose(seg_numbers[:, :, ks], (2, 1, 0)))  # (k, rows=j, cols=i)

    descriptions = []
    for v, n in seg_of_value.items():
        name = names[v]
        label = lookup_label(name) or generic_label(name)
        descriptions.append(_segment_description(n, label, algorithm_name, str(algorithm_version)))

    try:
        seg = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=pixel,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=series_instance_uid or generate_uid(),
            series_number=int(series_number),
            sop_instance_uid=sop_instance_uid or generate_uid(),
            instance_number=1,
            manufacturer=manufacturer[:64],
            manufacturer_model_name="medseg",
            software_versions=str(medseg.__version__),
            device_serial_number="medseg",
            content_description=series_description[:64] or None,
            content_label="SEGMENTATION",
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"highdicom refused to build the SEG: {scrub(str(exc))}") from exc
    seg.SeriesDescription = series_description[:64]
    problems = _seg_problems(seg, len(descriptions))
    if problems:
        raise SegNotWritable(f"the DICOM SEG built is invalid ({'; '.join(problems[:3])})")

    out = Path(out_path)
    with atomic_path(out) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
        _check_written(tmp, len(descriptions), int(seg.NumberOfFrames))
    log.info("wrote DICOM SEG with %d segment(s), %d frame(s) to %s", len(descriptions),
             int(seg.NumberOfFrames), out.name)
    return out


# ----------------------------------------------------------------------------------------------
# reader
# ----------------------------------------------------------------------------------------------
def _check_header(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        head = pydicom.dcmread(path, stop_before_pixels=True)
        for _ in head.iterall():  # decode every value now: corruption surfaces here, as one line
            pass
    except (InvalidDicomError, *_PYDICOM_ERRORS) as exc:
        raise InputError(f"{path.name} is not a readable DICOM file (header corrupt or truncated: "
                         f"{type(exc).__name__})") from None
    if str(getattr(head, "SOPClassUID", "")) not in (_SEG_SOP_CLASS, _LABELMAP_SEG_SOP_CLASS):
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
    shared = _first(seg, "SharedFunctionalGroupsSequence")
    ori = _first(shared, "PlaneOrientationSequence") if shared is not None else None
    iop = np.asarray(ori.ImageOrientationPatient, dtype=float) if ori is not None else None
    shared_ident = _first(shared, "SegmentIdentificationSequence") if shared is not None else None
    frames = []
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        # a SEG of one segment may identify it once for all frames, in the shared groups
        ident = _first(item, "SegmentIdentificationSequence") or shared_ident
        if ident is None and not labelmap:
            raise InputError(f"SEG frame {f + 1} has no SegmentIdentificationSequence")
        pos = _first(item, "PlanePositionSequence")
        position = np.asarray(pos.ImagePositionPatient, dtype=float) if pos is not None else None
        if iop is None:
            fori = _first(item, "PlaneOrientationSequence")
            if fori is not None:
                iop = np.asarray(fori.ImageOrientationPatient, dtype=float)
        uid = None
        deriv = _first(item, "DerivationImageSequence")
        if deriv is not None:
            srcimg = _first(deriv, "SourceImageSequence")
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
    ref_arr_shape = tuple(_spatial(_as_numpy(reference), "reference").shape)
    ni, nj, nk = ref_arr_shape
    ref_aff = _affine_of(reference, "reference")
    lps, units, spacing = _grid_lps(ref_aff)
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
    if iop is not None and (float(_unit(iop[:3]) @ units[:, 0]) < 0.999
                            or float(_unit(iop[3:]) @ units[:, 1]) < 0.999):
        raise GeometryError(f"{name} has an image orientation different from the reference's")
    uids = [str(u) for u in ref_meta.get("sop_instance_uids") or []]
    uid_to_k = {u: k for k, u in enumerate(uids)} if len(set(uids)) == len(uids) == nk else {}
    origins = np.array([(lps @ np.array([0.0, 0.0, float(k), 1.0]))[:3] for k in range(nk)])
    normal_tol = _NORMAL_TOL * spacing[2]
    inplane_tol = _INPLANE_TOL * float(min(spacing[0], spacing[1]))
    binary = _frames_binary(seg)
    placed: list[tuple[int, int, int]] = []  # (segment number, k, frame)
    for f, (segno, position, uid) in enumerate(frames):
        k_pos = None
        if position is not None:
            delta = origins - position
            along = np.abs(delta @ units[:, 2])
            across = np.linalg.norm(delta - np.outer(delta @ units[:, 2], units[:, 2]), axis=1)
            best = int(np.argmin(along + across))
            if along[best] > normal_tol or across[best] > inplane_tol:
                raise GeometryError(f"{name} frame {f + 1} lies {along[best]:.3g} mm off the nearest "
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
    return _relabel(np.ascontiguousarray(painted), values), _LPS @ aff


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
    p = Path(path)
    _check_header(p)
    try:
        return _read_seg(p, reference, label_names)
    except MedsegError:
        raise
    except (*_PYDICOM_ERRORS, MemoryError, sqlite3.Error) as exc:  # broken past the header (highdicom
        # indexes frames in sqlite)
        raise InputError(f"{p.name} is not a valid DICOM SEG ({type(exc).__name__} while decoding it); "
                         "re-export or re-transfer the file") from None


def _read_seg(p: Path, reference: Any | None, label_names: Mapping[int, str] | None) -> Any:
    import highdicom as hd
    from monai.data import MetaTensor

    seg = hd.seg.segread(p)
    segments = {int(s.SegmentNumber): str(getattr(s, "SegmentLabel", f"segment {s.SegmentNumber}"))
                for s in seg.SegmentSequence}
    values = _label_value_map(segments, label_names)

    if reference is not None:
        arr = _read_on_reference(seg, reference, p.name, values)
        affine = _affine_of(reference, "reference")
    else:
        arr, affine = _read_own_geometry(seg, p.name, values)
    spacing = spacing_of(affine, 3)
    meta = {
        "space": "RAS",
        "kind": "label",
        "format": "dicom-seg",
        "modality": "SEG",
        "spacing": spacing,
        "filename_or_obj": str(p),
        "series_instance_uid": str(getattr(seg, "SeriesInstanceUID", "")),
        "study_instance_uid": str(getattr(seg, "StudyInstanceUID", "")),
        "frame_of_reference_uid": str(getattr(seg, "FrameOfReferenceUID", "")),
        "series_description": str(getattr(seg, "SeriesDescription", "")),
        "labels": {values[n]: segments[n] for n in sorted(segments)},
        "segment_numbers": {values[n]: n for n in sorted(segments)},
    }
    import torch

    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)[None]), affine=torch.as_tensor(affine),
                      meta=meta)
