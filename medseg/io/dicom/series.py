"""Finding DICOM series in a folder, file or archive, and choosing one.

Headers are read without pixel data and grouped by SeriesInstanceUID. Files that are not DICOM
(no 'DICM' preamble) are skipped and counted; non-image DICOM objects (SEG, RTSTRUCT, SR, PR,
DICOMDIR, ...) are counted separately and are not offered as image series.

Anonymised exports often keep SeriesInstanceUID (and the study and SOP UIDs) present but empty.
Such images are grouped by what is left: modality, frame of reference, study UID if any,
orientation (rounded), pixel spacing, rows/columns, frames per file, series number and
description. A group in which two images lie at the same position along the slice normal holds
several volumes: it is split by AcquisitionNumber, then by AcquisitionDate/Time (kept only when
every part is a stack of at least two images); if a position still repeats, the group is
ambiguous and reading it raises :class:`InputError`. Each group gets a synthetic key
``anon-<16 hex>`` (a hash of its grouping keys and of the sorted sha256 of its files' bytes),
which is clearly not a DICOM UID and is used wherever a SeriesInstanceUID would be (``--series``,
``medseg info``, case folder names). One warning per scan says how many images were grouped so.

Selection rules (``select_series``): a SeriesInstanceUID, or rules joined with ",":
``modality=CT``, ``description~REGEX`` (case-insensitive search), ``number=N`` (SeriesNumber),
``uid=UID`` and ``largest`` (the series with the most slices/frames among those left).

Size (~415 lines): one concern, grouping headers into series; the anonymised-export grouping
and splitting rules above are what makes it long, and they share the header keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg._hashing import sha256_file
from medseg.errors import InputError, SeriesSelectionError
from medseg.io.dicom._progress import progress_iter
from medseg.io.dicom.archive import extracted, is_archive
from medseg.io.dicom.headers import Header, read_header

log = logging.getLogger("medseg.io.dicom")


@dataclass
class SeriesInfo:
    """One image series found on disk (headers only).

    ``files`` are the paths of its files; for an archive they are member names inside the
    archive (the archive itself is ``source``), because the extracted copies are temporary.
    """

    series_instance_uid: str
    modality: str
    series_description: str
    n_instances: int
    files: list[Path]
    n_frames: int = 0
    series_number: int | None = None
    study_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_class_uid: str = ""
    rows: int = 0
    columns: int = 0
    source: Path | None = None
    headers: list[Header] = field(default_factory=list, repr=False, compare=False)
    #: True when the files have an empty SeriesInstanceUID and ``series_instance_uid`` is the
    #: synthetic ``anon-<16 hex>`` key (see the module doc).
    anonymous: bool = False
    #: For an anonymous series: sha256 of its files' sorted sha256 digests (its input identity).
    content_sha256: str = ""
    #: Why this series cannot be read (an ambiguous anonymous group); "" when it can.
    problem: str = ""

    def summary(self) -> str:
        """One line for messages and `medseg info` (no patient data)."""
        desc = self.series_description or "(no description)"
        num = f"#{self.series_number} " if self.series_number is not None else ""
        count = f"{self.n_instances} files" if self.n_frames == self.n_instances else \
            f"{self.n_instances} files/{self.n_frames} frames"
        key = "key" if self.anonymous else "UID"
        flag = " (ambiguous, cannot be read)" if self.problem else ""
        return (f"{num}{desc!r} {self.modality or '?'} {count} {self.rows}x{self.columns} "
                f"{key}={self.series_instance_uid}{flag}")


@dataclass
class ScanResult:
    series: list[SeriesInfo]
    n_files: int
    skipped_non_dicom: int
    skipped_non_image: int


def _iter_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


#: Prefix of the synthetic key of a series whose SeriesInstanceUID is empty (never a DICOM UID,
#: which holds digits and dots only).
ANON_PREFIX = "anon-"
#: Positions along the slice normal closer than this (mm) count as the same position.
_SAME_POSITION_MM = 0.01
#: Keys already warned about in this process (``medseg info`` scans a folder twice).
_warned: set[str] = set()


#: Prefix of the key of a series whose SeriesInstanceUID is not a valid DICOM UID.
INVALID_UID_PREFIX = "invalid-uid-"


def _shown_uid(uid: str) -> str:
    """The key a series is known by: its SeriesInstanceUID when that is a valid DICOM UID (digits
    and dots, at most 64 characters), else ``invalid-uid-<16 hex of its sha256>``, so that a
    header string that is not a UID (a name typed into it, ``1.2/../x``) is never printed."""
    from medseg.io.dicom.uid import path_safe_uid

    return path_safe_uid(uid, INVALID_UID_PREFIX)


def _text(ds, keyword: str) -> str:
    """A header value as stripped text, "" when absent, empty or undecodable."""
    try:
        value = ds.get(keyword, "")
    except Exception:  # noqa: BLE001 - a malformed value is simply not usable for grouping
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _numbers(ds, keyword: str, n: int, digits: int) -> tuple[float, ...] | str:
    """``n`` numbers rounded to ``digits`` decimals, or the raw text when they are not that."""
    try:
        values = tuple(round(float(v), digits) + 0.0 for v in ds.get(keyword))  # + 0.0: no -0.0
    except Exception:  # noqa: BLE001 - absent or malformed: compare as text
        return _text(ds, keyword)
    return values if len(values) == n and all(np.isfinite(values)) else _text(ds, keyword)


def _grouping_key(h: Header) -> tuple:
    """What must agree between the images of one series when SeriesInstanceUID is empty."""
    ds = h.ds
    return (h.modality, _text(ds, "StudyInstanceUID"), _text(ds, "FrameOfReferenceUID"),
            _numbers(ds, "ImageOrientationPatient", 6, 4), _numbers(ds, "PixelSpacing", 2, 4),
            _text(ds, "Rows"), _text(ds, "Columns"), h.n_frames > 1,
            _text(ds, "SeriesNumber"), _text(ds, "SeriesDescription"))


def _position(h: Header) -> float | None:
    """Position (mm) along the slice normal, None when ImagePositionPatient/orientation are unusable."""
    iop = _numbers(h.ds, "ImageOrientationPatient", 6, 8)
    ipp = _numbers(h.ds, "ImagePositionPatient", 3, 6)
    if isinstance(iop, str) or isinstance(ipp, str) or h.n_frames > 1:
        return None
    normal = np.cross(iop[:3], iop[3:])
    if not np.linalg.norm(normal) > 0.5:
        return None
    return float(np.dot(normal, ipp))


def _repeats(hs: list[Header]) -> int:
    """How many images share their position along the normal with another (unknown counts as shared)."""
    if len(hs) < 2:
        return 0
    pos = [_position(h) for h in hs]
    unknown = sum(p is None for p in pos)
    known = np.sort(np.array([p for p in pos if p is not None]))
    same = np.diff(known) < _SAME_POSITION_MM
    shared = int(np.count_nonzero(np.concatenate([[False], same]) | np.concatenate([same, [False]])))
    return shared + unknown


def _split(hs: list[Header], keywords: tuple[str, ...]) -> list[list[Header]]:
    parts: dict[tuple, list[Header]] = {}
    for h in hs:
        parts.setdefault(tuple(_text(h.ds, k) for k in keywords), []).append(h)
    return list(parts.values())


def _file_sha256(h: Header) -> str:
    digest = h.extra.get("sha256")
    if digest is None:
        try:
            digest = h.extra["sha256"] = sha256_file(h.path)
        except OSError as exc:
            raise InputError(f"{h.name}: cannot be read ({exc.strerror})") from None
    return digest


def _headers_digest(hs: list[Header]) -> str:
    return hashlib.sha256("\n".join(sorted(_file_sha256(h) for h in hs)).encode()).hexdigest()


def content_digest(paths: list[Path]) -> str:
    """Identity of a set of DICOM files by content: sha256 of their sorted sha256 hex digests
    (one per line). Used for series whose SOP Instance UIDs are empty."""
    return hashlib.sha256("\n".join(sorted(sha256_file(p) for p in paths)).encode()).hexdigest()


def group_anonymous(headers: list[Header]) -> dict[str, tuple[list[Header], str]]:
    """Group images with an empty SeriesInstanceUID (see the module doc).

    Returns ``{anon key: (headers, problem)}``; ``problem`` is "" for a usable series, else the
    one-line reason it cannot be read (images at the same position that no key tells apart).
    """
    by_key: dict[tuple, list[Header]] = {}
    for h in headers:
        by_key.setdefault(_grouping_key(h), []).append(h)
    out: dict[str, tuple[list[Header], str]] = {}
    for key, hs in by_key.items():
        parts, problem = [hs], ""
        if _repeats(hs):
            parts = _split(hs, ("AcquisitionNumber",))
            if any(_repeats(p) for p in parts):
                finer = _split(hs, ("AcquisitionNumber", "AcquisitionDate", "AcquisitionTime"))
                if all(len(p) >= 2 and not _repeats(p) for p in finer):
                    parts = finer
                else:
                    parts = [hs]
                    unknown = sum(_position(h) is None for h in hs)
                    where = (f"{unknown} of them have no usable ImagePositionPatient/ImageOrientationPatient"
                             if unknown else f"{_repeats(hs)} of them lie at a position another one has")
                    problem = (f"{len(hs)} images without SeriesInstanceUID share frame of reference, "
                               f"orientation, size, spacing, series number and description, and {where}: "
                               "they cannot be told apart as one series; put each series in its own "
                               "folder or restore the UIDs")
        for part in parts:
            name = hashlib.sha256(repr((key, _text(part[0].ds, "AcquisitionNumber") if len(parts) > 1 else "",
                                        _headers_digest(part))).encode()).hexdigest()[:16]
            out[ANON_PREFIX + name] = (part, problem)
    return out


def _warn_anonymous(n_images: int, keys: list[str]) -> None:
    new = [k for k in keys if k not in _warned]
    if not new:
        return
    _warned.update(new)
    log.warning("%d DICOM image(s) have an empty SeriesInstanceUID (anonymised export?): grouped by frame "
                "of reference, orientation, spacing, size, series number/description and acquisition "
                "into %d series keyed %s", n_images, len(keys), ", ".join(keys))


def scan_files(files: list[Path], *, names: dict[Path, str] | None = None, source: Path | None = None,
               where: str = "", progress: bool = True) -> ScanResult:
    """Read the headers of ``files`` and group the image files by SeriesInstanceUID."""
    names = names or {}
    groups: dict[str, list[Header]] = {}
    anonymous: list[Header] = []
    non_dicom = non_image = 0
    decoded: set = set()  # header elements already decoded in this scan (see headers._convert_all)
    for f in progress_iter(files, total=len(files), desc="reading DICOM headers", enabled=progress):
        h = read_header(f, names.get(f, ""), decoded=decoded)
        if h is None:
            non_dicom += 1
            continue
        if not h.is_image:
            non_image += 1
            continue
        uid = _text(h.ds, "SeriesInstanceUID")
        if not uid:
            anonymous.append(h)
            continue
        groups.setdefault(_shown_uid(uid), []).append(h)
    problems: dict[str, str] = {}
    if anonymous:
        anon_groups = group_anonymous(anonymous)
        for key, (hs, problem) in anon_groups.items():
            if key in groups:  # a file whose real SeriesInstanceUID spells a synthetic key
                raise InputError(f"series {key}: both a SeriesInstanceUID and the key of images without "
                                 "one; rename or move those files")
            groups[key] = hs
            if problem:
                problems[key] = problem
        _warn_anonymous(len(anonymous), list(anon_groups))
    if not files:
        raise InputError(f"{where or 'input'}: empty folder, no files to read")
    if not groups:
        if non_image:
            raise InputError(f"{where or 'input'}: holds {non_image} DICOM object(s) but no image series "
                             "(SEG/RTSTRUCT/SR/DICOMDIR only); read a SEG with read_dicom_seg")
        raise InputError(f"{where or 'input'}: no DICOM files found ({non_dicom} non-DICOM files skipped)")
    if non_dicom or non_image:
        log.warning("%s: skipped %d non-DICOM and %d non-image DICOM files", where or "input",
                    non_dicom, non_image)
    series = []
    for uid, hs in groups.items():
        ds = hs[0].ds
        anon = uid.startswith(ANON_PREFIX) and not _text(ds, "SeriesInstanceUID")
        try:
            number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None
        except (TypeError, ValueError):
            number = None
        series.append(SeriesInfo(
            series_instance_uid=uid,
            modality=hs[0].modality,
            series_description=str(ds.get("SeriesDescription", "") or ""),
            n_instances=len(hs),
            files=[Path(h.display_name) if source is not None else h.path for h in hs],
            n_frames=sum(h.n_frames for h in hs),
            series_number=number,
            study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
            sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
            source=source,
            headers=hs,
            anonymous=anon,
            content_sha256=_headers_digest(hs) if anon else "",
            problem=problems.get(uid, ""),
        ))
    series.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30,
                               s.series_instance_uid))
    return ScanResult(series, len(files), non_dicom, non_image)


@contextlib.contextmanager
def scanned(path: str | Path, *, progress: bool = True) -> Iterator[ScanResult]:
    """Scan a folder (recursively), a single file or a zip/tar(.gz) archive; yield the result.

    For an archive the extracted files exist only inside the ``with`` block.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        yield scan_files(_iter_files(path), where=path.name or str(path), progress=progress)
    elif is_archive(path):
        with extracted(path) as (tmp, names):
            yield scan_files(_iter_files(tmp), names=names, source=path, where=path.name, progress=progress)
    else:
        yield scan_files([path], where=path.name, progress=progress)


def list_series(path: str | Path) -> list[SeriesInfo]:
    """All image series in a folder (recursive), a file, or a zip/tar(.gz) archive.

    Raises :class:`InputError` for an empty folder or one without DICOM images.
    """
    with scanned(path, progress=True) as result:
        return result.series


def describe_series_list(series: list[SeriesInfo]) -> str:
    """Numbered one-line summaries of ``series``."""
    return "; ".join(f"[{n + 1}] {s.summary()}" for n, s in enumerate(series))


_HOW = ("select one with --series UID (API: series=UID) or a rule such as 'modality=CT', "
        "'description~REGEX', 'number=N', 'largest' (combine with ',')")


def select_series(series_list: list[SeriesInfo], selector: str | None) -> SeriesInfo:
    """Choose one series by UID or rules (see module doc). Raises :class:`SeriesSelectionError`."""
    if not series_list:
        raise SeriesSelectionError("no image series to select from")
    if selector is None or not str(selector).strip():
        if len(series_list) == 1:
            return _readable(series_list[0])
        raise SeriesSelectionError(f"{len(series_list)} series found: {describe_series_list(series_list)}; {_HOW}")
    selector = str(selector).strip()
    candidates = list(series_list)
    want_largest = False
    for rule in (r.strip() for r in selector.split(",")):
        if not rule:
            continue
        if rule.lower() == "largest":
            want_largest = True
            continue
        if "~" in rule and "=" not in rule.split("~", 1)[0]:
            key, pattern = rule.split("~", 1)
            if key.strip().lower() not in ("description", "desc", "series_description"):
                raise SeriesSelectionError(f"selector rule {rule!r}: only 'description~REGEX' uses '~'; {_HOW}")
            try:
                rx = re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                raise SeriesSelectionError(f"selector rule {rule!r}: bad regular expression ({exc})") from None
            candidates = [s for s in candidates if rx.search(s.series_description)]
        elif "=" in rule:
            key, value = (x.strip() for x in rule.split("=", 1))
            key = key.lower()
            if key == "modality":
                candidates = [s for s in candidates if s.modality.upper() == value.upper()]
            elif key in ("uid", "series_instance_uid"):
                candidates = [s for s in candidates if s.series_instance_uid == value]
            elif key in ("number", "series_number"):
                candidates = [s for s in candidates if str(s.series_number) == value]
            else:
                raise SeriesSelectionError(f"selector rule {rule!r}: unknown key {key!r}; {_HOW}")
        else:
            candidates = [s for s in candidates if s.series_instance_uid == rule]
    if not candidates:
        raise SeriesSelectionError(f"no series matches {selector!r}; found: "
                                   f"{describe_series_list(series_list)}")
    if want_largest:
        sizes = np.array([s.n_frames for s in candidates])
        if np.sum(sizes == sizes.max()) > 1:
            tied = [s for s in candidates if s.n_frames == sizes.max()]
            raise SeriesSelectionError(f"'largest' is ambiguous, {len(tied)} series have {sizes.max()} "
                                       f"slices: {describe_series_list(tied)}; add a rule or give the UID")
        return _readable(candidates[int(np.argmax(sizes))])
    if len(candidates) > 1:
        raise SeriesSelectionError(f"{selector!r} matches {len(candidates)} series: "
                                   f"{describe_series_list(candidates)}; {_HOW}")
    return _readable(candidates[0])


def _readable(info: SeriesInfo) -> SeriesInfo:
    """``info`` unless it is an ambiguous anonymous group (InputError with the reason)."""
    if info.problem:
        raise InputError(f"series {info.series_instance_uid}: {info.problem}")
    return info
