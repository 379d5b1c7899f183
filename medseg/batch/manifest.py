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

from medseg.io.atomic import atomic_write_text

STATUSES = ("done", "failed", "skipped")


@dataclass
class CaseRecord:
    """One line of the manifest."""

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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


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
                data = json.loads(line)
                out.append(CaseRecord(**data))
            except (json.JSONDecodeError, TypeError):
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
        if record.status not in STATUSES:
            raise ValueError(f"unknown status {record.status!r}")
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
