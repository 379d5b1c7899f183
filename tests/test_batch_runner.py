"""The batch runner: resume, idempotence, failure isolation, retries, sharding, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from medseg.batch.manifest import Manifest
from medseg.batch.runner import BatchCase, CaseResult, run_batch, shard
from medseg.errors import InputError, PACSError
from medseg.io.atomic import atomic_write_text


def _cases(n):
    return [BatchCase(case=f"case{i:02d}", identity=f"id-{i:02d}") for i in range(n)]


def test_failure_isolation_and_resume_skips_done(tmp_path):
    calls = Counter()

    def process(case, key):
        calls[case.case] += 1
        if case.case == "case03":
            raise InputError("slice 7 of 40 is missing")
        out = tmp_path / "out" / case.case / "seg.txt"
        atomic_write_text(out, key)
        return CaseResult(outputs={"seg": str(out)})

    s1 = run_batch(_cases(6), process, output_dir=tmp_path / "out", weights_sha256="w1", progress=False)
    assert (s1.done, s1.failed, s1.skipped) == (5, 1, 0)
    assert s1.failures == [("case03", "slice 7 of 40 is missing")]
    latest = Manifest(tmp_path / "out" / "manifest.jsonl").latest()
    assert sorted(r.status for r in latest.values()) == ["done"] * 5 + ["failed"]

    s2 = run_batch(_cases(6), process, output_dir=tmp_path / "out", weights_sha256="w1", progress=False)
    assert (s2.done, s2.failed, s2.skipped) == (0, 1, 5)  # only the failed case is tried again
    assert calls["case00"] == 1 and calls["case03"] == 2

    # Another model (weights sha256) is another key: everything runs again.
    s3 = run_batch(_cases(6), process, output_dir=tmp_path / "out", weights_sha256="w2", progress=False)
    assert s3.done == 5


def test_transient_errors_are_retried_with_backoff(tmp_path):
    attempts = Counter()

    def process(case, key):
        attempts[case.case] += 1
        if attempts[case.case] < 3:
            raise PACSError("DICOMweb request timed out")
        return CaseResult()

    s = run_batch(_cases(2), process, output_dir=tmp_path, weights_sha256="w", retries=2, backoff_s=0.01,
                  progress=False)
    assert s.done == 2 and attempts == Counter({"case00": 3, "case01": 3})
    rec = Manifest(tmp_path / "manifest.jsonl").latest()
    assert {r.attempts for r in rec.values()} == {3}


def test_unexpected_exception_is_isolated_without_traceback_text(tmp_path):
    def process(case, key):
        if case.case == "case01":
            raise ZeroDivisionError("division by zero")
        return CaseResult()

    s = run_batch(_cases(3), process, output_dir=tmp_path, weights_sha256="w", progress=False)
    assert s.done == 2 and s.failed == 1
    assert "internal error (ZeroDivisionError)" in s.failures[0][1]


def test_shards_cover_every_case_exactly_once():
    cases = _cases(11)
    shards = [shard(cases, r, 3) for r in range(3)]
    ids = [c.identity for s in shards for c in s]
    assert sorted(ids) == sorted(c.identity for c in cases) and len(ids) == len(set(ids))


WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from medseg.batch.runner import BatchCase, CaseResult, run_batch
    from medseg.io.atomic import atomic_write_text
    out = Path(sys.argv[1])
    def process(case, key):
        with open(out.parent / "calls.log", "a") as fh:
            fh.write(case.case + "\\n")
        time.sleep(0.3)
        atomic_write_text(out / case.case / "seg.txt", key)
        return CaseResult(outputs={"seg": str(out / case.case / "seg.txt")})
    cases = [BatchCase(case=f"case{i:02d}", identity=f"id-{i:02d}") for i in range(12)]
    run_batch(cases, process, output_dir=out, weights_sha256="w", progress=False)
    """
)


def test_kill_9_then_resume_finishes_every_case_exactly_once(tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen([sys.executable, str(script), str(out)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until a few cases are done, then kill -9
        j = out / "manifest.rank0.jsonl"
        if j.exists() and len(j.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(Manifest(out / "manifest.rank0.jsonl").done_keys())
    assert 4 <= done_before < 12
    assert not (out / "manifest.jsonl").exists()  # the job was killed before its end

    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=120)
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["case"] for r in records) == [f"case{i:02d}" for i in range(12)]
    assert all(r["status"] == "done" for r in records)
    # Each case has exactly one done record across the journals, and its output is complete.
    journal_done = Counter(r.case for r in Manifest(out / "manifest.rank0.jsonl").records() if r.status == "done")
    assert set(journal_done.values()) == {1}
    for i in range(12):
        assert (out / f"case{i:02d}" / "seg.txt").read_text() != ""
    assert not list(out.rglob("*.part*"))  # no half-written file at a final path
    calls = Counter(Path(tmp_path / "calls.log").read_text().split())
    assert sum(calls.values()) <= 13  # at most the one interrupted case was started twice


@pytest.mark.parametrize("n", [0, 1])
def test_empty_or_single_batch(tmp_path, n):
    s = run_batch(_cases(n), lambda c, k: CaseResult(), output_dir=tmp_path, weights_sha256="w", progress=False)
    assert s.done == n and (tmp_path / "manifest.jsonl").exists()


def test_stale_partials_from_a_killed_run_are_removed(tmp_path):
    (tmp_path / "case00").mkdir()
    (tmp_path / "case00" / ".seg.nii.gz.abc.part.nii.gz").write_bytes(b"half")
    (tmp_path / ".case01.xyz.part").mkdir()
    run_batch([], lambda c, k: CaseResult(), output_dir=tmp_path, weights_sha256="w", progress=False)
    assert not list(tmp_path.rglob("*.part*"))


def test_resume_keeps_the_records_of_a_manifest_whose_rank_journals_are_gone(tmp_path):
    def process(case, key):
        return CaseResult(outputs={"seg": case.case})

    run_batch(_cases(3), process, output_dir=tmp_path, weights_sha256="w", progress=False)
    first = (tmp_path / "manifest.jsonl").read_text()
    (tmp_path / "manifest.rank0.jsonl").unlink()  # e.g. only manifest.jsonl was copied with the outputs
    s = run_batch(_cases(4), process, output_dir=tmp_path, weights_sha256="w", progress=False)
    assert (s.done, s.skipped) == (1, 3)
    latest = Manifest(tmp_path / "manifest.jsonl").latest()
    assert sorted(r.case for r in latest.values()) == ["case00", "case01", "case02", "case03"]
    assert set(first.splitlines()) <= set((tmp_path / "manifest.jsonl").read_text().splitlines())


RANK_WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from medseg.batch.runner import BatchCase, CaseResult, run_batch
    from medseg.errors import InputError
    out = Path(sys.argv[1])
    def process(case, key):
        if case.case == "case04":
            raise InputError("slice 3 of 9 is missing")
        time.sleep(0.05 if case.case < "case03" else 1.0)  # the ranks finish far apart
        return CaseResult(extra={"stored": "stored"})
    s = run_batch([BatchCase(case=f"case{i:02d}", identity=f"id-{i:02d}") for i in range(7)], process,
                  output_dir=out, weights_sha256="w", progress=False)
    print(json.dumps([s.done, s.failed, s.skipped, s.failures, s.stores]))
    """
)


def test_two_ranks_without_torchrun_share_totals_through_the_store(tmp_path):
    """Two ranks started by hand (rank 0 hosts the store, as under any env:// launcher): each
    case runs exactly once and both ranks report the job's totals, not their own shard's."""
    from medseg.batch.local_orthanc import free_port

    script = tmp_path / "rank.py"
    script.write_text(RANK_WORKER)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    totals = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert totals[0] == totals[1] == [6, 1, 0, [["case04", "slice 3 of 9 is missing"]], {"stored": 6}]
    records = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["case"] for r in records) == [f"case{i:02d}" for i in range(7)]
    assert {r["rank"] for r in records} == {0, 1}


def test_a_sharded_batch_outside_a_launcher_is_refused_in_one_line(tmp_path, monkeypatch):
    from medseg.errors import ConfigError

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ConfigError, match="runs under torchrun"):
        run_batch(_cases(2), lambda c, k: CaseResult(), output_dir=tmp_path, weights_sha256="w", progress=False,
                  rank=0, world_size=2)
