"""Case names of a batch job: exactly the folder names ``medseg segment`` writes.

A batch case's output folder is ``OUTPUT/<case>/``. ``<case>`` is the name that
:func:`medseg.inference.pipeline.case_name` gives the input (``series-<SeriesInstanceUID>`` for
any DICOM input, else the file name without its format suffix, odd characters replaced by ``_``),
unless a CSV manifest names the case explicitly (column ``case``). The batch computes the name up
front (for the manifest of a case that fails before writing anything) and then reads back the
folder :func:`~medseg.inference.pipeline.segment_file` really wrote, so the two never disagree.

A shared helper that belongs next to ``case_name`` in :mod:`medseg.inference.pipeline` one day:
:func:`pipeline_case_name` only builds the small object ``case_name`` reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from medseg.errors import InputError

#: Names a case folder may not take: the journals and the report ``medseg batch``/``report`` write there.
_RESERVED = re.compile(r"(manifest\.jsonl|manifest\.rank\d+\.jsonl|report\.html|report_files)", re.IGNORECASE)
_ODD = re.compile(r"[^A-Za-z0-9._-]+")


def pipeline_case_name(path: str | Path, series_instance_uid: str | None = None) -> str:
    """The folder name ``segment_file`` gives ``path`` (``series_instance_uid`` for DICOM inputs).

    Calls :func:`medseg.inference.pipeline.case_name` itself, so the two cannot drift apart.
    """
    from medseg.inference.pipeline import case_name

    meta = {"series_instance_uid": series_instance_uid} if series_instance_uid else {}
    return case_name(SimpleNamespace(meta=meta), Path(path))


def dicom_file_series_uid(path: str | Path) -> str | None:
    """SeriesInstanceUID of a single DICOM image file (header only), None for anything else.

    Archives (.zip/.tar) are not opened here (that would extract them once more): their name is
    read back from what ``segment_file`` wrote.
    """
    from medseg.io.dicom.archive import is_archive
    from medseg.io.read import detect_format

    p = Path(path)
    try:
        if not p.is_file() or is_archive(p) or detect_format(p) != "dicom":
            return None
        from medseg.io.dicom import list_series

        found = list_series(p)
    except InputError:
        return None  # not readable as DICOM: the case fails when it runs, with the reader's reason
    return found[0].series_instance_uid if len(found) == 1 else None


def explicit_case_name(text: str, where: str) -> str:
    """A user-given case name (CSV column ``case``) made safe as one folder name.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``; leading and
    trailing dots/underscores are dropped (no ``..``, no hidden folders). ``where`` names the
    manifest line for the error. Raises InputError when nothing usable is left.
    """
    name = _ODD.sub("_", text).strip("._")
    if not name:
        raise InputError(f"{where}: case name {text!r} has no letter or digit; give a plain folder name")
    check_case_name(name, where)
    return name


def check_case_name(name: str, where: str = "") -> None:
    """Refuse case names that would hit the job's own files (manifest, report). InputError."""
    if _RESERVED.fullmatch(name):
        prefix = f"{where}: " if where else ""
        raise InputError(f"{prefix}case name {name!r} is reserved for the batch's own files; rename the input "
                         "or give it a 'case' in a CSV manifest")


def check_unique(names: list[str]) -> None:
    """InputError when several inputs map to one case folder (the second would replace the first)."""
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})
    if dupes:
        raise InputError(f"several inputs map to the same case name: {', '.join(dupes[:5])}; rename them or "
                         "give each its own 'case' in a CSV manifest")
