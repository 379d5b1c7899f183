"""Finding DICOM series in a folder, file or archive, and choosing one.

Headers are read without pixel data and grouped by SeriesInstanceUID. Files that are not DICOM
(no 'DICM' preamble) are skipped and counted; non-image DICOM objects (SEG, RTSTRUCT, SR, PR,
DICOMDIR, ...) are counted separately and are not offered as image series.

Selection rules (``select_series``): a SeriesInstanceUID, or rules joined with ",":
``modality=CT``, ``description~REGEX`` (case-insensitive search), ``number=N`` (SeriesNumber),
``uid=UID`` and ``largest`` (the series with the most slices/frames among those left).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

    def summary(self) -> str:
        """One line for messages and `medseg info` (no patient data)."""
        desc = self.series_description or "(no description)"
        num = f"#{self.series_number} " if self.series_number is not None else ""
        count = f"{self.n_instances} files" if self.n_frames == self.n_instances else \
            f"{self.n_instances} files/{self.n_frames} frames"
        return f"{num}{desc!r} {self.modality or '?'} {count} {self.rows}x{self.columns} UID={self.series_instance_uid}"


@dataclass
class ScanResult:
    series: list[SeriesInfo]
    n_files: int
    skipped_non_dicom: int
    skipped_non_image: int


def _iter_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def scan_files(files: list[Path], *, names: dict[Path, str] | None = None, source: Path | None = None,
               where: str = "", progress: bool = True) -> ScanResult:
    """Read the headers of ``files`` and group the image files by SeriesInstanceUID."""
    names = names or {}
    groups: dict[str, list[Header]] = {}
    non_dicom = non_image = 0
    for f in progress_iter(files, total=len(files), desc="reading DICOM headers", enabled=progress):
        h = read_header(f, names.get(f, ""))
        if h is None:
            non_dicom += 1
            continue
        if not h.is_image:
            non_image += 1
            continue
        uid = str(h.ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise InputError(f"{h.name}: DICOM image without SeriesInstanceUID; cannot group it into a series")
        groups.setdefault(uid, []).append(h)
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
            return series_list[0]
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
        return candidates[int(np.argmax(sizes))]
    if len(candidates) > 1:
        raise SeriesSelectionError(f"{selector!r} matches {len(candidates)} series: "
                                   f"{describe_series_list(candidates)}; {_HOW}")
    return candidates[0]
