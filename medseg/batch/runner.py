"""Run a function over many cases: resumable, idempotent, failure-isolated, shardable.

* Each case is keyed on ``sha256(input identity, weights sha256)``; a case whose key has a ``done``
  record in the manifest is skipped on rerun, so a model/input pair is processed once.
* One broken case is recorded with its reason and the job goes on. Errors marked transient
  (network, PACS time-outs) are retried with exponential backoff first.
* Under ``torchrun`` the cases are sharded by rank (each case exactly once), each rank keeps its
  own journal, and rank 0 merges them into ``manifest.jsonl`` at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.batch.manifest import CaseRecord, Manifest, merge_manifests
from medseg.errors import ConfigError, MedsegError, PACSError


@dataclass
class BatchCase:
    """A unit of work. ``identity`` must not contain patient identifiers (use hashes / UIDs).

    ``case`` is the output folder name known up front; ``explicit_name`` is True when the user
    chose it (CSV column ``case``), False when it is derived from the input and the process
    function may report the folder it really wrote (:attr:`CaseResult.case`).
    """

    case: str
    identity: str = ""
    payload: Any = None
    explicit_name: bool = False
    #: computes ``identity`` when the case's turn comes (a PACS series lists its instances then,
    #: not before the job starts); the runner resolves it inside the case's retries.
    resolve: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    def key(self, weights_sha256: str) -> str:
        if not self.identity and self.resolve is not None:
            self.identity = self.resolve()
        return hashlib.sha256(f"{self.identity}\n{weights_sha256}".encode()).hexdigest()

    @property
    def order_key(self) -> str:
        """What sharding sorts by: the identity, or the case name while the identity is deferred."""
        return self.case if self.resolve is not None else self.identity


@dataclass
class CaseResult:
    """What a process function returns for a finished case.

    ``case``: the name of the case folder really written, when it differs from the name the case
    had up front (the manifest records this one, so it always points at an existing folder).
    ``reason``: a one-line note recorded with a done case (e.g. why no DICOM SEG was written).
    """

    outputs: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    case: str | None = None
    reason: str = ""


#: Outcomes of a requested store-back, as ``CaseResult.extra["stored"]`` records them: a case whose
#: latest record holds neither of the first two has not reached the PACS yet.
STORED, ALREADY_STORED, NOT_SENT = "stored", "already on the PACS", "not sent"


def store_outcome(extra: dict[str, object]) -> str | None:
    """``stored`` / ``already on the PACS`` / ``not sent`` for a case's ``extra``; None: no store asked."""
    value = extra.get("stored")
    if value is None:
        return None
    return value if value in (STORED, ALREADY_STORED) else NOT_SENT


@dataclass
class BatchSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    manifest: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: store-back outcomes of the cases processed by this run (see :func:`store_outcome`)
    stores: dict[str, int] = field(default_factory=dict)
    not_sent: list[tuple[str, str]] = field(default_factory=list)

    def count_store(self, case: str, extra: dict[str, object]) -> None:
        outcome = store_outcome(extra)
        if outcome is not None:
            self.stores[outcome] = self.stores.get(outcome, 0) + 1
            if outcome == NOT_SENT:
                self.not_sent.append((case, str(extra.get("stored"))))

    def table(self) -> str:
        rate = (self.done / self.seconds * 3600.0) if self.seconds > 0 and self.done else 0.0
        lines = [
            f"{'done':>8} {'failed':>8} {'skipped':>8} {'seconds':>9} {'cases/h':>9}",
            f"{self.done:>8} {self.failed:>8} {self.skipped:>8} {self.seconds:>9.1f} {rate:>9.1f}",
        ]
        for case, reason in self.failures:
            lines.append(f"  failed: {case}: {reason}")
        if self.stores:
            lines.append("DICOM SEG store-back: " + ", ".join(
                f"{self.stores.get(k, 0)} {k}" for k in (STORED, ALREADY_STORED, NOT_SENT)))
            for case, why in self.not_sent:
                lines.append(f"  {case}: {why}")
        if self.manifest is not None:
            lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment, (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard(cases: Sequence[BatchCase], rank: int, world_size: int) -> list[BatchCase]:
    """Deterministic round-robin shard by sorted identity: every case lands on exactly one rank."""
    ordered = sorted(cases, key=lambda c: c.order_key)
    return [c for i, c in enumerate(ordered) if i % world_size == rank]


def _rank_journals(output_dir: Path) -> list[Path]:
    return sorted(output_dir.glob("manifest.rank*.jsonl"))


def journal_paths(output_dir: Path) -> list[Path]:
    """Every journal that can record a done case: the per-rank ones and the merged manifest."""
    return _rank_journals(output_dir) + [output_dir / "manifest.jsonl"]


def latest_done_records(output_dir: str | os.PathLike[str]) -> dict[str, CaseRecord]:
    """Key -> the newest ``done`` record in any journal under ``output_dir``."""
    latest: dict[str, CaseRecord] = {}
    for path in journal_paths(Path(output_dir)):
        for rec in Manifest(path).records():
            if rec.status == "done" and (rec.key not in latest or rec.finished_at >= latest[rec.key].finished_at):
                latest[rec.key] = rec
    return latest


def done_case_folders(output_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Case folder name -> key of the input whose ``done`` record (any journal, newest wins) names it."""
    return {r.case: r.key for r in sorted(latest_done_records(output_dir).values(), key=lambda r: r.finished_at)}


def run_batch(
    cases: Sequence[BatchCase],
    process: Callable[[BatchCase, str], CaseResult],
    *,
    output_dir: str | os.PathLike[str],
    weights_sha256: str,
    resume: bool = True,
    workers: int = 1,
    retries: int = 2,
    backoff_s: float = 1.0,
    transient: tuple[type[BaseException], ...] = (PACSError, TimeoutError, ConnectionError),
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    unfinished: Callable[[CaseRecord], bool] | None = None,
) -> BatchSummary:
    """Process ``cases`` with ``process(case, key)``; returns the summary of this rank.

    ``resume=True`` skips cases whose key is done in any journal under ``output_dir``, unless
    ``unfinished(latest done record)`` says a step of it is still owed (a store-back asked for
    now that an earlier run did not do): those run again, and ``process`` decides what is left
    to do. With ``resume=False`` every case runs again (outputs replaced atomically by ``process``).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_rank, env_world = distributed_rank_world()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    ranks = _Ranks(rank, world_size)
    journal = Manifest(out / f"manifest.rank{rank}.jsonl")
    if rank == 0:
        remove_stale_partials(out)
    ranks.release("partials_removed", rank)  # no rank writes while rank 0 removes a killed run's partials
    done: set[str] = set()
    if resume:
        done = {k for k, r in latest_done_records(out).items() if unfinished is None or not unfinished(r)}

    mine = shard(cases, rank, world_size)
    summary = BatchSummary()
    lock = threading.Lock()
    t_start = time.monotonic()
    todo = []
    for c in mine:  # a deferred identity is resolved when the case's turn comes
        if c.resolve is None and c.key(weights_sha256) in done:
            summary.skipped += 1
        else:
            todo.append(c)

    from medseg.batch.progress import Progress

    bar = Progress(len(todo), enabled=progress and rank == 0)

    def attempt(case: BatchCase) -> None:
        key: str | None = None
        tries = 0
        while True:
            tries += 1
            t0 = time.monotonic()
            try:
                if key is None:
                    key = case.key(weights_sha256)
                    if key in done:
                        with lock:
                            summary.skipped += 1
                            bar.update("skipped")
                        return
                result = process(case, key)
            except transient as exc:
                if tries <= retries:
                    time.sleep(backoff_s * (2 ** (tries - 1)))
                    continue
                record = CaseRecord(key or _unresolved(case, weights_sha256), case.case, "failed",
                                    reason=_reason(exc), attempts=tries, rank=rank)
            except MedsegError as exc:
                record = CaseRecord(key or _unresolved(case, weights_sha256), case.case, "failed",
                                    reason=_reason(exc), attempts=tries, rank=rank)
            except Exception as exc:  # noqa: BLE001 - isolate one case's bug from the rest of the batch
                record = CaseRecord(key or _unresolved(case, weights_sha256), case.case, "failed",
                                    attempts=tries, rank=rank,
                                    reason=f"internal error ({type(exc).__name__}); please report it")
            else:
                timings = dict(result.timings_s)
                timings.setdefault("total", time.monotonic() - t0)
                record = CaseRecord(key, result.case or case.case, "done", outputs=result.outputs, timings_s=timings,
                                    attempts=tries, rank=rank, extra=result.extra, reason=result.reason)
            break
        with lock:
            journal.append(record)
            if record.status == "done":
                summary.done += 1
                summary.count_store(record.case, record.extra)
            else:
                summary.failed += 1
                summary.failures.append((record.case, record.reason))
            bar.update(record.status)

    try:
        if workers <= 1:
            for case in todo:
                attempt(case)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(attempt, todo))
    finally:
        bar.close()

    summary.seconds = time.monotonic() - t_start
    _sum_across_ranks(summary, ranks, rank)
    if rank == 0:  # the merged manifest is an input too: records of journals deleted since are kept
        summary.manifest = merge_manifests(journal_paths(out), out / "manifest.jsonl")
    return summary


def remove_stale_partials(root: Path) -> int:
    """Delete temporary files/folders left by a killed run (``.NAME.*.part*`` from medseg.io.atomic)."""
    import shutil

    removed = 0
    for p in list(root.rglob(".*.part*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
        removed += 1
    return removed


def _unresolved(case: BatchCase, weights_sha256: str) -> str:
    """The key recorded for a case whose identity could not be resolved (never ``done``)."""
    return hashlib.sha256(f"unresolved:{case.case}\n{weights_sha256}".encode()).hexdigest()


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _Ranks:
    """What the ranks of a ``torchrun`` batch tell each other, through the launcher's key-value store.

    No gloo process group: a batch needs no tensors exchanged, and a gloo group's I/O threads
    made one rank now and then abort (SIGABRT, "terminate called without an active exception")
    when its peer left first, even with ``destroy_process_group``. The store (``env://``, the
    one a process group would use) is a plain TCP client; waits poll it without a time limit,
    because one rank's shard may take hours longer than another's, and torchrun stops the
    others when a rank dies.
    """

    POLL_S = 0.2

    def __init__(self, rank: int, world_size: int) -> None:
        self.world_size = world_size
        self.store = None
        if world_size > 1:
            import torch.distributed as dist

            if not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
                raise ConfigError(f"rank {rank} of {world_size}: a sharded batch runs under torchrun "
                                  "(MASTER_ADDR / MASTER_PORT are not set)")
            store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size))
            self.store = dist.PrefixStore("medseg_batch", store)

    def _wait(self, keys: list[str]) -> None:
        while not self.store.check(keys):
            time.sleep(self.POLL_S)

    def release(self, key: str, rank: int) -> None:
        """Rank 0 posts ``key``; every other rank waits until it is posted."""
        if self.store is None:
            return
        if rank == 0:
            self.store.set(key, "1")
        else:
            self._wait([key])

    def gather(self, key: str, rank: int, value: Any) -> list[Any]:
        """Every rank's ``value`` (JSON), in rank order, once all ranks have posted theirs."""
        if self.store is None:
            return [value]
        self.store.set(f"{key}/{rank}", json.dumps(value))
        keys = [f"{key}/{r}" for r in range(self.world_size)]
        self._wait(keys)
        values = [json.loads(self.store.get(k)) for k in keys]
        self.store.add(f"{key}/read", 1)
        if rank == 0:  # under a plain env:// launcher rank 0 hosts the store: it must outlive every read
            while self.store.add(f"{key}/read", 0) < self.world_size:
                time.sleep(self.POLL_S)
        return values


def _sum_across_ranks(summary: BatchSummary, ranks: _Ranks, rank: int) -> None:
    """Wait for all ranks and make the counts, failures and store-back outcomes job totals."""
    if ranks.store is None:
        return
    parts = ranks.gather("summary", rank, {"counts": [summary.done, summary.failed, summary.skipped],
                                           "failures": summary.failures, "stores": summary.stores,
                                           "not_sent": summary.not_sent})
    summary.done, summary.failed, summary.skipped = (sum(p["counts"][i] for p in parts) for i in range(3))
    summary.failures = [(c, r) for p in parts for c, r in p["failures"]]
    summary.stores = {k: sum(p["stores"].get(k, 0) for p in parts) for k in {k for p in parts for k in p["stores"]}}
    summary.not_sent = [(c, w) for p in parts for c, w in p["not_sent"]]
