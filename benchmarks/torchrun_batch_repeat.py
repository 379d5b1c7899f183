"""Run the two-rank ``torchrun ... medseg batch`` of ``tests/test_batch_job.py`` many times and count
the runs that fail: a race at start-up or exit shows up as a failure now and then, never in one run.

Each run segments the test's three shuffled DICOM phantom series with its band model; a failed
run's stderr is kept under ``--work``. The code under test is the checkout in ``--checkout`` (the
children import ``medseg`` from there), so an older commit can be measured beside the current one.

Usage: ``python benchmarks/torchrun_batch_repeat.py [--runs 60] [--checkout DIR] [--work DIR]``
Measured (2 cores, CPU): before the ranks used the launcher's store instead of a gloo group,
1 failure in 60 runs ("terminate called without an active exception", SIGABRT); after, see
``benchmarks/results/torchrun_batch_repeat.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the medseg source tree the ranks run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medseg_torchrun_repeat"))
    parser.add_argument("--out", type=Path, default=None, help="write the counts here (JSON)")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    from test_batch_job import _write_series, make_band_run

    from medseg.batch.local_orthanc import free_port

    shutil.rmtree(args.work, ignore_errors=True)
    run = args.work / "run"
    run.mkdir(parents=True)
    make_band_run(run, (48, 48, 16))
    src = args.work / "in"
    for seed in (5, 6, 7):
        _write_series(src / f"s{seed}", seed=seed)
    env = {**os.environ, "MEDSEG_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    fails, seconds = [], []
    for i in range(args.runs):
        out = args.work / f"out{i}"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                               f"--master_port={free_port()}", "-m", "medseg", "batch", str(src), "--bundle", str(run),
                               "--output", str(out), "--format", "nifti"],
                              capture_output=True, text=True, timeout=600, env=env, cwd=args.checkout)
        seconds.append(time.perf_counter() - t0)
        if proc.returncode:
            fails.append(i)
            (args.work / f"fail{i}.stderr").write_text(proc.stderr)
        print(f"run {i}: exit {proc.returncode} ({seconds[-1]:.1f} s)", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"{len(fails)} of {args.runs} runs failed")
    if args.out:
        args.out.write_text(json.dumps({"checkout": str(args.checkout), "runs": args.runs, "failed": len(fails),
                                        "failed_runs": fails, "median_s": sorted(seconds)[len(seconds) // 2]},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
