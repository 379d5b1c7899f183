"""Where batch cases come from: a folder tree, a CSV manifest, or a PACS query.

Each source returns :class:`~medseg.batch.runner.BatchCase` objects whose ``identity`` is a hash
of the input (file bytes, or the sorted SOP Instance UIDs of a DICOM series) and whose ``case``
name is the folder ``medseg segment`` would write for that input (:mod:`medseg.batch.naming`:
file names without suffix, ``series-<SeriesInstanceUID>`` for DICOM; never a DICOM folder name),
or the ``case`` a CSV manifest gives.

Series rules (``--select``), comma-separated, all must hold::

    modality=CT            description~REGEX       thickness<=3 (mm, also <, >=, >, =)
    orientation=axial      (axial | coronal | sagittal: the dominant axis of the slice normal)
    min-slices=20
"""

from __future__ import annotations

import csv
import hashlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from medseg._hashing import sha256_file
from medseg.batch.naming import (
    check_case_name,
    check_unique,
    dicom_file_series_uid,
    explicit_case_name,
    pipeline_case_name,
)
from medseg.batch.runner import BatchCase
from medseg.errors import ConfigError, InputError
from medseg.io.read import IMAGE_SUFFIXES  # the one suffix table

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "=": operator.eq}


@dataclass(frozen=True)
class FileInput:
    """A single image file (NIfTI, NRRD, ...)."""

    path: Path


@dataclass(frozen=True)
class DicomSeriesInput:
    """One DICOM series inside a folder tree: read with ``load(root, series=info)`` when the scan
    that found it is at hand (its headers are reused: the tree is read once for the whole job),
    else ``load(root, series=uid)``."""

    root: Path
    series_instance_uid: str
    info: Any = field(default=None, compare=False, repr=False)

    @property
    def selector(self) -> Any:
        """What ``load(root, series=...)`` takes for this series."""
        return self.info if self.info is not None else self.series_instance_uid


@dataclass(frozen=True)
class PacsInput:
    """A series on a PACS, retrieved when its case runs (what the query said of it: for
    ``--dry-run`` and the C-GET/C-MOVE completeness check)."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str = field(default="", compare=False)
    series_description: str = field(default="", compare=False)
    n_instances: int = field(default=0, compare=False)


def uid_identity(sop_instance_uids: list[str]) -> str:
    """Identity of a DICOM input: sha256 of its sorted SOP Instance UIDs."""
    return hashlib.sha256("\n".join(sorted(sop_instance_uids)).encode()).hexdigest()


def series_identity(info) -> str:
    """Identity of a DICOM series found on disk: ``dicom:`` + its sorted SOP Instance UIDs, or,
    when any is empty (anonymised), ``dicom-bytes:`` + the sha256 of its files' sorted sha256
    digests (the hash ``medseg segment`` records for such a series). Never a hash of empty UIDs."""
    from medseg.io.dicom.series import content_digest

    uids = [str(h.ds.get("SOPInstanceUID", "") or "").strip() for h in info.headers]
    if uids and all(uids):
        return "dicom:" + uid_identity(uids)
    return "dicom-bytes:" + (info.content_sha256 or content_digest([h.path for h in info.headers]))


def _orientation(iop) -> str:
    import numpy as np

    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:6], float)
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(np.cross(row, col))))]


def parse_rules(select: str | None) -> list[Callable[[object], bool]]:
    """Parse ``--select`` rules into predicates on a :class:`medseg.io.dicom.SeriesInfo`."""
    rules: list[Callable[[object], bool]] = []
    for raw in (select or "").split(","):
        rule = raw.strip()
        if not rule:
            continue
        if rule.startswith("modality="):
            want = rule.split("=", 1)[1].upper()
            rules.append(lambda s, w=want: s.modality.upper() == w)
        elif rule.startswith("description~"):
            try:
                rx = re.compile(rule.split("~", 1)[1], re.IGNORECASE)
            except re.error as exc:
                raise ConfigError(f"bad regular expression in {rule!r}: {exc}") from None
            rules.append(lambda s, rx=rx: bool(rx.search(s.series_description or "")))
        elif rule.startswith("orientation="):
            want = rule.split("=", 1)[1].lower()
            if want not in ("axial", "coronal", "sagittal"):
                raise ConfigError(f"orientation must be axial, coronal or sagittal, not {want!r}")
            rules.append(lambda s, w=want: bool(s.headers) and "ImageOrientationPatient" in s.headers[0].ds
                         and _orientation(s.headers[0].ds.ImageOrientationPatient) == w)
        elif m := re.fullmatch(r"thickness(<=|>=|<|>|=)([0-9.]+)", rule):
            op, value = _OPS[m.group(1)], float(m.group(2))
            rules.append(lambda s, op=op, v=value: bool(s.headers)
                         and op(float(s.headers[0].ds.get("SliceThickness", "nan") or "nan"), v))
        elif m := re.fullmatch(r"min-slices=(\d+)", rule):
            min_slices = int(m.group(1))
            rules.append(lambda s, n=min_slices: s.n_frames >= n)
        else:
            raise ConfigError(f"unknown series rule {rule!r}: use modality=, description~, thickness<=, "
                              "orientation=, min-slices=")
    return rules


def folder_cases(root: str | Path, *, select: str | None = None) -> list[BatchCase]:
    """Every image file under ``root`` is a case; every DICOM series that passes ``select`` too."""
    from medseg.io.dicom import list_series

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root.name} is not a folder")
    cases: list[BatchCase] = []
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        if p.name.lower().endswith(IMAGE_SUFFIXES):
            cases.append(BatchCase(pipeline_case_name(p), "file:" + sha256_file(p), FileInput(p)))
    dicom_candidates = [p for p in files if not p.name.lower().endswith(IMAGE_SUFFIXES)]
    if dicom_candidates:
        try:
            series = list_series(root)
        except InputError:
            series = []  # no DICOM among the other files
        rules = parse_rules(select)
        for s in series:
            if all(rule(s) for rule in rules):
                cases.append(BatchCase(pipeline_case_name(root, s.series_instance_uid),
                                       series_identity(s), DicomSeriesInput(root, s.series_instance_uid, s)))
    for c in cases:
        check_case_name(c.case, root.name)
    check_unique([c.case for c in cases])
    return cases


def csv_cases(manifest: str | Path) -> list[BatchCase]:
    """A CSV with a column ``input`` (file or DICOM folder, relative to the CSV) and optional
    ``series`` (UID or rule for a DICOM folder) and ``case`` (output folder name).

    Without ``case`` a row's output folder is the one ``medseg segment`` writes for its input
    (``series-<SeriesInstanceUID>`` for a DICOM folder or ``.dcm`` file). A ``case`` is made safe
    as a folder name (see :func:`medseg.batch.naming.explicit_case_name`). Raises InputError for a
    missing input, an unusable ``case`` or two rows that map to the same folder.
    """
    manifest = Path(manifest)
    try:
        rows = list(csv.DictReader(manifest.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the manifest {manifest.name}: {exc.__class__.__name__}") from None
    if not rows or "input" not in rows[0]:
        raise InputError(f"the manifest {manifest.name} needs a header row with a column 'input'")
    cases = []
    for n, row in enumerate(rows, start=2):
        where = f"{manifest.name} line {n}"
        p = (manifest.parent / row["input"]).resolve()
        if not p.exists():
            raise InputError(f"{where}: input {row['input']!r} does not exist")
        given = (row.get("case") or "").strip()
        if p.is_dir():
            from medseg.io.dicom import list_series, select_series

            chosen = select_series(list_series(p), row.get("series") or None)
            name = pipeline_case_name(p, chosen.series_instance_uid)
            case = BatchCase(name, series_identity(chosen), DicomSeriesInput(p, chosen.series_instance_uid, chosen))
        else:
            name = pipeline_case_name(p, dicom_file_series_uid(p))
            case = BatchCase(name, "file:" + sha256_file(p), FileInput(p))
        if given:
            case.case, case.explicit_name = explicit_case_name(given, where), True
        else:
            check_case_name(case.case, where)
        cases.append(case)
    check_unique([c.case for c in cases])
    return cases


def pacs_cases(client, query) -> list[BatchCase]:
    """Series on a PACS matching ``query`` (paged, at most ``query.limit``). A case's identity, the
    sorted SOP Instance UIDs of its series, is listed when the case's turn comes, not up front."""
    cases = []
    for s in client.iter_series(query):
        payload = PacsInput(s.study_instance_uid, s.series_instance_uid, s.modality, s.series_description,
                            s.n_instances)
        cases.append(BatchCase(pipeline_case_name("pacs", s.series_instance_uid), payload=payload,
                               resolve=partial(_pacs_identity, client, s)))
    return cases


def _pacs_identity(client, series) -> str:
    return "dicom:" + uid_identity(client.list_instances(series))


def build_cases(source: str, *, select: str | None = None, query=None, options=None, limit: int | None = None,
                client=None):
    """Cases for a ``medseg batch`` SOURCE; returns ``(cases, pacs_client_or_None)``.

    ``query`` (:class:`~medseg.batch.pacs.SeriesQuery`) and ``options``
    (:class:`~medseg.batch.pacs.PacsOptions`) apply to a PACS source (``client``: one already
    made for it); ``limit`` to the others.
    """
    if source.startswith(("http://", "https://", "dimse://")):
        from medseg.batch.pacs import SeriesQuery, client_from_uri

        client = client or client_from_uri(source, options)
        try:
            return pacs_cases(client, query or SeriesQuery(limit=limit)), client
        except BaseException:
            client.close()
            raise
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".csv":
        return csv_cases(path)[:limit], None
    if path.is_dir():
        return folder_cases(path, select=select)[:limit], None
    raise InputError(f"batch source {path.name!r} is not a folder, a .csv manifest or a PACS address "
                     "(http(s)://HOST:PORT/dicom-web, dimse://AET@HOST:PORT)")


def describe_cases(cases: list[BatchCase]) -> str:
    """What a job would process, for ``--dry-run``: counts per modality and series description,
    never an identifier (no UID, no name, no accession number)."""
    from collections import Counter

    groups: Counter[tuple[str, str]] = Counter()
    instances: Counter[tuple[str, str]] = Counter()
    for c in cases:
        p = c.payload
        if isinstance(p, PacsInput):
            k = (p.modality or "?", p.series_description)
            instances[k] += p.n_instances
        elif isinstance(p, DicomSeriesInput) and p.info is not None:
            k = (p.info.modality or "?", p.info.series_description or "")
            instances[k] += int(p.info.n_instances)
        else:
            k = ("file", "")
        groups[k] += 1
    total = sum(instances.values())
    lines = [f"would process {len(cases)} series" + (f" ({total} instances)" if total else ""),
             f"{'series':>7} {'instances':>9}  {'modality':<8}  series description"]
    for (modality, desc), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])):
        shown = "".join(c if c.isprintable() else "?" for c in " ".join(desc.split()))[:64] or "(none)"
        lines.append(f"{n:>7} {instances[(modality, desc)] or '':>9}  {modality:<8}  {shown}")
    return "\n".join(lines)
