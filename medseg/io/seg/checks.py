"""Checks on a DICOM SEG before it is renamed into place: required attributes and UIDs of the
dataset built (:func:`seg_problems`), then the written file read back strictly
(:func:`check_written`). :func:`walk_uids` is shared with the RT Structure Set writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.dicom.source import PYDICOM_ERRORS, first_item, uid_text
from medseg.io.formats import SEG_SOP_CLASS
from medseg.logsafe import scrub


class SegNotWritable(InputError):
    """No valid DICOM SEG can be made: the source lacks identifiers a SEG must reference, or the
    SEG built fails validation. The message says why in one line (no header values)."""


def walk_uids(ds: Any, out: list[str]) -> None:
    """Every UID anywhere in ``ds`` that is not empty must be valid."""
    from pydicom.uid import UID

    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                walk_uids(item, out)
        elif elem.VR == "UI" and elem.value not in (None, ""):
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            if not all(UID(str(v)).is_valid for v in values):
                out.append(f"{elem.keyword or elem.tag} holds an invalid UID")


def seg_problems(seg: Any, n_segments: int) -> list[str]:
    """Required attributes of the SEG built, checked before it is written (Type 1 identifiers,
    references to every source instance, per-frame geometry and segment identification)."""
    from pydicom.uid import UID

    problems: list[str] = []

    def need(owner: Any, keyword: str, where: str) -> None:
        if not UID(uid_text(owner, keyword)).is_valid:
            problems.append(f"{where}{keyword} is empty or invalid")

    if uid_text(seg, "SOPClassUID") != SEG_SOP_CLASS:
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
    shared = first_item(seg, "SharedFunctionalGroupsSequence")
    for item in per_frame:
        if any(first_item(item, kw) is None and (shared is None or first_item(shared, kw) is None)
               for kw in ("PlanePositionSequence", "SegmentIdentificationSequence")):
            problems.append("a frame lacks its plane position or segment identification")
            break
        deriv = first_item(item, "DerivationImageSequence")
        for src in (deriv.get("SourceImageSequence") or []) if deriv is not None else []:
            need(src, "ReferencedSOPClassUID", "SourceImageSequence ")
            need(src, "ReferencedSOPInstanceUID", "SourceImageSequence ")
    if len(seg.get("SegmentSequence") or []) != n_segments:
        problems.append("SegmentSequence does not describe every segment")
    walk_uids(seg, problems)
    return list(dict.fromkeys(problems))


def read_back(path: Path, not_writable: type[InputError], what: str, *, stop_before_pixels: bool = False) -> Any:
    """The file just written, read under pydicom's strict VR rules with every value decoded;
    ``not_writable`` (one line, naming ``what``) when it does not read back."""
    import pydicom
    from pydicom import config

    try:
        with config.strict_reading():
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
            for _ in ds.iterall():  # decode every value under the strict rules
                pass
    except PYDICOM_ERRORS as exc:
        raise not_writable(f"the {what} built does not read back ({type(exc).__name__}: "
                           f"{scrub(str(exc), 200)})") from None
    return ds


def check_written(path: Path, n_segments: int, n_frames: int) -> None:
    """Read the written file back strictly (pydicom VR rules, then highdicom's SEG reader)."""
    import highdicom as hd

    read_back(path, SegNotWritable, "DICOM SEG", stop_before_pixels=True)
    try:
        seg = hd.seg.segread(path)
    except PYDICOM_ERRORS as exc:
        raise SegNotWritable(f"the DICOM SEG built does not read back ({type(exc).__name__}: "
                             f"{scrub(str(exc), 200)})") from None
    if seg.number_of_segments != n_segments or int(seg.NumberOfFrames) != n_frames:
        raise SegNotWritable("the DICOM SEG read back differs from the one built (segments or frames)")
