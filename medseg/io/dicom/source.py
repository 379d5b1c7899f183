"""``DicomSource``: the scanned DICOM series an image was read from, kept in memory so that the
writers that must reference it (DICOM SEG, RT Structure Set) never reopen the source files.

It holds, per source instance, the header the reader already scanned (no pixel data, no private
tags, no icon image: read-only), and derives from them what a SEG/RTSTRUCT needs: the instance
and SOP class UIDs, the plane positions and orientations (LPS mm, per frame for a multi-frame
object), the study/series/frame-of-reference UIDs and the Patient/Study attributes the IOD makes
them copy. The DICOM reader builds one for every series it reads and puts it in
``meta["dicom_source"]``; :func:`source_of` finds it again (or, for a MetaTensor built by hand
with only ``meta["dicom_files"]``, reads those headers once, as medseg did before).

A ``DicomSource`` describes exactly the files of ``meta["dicom_files"]``: a caller who points
``dicom_files`` at other files (or removes it) gets those files read, never the stale headers.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.errors import BytesLengthException

from medseg.errors import GeometryError, InputError
from medseg.logsafe import scrub

__all__ = ["DicomSource", "SourcePlane", "source_of", "uid_text"]

#: Identifiers every referenced source image must carry (Type 1 references of the SEG IOD).
SOURCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPClassUID", "SOPInstanceUID")
#: Parse errors pydicom (and highdicom on top of it) raise on malformed files.
PYDICOM_ERRORS = (EOFError, OSError, ValueError, KeyError, TypeError, NotImplementedError, IndexError,
                  AttributeError, OverflowError, RuntimeError, struct.error, BytesLengthException)
#: PixelData, FloatPixelData, DoubleFloatPixelData, IconImageSequence: never kept in memory.
_BULK = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009, 0x00880200})


def uid_text(ds: Any, keyword: str) -> str:
    """``ds.keyword`` as stripped text, "" when absent or undecodable (never raises)."""
    try:
        return str(ds.get(keyword, "") or "").strip()
    except PYDICOM_ERRORS:
        return ""


def unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def first_item(seq_owner: Any, keyword: str) -> Any:
    """The first item of the sequence ``keyword`` of ``seq_owner``, or None."""
    seq = getattr(seq_owner, keyword, None)
    return seq[0] if seq else None


@dataclass(frozen=True)
class SourcePlane:
    """One source plane: which instance / frame, its LPS position and in-plane unit vectors."""

    ds_index: int
    frame: int | None  # 0-based frame of a multi-frame source, None for a single-frame instance
    position: np.ndarray  # LPS mm
    row_dir: np.ndarray  # IOP[0:3]
    col_dir: np.ndarray  # IOP[3:6]
    sop_instance_uid: str


def _planes(datasets: Sequence[Any]) -> list[SourcePlane]:
    """Every image plane of the source datasets (single- or multi-frame), LPS geometry."""
    planes: list[SourcePlane] = []
    for d, ds in enumerate(datasets):
        n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
        if per_frame is not None:
            shared = first_item(ds, "SharedFunctionalGroupsSequence")
            shared_ori = first_item(shared, "PlaneOrientationSequence") if shared is not None else None
            for f, item in enumerate(per_frame):
                pos = first_item(item, "PlanePositionSequence")
                ori = first_item(item, "PlaneOrientationSequence") or shared_ori
                if pos is None or ori is None:
                    raise GeometryError(f"frame {f + 1} of the multi-frame source "
                                        f"{ds.SOPInstanceUID} has no plane position/orientation")
                iop = np.asarray(ori.ImageOrientationPatient, dtype=float)
                planes.append(SourcePlane(d, f, np.asarray(pos.ImagePositionPatient, dtype=float),
                                          unit(iop[:3]), unit(iop[3:]), str(ds.SOPInstanceUID)))
        else:
            if n_frames != 1:
                raise GeometryError(f"source instance {ds.SOPInstanceUID} has {n_frames} frames but "
                                    "no per-frame geometry; it cannot be a SEG source")
            if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
                raise GeometryError(f"source instance {ds.SOPInstanceUID} lacks ImagePositionPatient/"
                                    "ImageOrientationPatient; a SEG needs a 3D-positioned source")
            iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
            planes.append(SourcePlane(d, None, np.asarray(ds.ImagePositionPatient, dtype=float),
                                      unit(iop[:3]), unit(iop[3:]), str(ds.SOPInstanceUID)))
    return planes


def _bulk(tag: Any) -> bool:
    return tag.is_private or int(tag) in _BULK or (0x6000 <= tag.group <= 0x60FF and tag.element == 0x3000)


def kept_header(ds: Any) -> Any:
    """A read-only copy of a scanned header for :class:`DicomSource`: every public attribute
    (values read now, while the file is there, when the scan deferred them), without pixel data,
    icon image, overlay data or private tags. Elements are shared with ``ds``, not copied."""
    from pydicom.dataset import Dataset

    out = Dataset()
    for tag in ds.keys():
        if _bulk(tag):
            continue
        out.add(ds[tag])
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.file_meta = meta
    return out


@dataclass(frozen=True, eq=False)
class DicomSource:
    """The source instances of an image read from DICOM (see the module doc).

    ``files``: the file of each instance as the reader named it (``ARCHIVE!member`` for an archive
    member), in the order the volume's k axis first meets them; ``scanned``: the datasets the scan
    read, in the same order (shared with the scan, never modified; values the scan deferred were
    read while the files were there); ``headers``: read-only copies of them without pixel data or
    private tags (:func:`kept_header`), made when a writer first asks, so reading a series for
    any other purpose costs nothing more. ``copied``: the datasets are already complete copies
    (read by :meth:`from_files`)."""

    files: tuple[str, ...]
    scanned: tuple[Any, ...]
    copied: bool = False

    def __post_init__(self) -> None:
        if len(self.files) != len(self.scanned) or not self.scanned:
            raise InputError("a DICOM source needs one header per file, and at least one")

    # an immutable value: copies of a MetaTensor's meta share it instead of copying every header
    def __copy__(self) -> DicomSource:
        return self

    def __deepcopy__(self, memo: dict) -> DicomSource:
        return self

    @classmethod
    def from_scan(cls, dicom_files: Sequence[str], headers_by_file: dict[str, Any]) -> DicomSource:
        """From the reader's ``meta["dicom_files"]`` (one per k, "" for a missing slice) and the
        scanned :class:`~medseg.io.dicom.headers.Header` s by file label: called while the files are
        still there (the values the scan deferred, pixel data aside, are read now)."""
        files = tuple(dict.fromkeys(str(f) for f in dicom_files if str(f)))
        datasets = []
        for f in files:
            header = headers_by_file[f]
            for tag in header.extra.get("deferred", ()):
                if not _bulk(tag):
                    header.ds[tag]  # noqa: B018 - read the deferred value from the file now
            datasets.append(header.ds)
        return cls(files, tuple(datasets))

    @classmethod
    def from_files(cls, dicom_files: Sequence[str], archive: str | os.PathLike[str] | None = None) -> DicomSource:
        """Read the headers of ``dicom_files`` (files on disk, or ``ARCHIVE!member`` names of the
        zip/tar ``archive``): for a MetaTensor built by hand with only ``meta["dicom_files"]``."""
        files = tuple(dict.fromkeys(str(f) for f in dicom_files if str(f)))  # "" marks a missing slice
        return cls(files, tuple(_read_headers(files, archive)), copied=True)

    def describes(self, dicom_files: Sequence[str]) -> bool:
        """True when ``dicom_files`` (as in ``meta``) names exactly this source's files."""
        return tuple(dict.fromkeys(str(f) for f in dicom_files if str(f))) == self.files

    @functools.cached_property
    def headers(self) -> tuple[Any, ...]:
        """The instance headers (read-only; no pixel data, icon, overlay data or private tags)."""
        return self.scanned if self.copied else tuple(kept_header(ds) for ds in self.scanned)

    @functools.cached_property
    def planes(self) -> list[SourcePlane]:
        """Every image plane (per frame of a multi-frame object), LPS; GeometryError when an
        instance has no 3D position."""
        return _planes(self.headers)

    @property
    def study_instance_uid(self) -> str:
        return uid_text(self.headers[0], "StudyInstanceUID")

    @property
    def series_instance_uid(self) -> str:
        return uid_text(self.headers[0], "SeriesInstanceUID")

    @property
    def frame_of_reference_uid(self) -> str:
        return uid_text(self.headers[0], "FrameOfReferenceUID")

    @property
    def sop_instance_uids(self) -> list[str]:
        return [uid_text(ds, "SOPInstanceUID") for ds in self.headers]

    @property
    def sop_class_uids(self) -> list[str]:
        return [uid_text(ds, "SOPClassUID") for ds in self.headers]

    def problem(self) -> str:
        """Why a SEG cannot reference these instances validly ("" when it can). No header values."""
        from pydicom.uid import UID

        datasets = self.headers
        n = len(datasets)
        bad = {kw: sum(1 for ds in datasets if not UID(uid_text(ds, kw)).is_valid) for kw in SOURCE_UIDS}
        bad = {kw: c for kw, c in bad.items() if c}
        if bad:
            what = ", ".join(f"{kw} in {c} of {n}" for kw, c in bad.items())
            return (f"the source images lack identifiers a DICOM SEG must reference (empty or invalid: {what}; "
                    "as an anonymised export often has them)")
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            distinct = len({uid_text(ds, kw) for ds in datasets})
            if distinct > 1:
                return f"the source images carry {distinct} different {kw}s; a DICOM SEG references one"
        if len(set(self.sop_instance_uids)) < n:
            return "several source images share one SOPInstanceUID; a DICOM SEG cannot tell them apart"
        return ""


def source_of(image: Any) -> DicomSource:
    """The :class:`DicomSource` of ``image`` (a MetaTensor or Volume medseg read from DICOM, or an
    :class:`~medseg.io.image.Image`): the one the reader attached when it still describes
    ``meta["dicom_files"]``, else those files' headers read now. InputError when there are none."""
    src = getattr(image, "dicom", None)
    if isinstance(src, DicomSource):
        return src
    meta = getattr(image, "meta", None) or {}
    files = [str(f) for f in meta.get("dicom_files") or []]
    src = meta.get("dicom_source")
    if isinstance(src, DicomSource) and src.describes(files):
        return src
    if not any(files):
        raise InputError("source has no meta['dicom_files']; pass the MetaTensor that medseg.io.load "
                         "returned for the source DICOM series")
    return DicomSource.from_files(files, meta.get("filename_or_obj"))


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


def _read_headers(unique: Sequence[str], archive: str | os.PathLike[str] | None) -> list[Any]:
    """Headers of ``unique`` files on disk, or members of the zip/tar ``archive``."""
    if all(os.path.isfile(f) for f in unique):
        return _read_files(unique, unique)
    archive = Path(str(archive or ""))
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
