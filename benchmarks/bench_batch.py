"""Folder batch throughput on CPU: `medseg batch` vs one `medseg segment` process per case.

The baseline is what a script without medseg's batch runner does: start a process per case,
which reloads Python, MONAI and the model every time. Both write the same outputs; the benchmark
checks that their label maps agree voxel for voxel.

    python benchmarks/bench_batch.py [--cases 6] [--bundle ct_abdomen_organs] [--shape 96,96,64]

Prints cases per hour side by side and writes benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--bundle", default="ct_abdomen_organs")
    ap.add_argument("--shape", default="96,96,64")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))

    from medseg.data.phantoms import abdomen_ct, save_phantom

    env = {**os.environ, "MEDSEG_PROGRESS": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        for i in range(args.cases):
            ph = abdomen_ct(shape=shape, seed=1000 + i, orientation=("LPS", "RAS")[i % 2])
            save_phantom(ph, tmp / f"ph{i}", format="nifti")
            src.mkdir(exist_ok=True)
            (tmp / f"ph{i}" / "image.nii.gz").rename(src / f"case{i:02d}.nii.gz")

        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medseg", "batch", str(src), "--bundle", args.bundle,
                        "--output", str(tmp / "batch"), "--format", "nifti"], check=True, env=env,
                       capture_output=True)
        t_batch = time.perf_counter() - t0

        t0 = time.perf_counter()
        for f in sorted(src.iterdir()):
            subprocess.run([sys.executable, "-m", "medseg", "segment", str(f), "--bundle", args.bundle,
                            "--output", str(tmp / "loop"), "--format", "nifti"], check=True, env=env,
                           capture_output=True)
        t_loop = time.perf_counter() - t0

        agree = all(
            np.array_equal(np.asanyarray(nib.load(tmp / "batch" / c.name / "seg.nii.gz").dataobj),
                           np.asanyarray(nib.load(tmp / "loop" / c.name / "seg.nii.gz").dataobj))
            for c in sorted((tmp / "loop").iterdir())
        )

    per_h_batch, per_h_loop = args.cases / t_batch * 3600, args.cases / t_loop * 3600
    print(f"{args.cases} phantom CT cases {shape}, bundle {args.bundle}, CPU ({os.cpu_count()} cores)")
    print(f"{'':<36}{'seconds':>10}{'cases/h':>10}")
    print(f"{'medseg batch (one process)':<36}{t_batch:>10.1f}{per_h_batch:>10.0f}")
    print(f"{'medseg segment, a process per case':<36}{t_loop:>10.1f}{per_h_loop:>10.0f}")
    print(f"speed-up: {t_loop / t_batch:.2f}x; identical label maps: {agree}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps({
        "cases": args.cases, "shape": list(shape), "bundle": args.bundle, "batch_s": round(t_batch, 2),
        "per_case_process_s": round(t_loop, 2), "batch_cases_per_hour": round(per_h_batch),
        "per_case_process_cases_per_hour": round(per_h_loop), "identical_outputs": agree,
        "cpu_count": os.cpu_count(),
    }, indent=2) + "\n")
    if not agree:
        raise SystemExit("outputs differ")


if __name__ == "__main__":
    main()
