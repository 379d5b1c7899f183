"""Reading every series of a DICOM tree, the way `medseg batch FOLDER` does: linear, not quadratic.

A batch over a folder finds its series with one scan of the tree. The baseline is what the job
did before: each case reloads by UID, ``load(root, series=uid)``, which rescans every header of
the tree for every series (quadratic in the number of series). medseg now hands each case the
scan's own ``SeriesInfo`` (``load(root, series=info)``): each header is read once for the job.
Both read the same voxels (checked).

    python benchmarks/bench_batch_scan.py [--series 25,50,100,200] [--slices 3]

Prints seconds side by side per tree size and writes benchmarks/results/batch_scan.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def build_tree(root: Path, n_series: int, n_slices: int) -> None:
    from medseg.data.dicom_writer import write_dicom_series

    rng = np.random.default_rng(0)
    for s in range(n_series):
        vol = rng.integers(-1000, 1000, size=(16, 16, n_slices)).astype(np.float64)
        write_dicom_series(vol, np.diag([1.0, 1.0, 2.0, 1.0]), root / f"study{s // 10:03d}" / f"s{s:04d}",
                           seed=s, series_description=f"bench {s}")


def run(root: Path, reuse: bool) -> tuple[float, list[np.ndarray]]:
    from medseg.batch.sources import folder_cases
    from medseg.io import load

    t0 = time.perf_counter()
    cases = folder_cases(root)
    arrays = []
    for c in cases:
        series = c.payload.selector if reuse else c.payload.series_instance_uid
        arrays.append(np.asarray(load(root, series=series)))
    return time.perf_counter() - t0, arrays


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", default="25,50,100,200")
    ap.add_argument("--slices", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("MEDSEG_PROGRESS", "0")
    with tempfile.TemporaryDirectory(prefix="medseg-scan-") as tmp:  # warm-up: imports, caches
        build_tree(Path(tmp), 2, args.slices)
        run(Path(tmp), reuse=True)
        run(Path(tmp), reuse=False)
    rows = []
    print(f"{'series':>7} {'files':>6} {'rescan by UID (s)':>18} {'reuse scan (s)':>15} {'ratio':>7}")
    for n in (int(x) for x in args.series.split(",")):
        with tempfile.TemporaryDirectory(prefix="medseg-scan-") as tmp:
            root = Path(tmp)
            build_tree(root, n, args.slices)
            t_new, a_new = run(root, reuse=True)
            t_old, a_old = run(root, reuse=False)
            same = len(a_new) == len(a_old) == n and all(np.array_equal(x, y) for x, y in zip(a_new, a_old, strict=True))
            if not same:
                print("outputs differ", file=sys.stderr)
                return 1
            rows.append({"series": n, "files": n * args.slices, "rescan_s": round(t_old, 3),
                         "reuse_s": round(t_new, 3), "ratio": round(t_new / t_old, 4), "same_voxels": same})
            print(f"{n:>7} {n * args.slices:>6} {t_old:>18.2f} {t_new:>15.2f} {t_new / t_old:>6.3f}x")
    per = [(r["series"], r["reuse_s"] / r["series"], r["rescan_s"] / r["series"]) for r in rows]
    print("seconds per series (reuse, rescan): " + ", ".join(f"{n}: {a:.4f} / {b:.4f}" for n, a, b in per))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_scan.json").write_text(json.dumps({"slices_per_series": args.slices, "rows": rows}, indent=1)
                                             + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
