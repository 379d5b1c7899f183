"""The reader fuzz campaign (benchmarks/fuzz): mutated inputs of every format through
``medseg info --json`` and ``medseg convert``, each run classified; none may be anything but
clean (exit 0 with sane output, or exit 2 with one ``medseg: error:`` line): no traceback, crash,
hang, memory blow-up, patient identifier printed, output left behind or file written outside.

The default run mutates a couple of hundred inputs; the full campaign (10,000 inputs, the figure
recorded in benchmarks/results/fuzz.json) is marked slow. The fork server used for speed is
checked against fresh interpreters on a small sample."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fuzz.run import campaign, format_table, run_case  # noqa: E402
from benchmarks.fuzz.runner import ForkServer, run_fresh  # noqa: E402
from benchmarks.fuzz.seeds import build_seeds  # noqa: E402

FORMATS = 12  # mutator families in the seed corpus


def _assert_clean(summary: dict) -> None:
    assert summary["non_clean_inputs"] == 0, format_table(summary)


def test_fuzz_campaign_default_sample_is_all_clean(tmp_path):
    summary = campaign(16 * FORMATS, seed=7, workdir=tmp_path / "fuzz", log=lambda *_: None)
    assert summary["n_inputs"] == 16 * FORMATS
    assert len(summary["counts_per_format"]) == FORMATS  # every format was mutated
    _assert_clean(summary)


def test_fork_server_classifies_like_fresh_processes(tmp_path):
    seeds = build_seeds(tmp_path / "seeds")
    by_fmt = {}
    for s in seeds:
        by_fmt.setdefault(s.fmt, s)
    sample = [(0, by_fmt["nifti"]), (1, by_fmt["series"])]
    server = ForkServer()
    got_rcs = set()
    for index, seed in sample:
        forked = run_case(index, seed, 11, tmp_path / "fork", server.execute, 20.0)
        fresh = run_case(index, seed, 11, tmp_path / "fresh", run_fresh, 20.0)
        assert forked["op"] == fresh["op"]  # the same mutated input
        for command in forked["runs"]:
            a, b = forked["runs"][command], fresh["runs"][command]
            assert (a["class"], a["rc"]) == (b["class"], b["rc"]), (index, command, a, b)
            got_rcs.add(a["rc"])
    assert got_rcs  # the sample ran


@pytest.mark.slow
def test_fuzz_campaign_10000_inputs_all_clean(tmp_path):
    summary = campaign(10_000, seed=1, workdir=tmp_path / "fuzz", log=print)
    _assert_clean(summary)
