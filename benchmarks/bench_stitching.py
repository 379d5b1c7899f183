"""Peak memory of sliding-window stitching for a many-class 3D model: medseg vs MONAI.

A cheap network (one 1x1x1 convolution to ``--classes`` channels, random weights) runs on a
random ``--size``^3 volume with the same windows (``--roi``, ``--overlap``, gaussian blending)
through (a) MONAI's ``sliding_window_inference`` with its default buffers, then ``argmax``, and
(b) ``medseg.inference.sliding_window_labels``. Each method runs in a FRESH subprocess and
reports its peak resident memory (``VmHWM`` from /proc/self/status; tracemalloc cannot see
torch's allocations) and its wall time; the label maps are compared voxel by voxel.

    python benchmarks/bench_stitching.py                 # 384^3, 100 classes (MONAI needs ~24 GB)
    python benchmarks/bench_stitching.py --size 192      # smaller
    python benchmarks/bench_stitching.py --methods medseg --size 384

Writes ``benchmarks/results/stitching_<size>.json`` and prints a side-by-side table.
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

RESULTS = Path(__file__).resolve().parent / "results"


def _vm_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status (Linux only)")


def _worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("BENCH_THREADS", "2"))))
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(1, args.size, args.size, args.size, generator=gen)
    torch.manual_seed(1)
    net = torch.nn.Conv3d(1, args.classes, 1).eval()
    roi = (args.roi,) * 3
    if args.method == "medseg":
        from medseg.inference.sliding_window import StitchStats, sliding_window_labels
    else:
        from monai.inferers import sliding_window_inference
    base_kb = _vm_kb("VmHWM")
    t0 = time.perf_counter()
    extra = {}
    with torch.no_grad():
        if args.method == "monai":
            out = sliding_window_inference(img[None], roi, args.sw_batch, net, overlap=args.overlap, mode="gaussian")
            labels = out[0].argmax(0).to(torch.uint8)
            del out
        else:
            stats = StitchStats()
            # amp=False: the network runs in float32 as in MONAI's call, so only the stitching differs
            labels = sliding_window_labels(img, net, roi, overlap=args.overlap, sw_batch_size=args.sw_batch,
                                           progress=False, stats=stats, amp=False)
            extra = {"accumulator_bytes": stats.accumulator_bytes, "accumulator_dtype": stats.accumulator_dtype}
    wall = time.perf_counter() - t0
    np.save(args.labels_out, labels.numpy())
    print(json.dumps({"method": args.method, "peak_rss_mb": _vm_kb("VmHWM") / 1024, "baseline_rss_mb": base_kb / 1024,
                      "wall_s": wall, **extra}))


def _run(method: str, args: argparse.Namespace, labels_out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--labels-out", str(labels_out), "--size", str(args.size),
           "--classes", str(args.classes), "--roi", str(args.roi), "--overlap", str(args.overlap),
           "--sw-batch", str(args.sw_batch)]
    env = dict(os.environ, MEDSEG_PROGRESS="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        return {"method": method, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--roi", type=int, default=96)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--sw-batch", type=int, default=1)
    p.add_argument("--methods", default="monai,medseg")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", choices=("monai", "medseg"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--labels-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.method = args.worker
        _worker(args)
        return {}
    import numpy as np

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results, labels = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            out = Path(tmp) / f"{m}.npy"
            results[m] = _run(m, args, out)
            if out.exists():
                labels[m] = np.load(out)
    agreement = None
    if "monai" in labels and "medseg" in labels:
        agreement = float((labels["monai"] == labels["medseg"]).mean())
    full_fp32_mb = args.classes * args.size**3 * 4 / 2**20
    report = {"size": args.size, "classes": args.classes, "roi": args.roi, "overlap": args.overlap,
              "sw_batch_size": args.sw_batch, "full_float32_output_mb": full_fp32_mb, "results": results,
              "label_agreement": agreement}
    if all("peak_rss_mb" in results.get(m, {}) for m in ("monai", "medseg")):
        a, b = results["medseg"], results["monai"]
        report["peak_ratio_medseg_over_monai"] = a["peak_rss_mb"] / b["peak_rss_mb"]
        report["peak_above_baseline_ratio"] = ((a["peak_rss_mb"] - a["baseline_rss_mb"])
                                               / (b["peak_rss_mb"] - b["baseline_rss_mb"]))
        report["wall_ratio_medseg_over_monai"] = a["wall_s"] / b["wall_s"]
    print(f"stitching {args.size}^3, {args.classes} classes, roi {args.roi}^3, overlap {args.overlap}, "
          f"sw_batch {args.sw_batch} (full float32 output would be {full_fp32_mb:.0f} MB)")
    print(f"{'method':<8} {'peak RSS MB':>12} {'baseline MB':>12} {'above base MB':>14} {'wall s':>8}")
    for m in methods:
        r = results[m]
        if "error" in r:
            print(f"{m:<8} failed: {r['error']}")
            continue
        print(f"{m:<8} {r['peak_rss_mb']:>12.0f} {r['baseline_rss_mb']:>12.0f} "
              f"{r['peak_rss_mb'] - r['baseline_rss_mb']:>14.0f} {r['wall_s']:>8.1f}")
    if "peak_ratio_medseg_over_monai" in report:
        print(f"ratio medseg/monai: peak {report['peak_ratio_medseg_over_monai']:.3f}, above baseline "
              f"{report['peak_above_baseline_ratio']:.3f}, wall {report['wall_ratio_medseg_over_monai']:.2f}; "
              f"label agreement {100 * agreement:.4f} %")
    out = args.out or RESULTS / f"stitching_{args.size}.json"
    from medseg.io.atomic import atomic_write_text

    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
