"""The batch manifest: an append-only JSON Lines journal, one record per case attempt.

Each line is written with a single ``write`` of a complete line followed by ``fsync``, so a
``kill -9`` can at worst lose the line being written, never corrupt an earlier one; a torn last
line is ignored on reading. A case counts as done only when its ``done`` record is on disk, which
happens after its outputs were renamed into place (atomic), so resume never skips unfinished work.

Records hold no patient identifiers: a record's ``case`` is the name of its output folder (what
``medseg segment`` names it: a file stem, or ``series-<SeriesInstanceUID>``; or a CSV ``case``),
reasons are medseg error messages (which are built without patient data). Records written by
earlier versions (series folders named ``series-<sha256 prefix>``) still resume: resume goes by
``key``, which has not changed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.atomic import atomic_write_text
from medseg.schema import check_version

STATUSES = ("done", "failed", "skipped")

#: manifest lines carry no ``schema_version``: version 1 (see :mod:`medseg.schema`)
RECORD_VERSION = 1


@dataclass
class CaseRecord:
    """One line of the manifest, validated when built (ValueError: an unknown status, a key or
    case that is not a non-empty string, outputs that are not name -> path strings, timings that
    are not numbers, attempts below 1)."""

    key: str  # sha256 of (input identity, weights sha256): the idempotence key
    case: str  # a display name without patient identifiers
    status: str  # done | failed | skipped
    reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    attempts: int = 1
    rank: int = 0
    finished_at: float = field(default_factory=time.time)
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if not (isinstance(self.key, str) and self.key and isinstance(self.case, str) and self.case):
            raise ValueError("a case record needs a key and a case name (non-empty strings)")
        if not isinstance(self.reason, str):
            raise ValueError("reason must be a string")
        if not isinstance(self.outputs, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.outputs.items()):
            raise ValueError("outputs must map file names to paths (strings)")
        if not isinstance(self.timings_s, dict) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in self.timings_s.values()):
            raise ValueError("timings_s must map stage names to seconds")
        if not isinstance(self.attempts, int) or self.attempts < 1 or not isinstance(self.rank, int):
            raise ValueError("attempts must be an integer >= 1 and rank an integer")
        if not isinstance(self.finished_at, int | float) or not isinstance(self.extra, dict):
            raise ValueError("finished_at must be a time stamp and extra an object")

    def to_json(self) -> str:
        """The record as one manifest line (without the newline)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "manifest record") -> CaseRecord:
        """A parsed manifest line; InputError naming ``where`` for one of another shape."""
        check_version(obj, RECORD_VERSION, where)
        try:
            return cls(**{k: v for k, v in obj.items() if k != "schema_version"})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: {exc}") from None


class Manifest:
    """Append-only journal at ``path`` (``manifest.jsonl``)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def records(self) -> list[CaseRecord]:
        """All complete records, oldest first (a torn final line is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(CaseRecord.from_json(json.loads(line)))
            except (json.JSONDecodeError, InputError):
                continue  # torn line from an interrupted write
        return out

    def latest(self) -> dict[str, CaseRecord]:
        """The latest record per key."""
        latest: dict[str, CaseRecord] = {}
        for rec in self.records():
            latest[rec.key] = rec
        return latest

    def done_keys(self) -> set[str]:
        return {k for k, r in self.latest().items() if r.status == "done"}

    def append(self, record: CaseRecord) -> None:
        line = (record.to_json() + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def merge_manifests(parts: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Merge per-rank journals into one manifest with the latest record per key (atomic write)."""
    latest: dict[str, CaseRecord] = {}
    for part in parts:
        for rec in Manifest(part).records():
            prev = latest.get(rec.key)
            if prev is None or rec.finished_at >= prev.finished_at:
                latest[rec.key] = rec
    text = "".join(r.to_json() + "\n" for r in sorted(latest.values(), key=lambda r: r.case))
    atomic_write_text(out, text)
    return Path(out)
