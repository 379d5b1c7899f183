"""medseg segment --model <nnU-Net v2 folder> against nnUNetv2_predict, side by side on one volume.

Both run as fresh processes on the same NIfTI with the same model folder and folds (CPU):

* baseline: ``nnUNetv2_predict_from_modelfolder -i IN -o OUT -m MODEL -f F -device cpu -npp 1 -nps 1``
* medseg:   ``medseg segment IN/case_0000.nii.gz --model MODEL --folds F --output OUT --format nifti``

The model: ``--classes N`` (default 105, TotalSegmentator's largest part) builds a many-class model
with tests/nnunet_many.py (nnU-Net's stock network from the plans of the tiny test fixture, seeded
random weights, stock checkpoint layout; ``--patch`` sets its tile, ``--net-spacing`` its network spacing,
default 3 mm as TotalSegmentator's ``--fast`` models; no mirroring at inference unless
``--mirroring``, as TotalSegmentator's ``nnUNetTrainerNoMirroring`` checkpoints); ``--model PATH`` takes any
nnU-Net v2 results folder instead (e.g. the 5-class tiny fixture,
tests/data/nnunet_tiny/models/nnUNetTrainer__nnUNetPlans__3d_fullres).

The two commands alternate (``--repeats`` rounds, which one goes first alternates too), because
the machine may be shared: peak memory does not depend on the load, wall time does. Measured
per run: wall time; peak RSS of the largest single process (``ru_maxrss`` of the launcher's
children: nnUNetv2_predict exports in a worker process, so this is the most favourable figure for
it); and the peak of the summed PSS of the whole process tree (proportional set size, so pages shared
between processes count once; sampled every 20 ms from /proc/PID/smaps_rollup).
Reported: medians, the ratios medseg / nnUNetv2_predict, and the fraction of equal voxels of the
two label maps. Writes benchmarks/results/nnunet.json or ``--result`` (the previous file's rows for
other class counts are kept under ``other_models``).

    python benchmarks/bench_nnunet.py [--classes 105] [--patch 48 64 64] [--net-spacing 3 3 3] [--mirroring] [--shape 256 256 200]
        [--spacing 0.8 0.8 1.0] [--repeats 2] [--model PATH] [--folds 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "nnunet.json"
LAUNCHER = r"""
import os, resource, subprocess, sys, time

def tree_pss_kib(root):
    kids = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open(f'/proc/{d}/stat') as fh:
                    ppid = int(fh.read().rsplit(')', 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f'/proc/{pid}/smaps_rollup') as fh:
                for line in fh:
                    if line.startswith('Pss:'):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total

t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
peak = 0
while p.poll() is None:
    peak = max(peak, tree_pss_kib(p.pid))
    time.sleep(0.02)
err = p.stderr.read().decode(errors='replace')
dt = time.perf_counter() - t
print(p.returncode, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, peak)
sys.stderr.write(err[-2000:])
"""


def measure(cmd: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True, env=env,
                         timeout=7200)
    rc, wall, rss_kb, tree_kb = out.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {rc}): {out.stderr.strip()[-600:]}")
    return {"wall_s": round(float(wall), 2), "peak_rss_mib": round(int(rss_kb) / 1024, 1),
            "peak_tree_pss_mib": round(int(tree_kb) / 1024, 1)}


def tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="an nnU-Net v2 results folder (default: build --classes)")
    ap.add_argument("--classes", type=int, default=105, help="classes incl. background of the built model")
    ap.add_argument("--patch", nargs=3, type=int, default=[48, 64, 64], help="patch size of the built model")
    ap.add_argument("--net-spacing", nargs=3, type=float, default=[3.0, 3.0, 3.0],
                    help="network spacing (mm) of the built model (TotalSegmentator --fast: 3 mm)")
    ap.add_argument("--mirroring", action="store_true",
                    help="let the built model mirror at inference (default: no, like TotalSegmentator's "
                         "nnUNetTrainerNoMirroring checkpoints)")
    ap.add_argument("--folds", nargs="+", default=["0"])
    ap.add_argument("--shape", nargs=3, type=int, default=[256, 256, 200], help="input voxels (i, j, k)")
    ap.add_argument("--spacing", nargs=3, type=float, default=[0.8, 0.8, 1.0], help="input spacing mm (i, j, k)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--result", type=Path, default=RESULT, help="JSON file to write (default: %(default)s)")
    args = ap.parse_args()

    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    import nnunet_many

    from medseg.data.phantoms import abdomen_ct, save_phantom

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medseg-bench-nnunet-") as tmp:
        tmp = Path(tmp)
        if args.model:
            model, built = Path(args.model), None
        else:
            model = nnunet_many.build_model(tmp / "model", n_classes=args.classes, seed=0, patch_size=args.patch,
                                            spacing=args.net_spacing, mirroring=args.mirroring)
            built = (f"tests/nnunet_many.py build_model(n_classes={args.classes}, seed=0, patch_size={args.patch}, "
                     f"spacing={args.net_spacing}, mirroring={args.mirroring}): nnU-Net's stock PlainConvUNet "
                     "from the tiny fixture's plans, seeded random weights, stock checkpoint layout")
        plans = json.loads((model / "plans.json").read_text())
        cfg_name = model.name.rsplit("__", 1)[-1]
        cfg = plans["configurations"][cfg_name]
        n_classes = len(json.loads((model / "dataset.json").read_text())["labels"])
        ph = abdomen_ct(shape=tuple(args.shape), spacing=tuple(args.spacing), orientation="LPS", seed=11)
        save_phantom(ph, tmp / "ph")
        (tmp / "in").mkdir()
        os.replace(tmp / "ph" / "image.nii.gz", tmp / "in" / "case_0000.nii.gz")
        env = dict(os.environ, MEDSEG_PROGRESS="0", nnUNet_raw=str(tmp), nnUNet_preprocessed=str(tmp),
                   nnUNet_results=str(tmp), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        cmds = {
            "nnUNetv2_predict": lambda r: [
                tool("nnUNetv2_predict_from_modelfolder"), "-i", str(tmp / "in"), "-o", str(tmp / f"ref{r}"),
                "-m", str(model), "-f", *args.folds, "-device", "cpu", "-npp", "1", "-nps", "1",
                "--disable_progress_bar"],
            "medseg": lambda r: [
                sys.executable, "-m", "medseg", "segment", str(tmp / "in" / "case_0000.nii.gz"), "--model", str(model),
                "--folds", *args.folds, "--output", str(tmp / f"ours{r}"), "--format", "nifti"],
        }
        runs: dict[str, list[dict]] = {k: [] for k in cmds}
        loads = []
        for r in range(args.repeats):
            order = list(cmds) if r % 2 == 0 else list(cmds)[::-1]
            for name in order:
                loads.append(round(os.getloadavg()[0], 2))
                row = measure(cmds[name](r), env)
                row["round"] = r
                runs[name].append(row)
                print(f"round {r} {name:18s} wall {row['wall_s']:8.1f} s  peak RSS {row['peak_rss_mib']:8.1f} MiB"
                      f"  tree PSS {row['peak_tree_pss_mib']:8.1f} MiB  (load {loads[-1]})", flush=True)
        agreements = []
        for r in range(args.repeats):
            ref = np.asanyarray(nib.load(str(tmp / f"ref{r}" / "case.nii.gz")).dataobj)
            ours = np.asanyarray(nib.load(str(next((tmp / f"ours{r}").iterdir()) / "seg.nii.gz")).dataobj)
            agreements.append(float(np.mean(ref == ours)) if ref.shape == ours.shape else 0.0)
        present = int(len(np.unique(ref)))
        net_shape = [int(round(n * s / t)) for n, s, t in
                     zip(args.shape[::-1], args.spacing[::-1], cfg["spacing"], strict=True)]
    keys = ("wall_s", "peak_rss_mib", "peak_tree_pss_mib")
    med = {name: {k: _median(rows, k) for k in keys} for name, rows in runs.items()}
    ratio = {k: round(med["medseg"][k] / med["nnUNetv2_predict"][k], 3) for k in keys}
    wall_pairs = [round(m["wall_s"] / b["wall_s"], 3) for m, b in zip(runs["medseg"], runs["nnUNetv2_predict"],
                                                                       strict=True)]
    row = {"command": "python benchmarks/bench_nnunet.py " + " ".join(sys.argv[1:]),
           "model": str(args.model) if args.model else built, "configuration": cfg_name,
           "classes": n_classes, "classes_present_in_output": present, "patch_size": cfg["patch_size"],
           "network_spacing_mm_zyx": cfg["spacing"], "folds": args.folds,
           "input_shape_ijk": args.shape, "input_spacing_mm_ijk": args.spacing,
           "network_grid_zyx_approx": net_shape, "device": "cpu", "threads": env["OMP_NUM_THREADS"],
           "runs": runs, "median": med, "ratio_medseg_over_nnunet": ratio,
           "wall_ratio_per_round": wall_pairs, "load_average_before_each_run": loads,
           "voxel_agreement_per_round": agreements, "bench_s": round(time.perf_counter() - t0, 1)}
    previous = json.loads(args.result.read_text()) if args.result.is_file() else {}
    others = [r for r in previous.get("other_models", []) if r.get("classes") != n_classes]
    if previous and "other_models" not in previous and previous.get("classes") != n_classes:
        others.append(previous)  # the file's old single-row layout
    if previous.get("main", {}).get("classes") not in (None, n_classes):
        others.append(previous["main"])
    out = {"main": row, "other_models": others,
           "what": "peak_rss_mib: the largest single process; peak_tree_pss_mib: the summed PSS (shared pages "
                   "counted once) of all processes of the run (nnUNetv2_predict exports in a worker process)"}
    args.result.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{'median of ' + str(args.repeats):18s}{'wall s':>10s}{'peak RSS MiB':>15s}{'tree PSS MiB':>15s}")
    for k, v in med.items():
        print(f"{k:18s}{v['wall_s']:10.2f}{v['peak_rss_mib']:15.1f}{v['peak_tree_pss_mib']:15.1f}")
    print(f"{'medseg / nnU-Net':18s}{ratio['wall_s']:10.3f}{ratio['peak_rss_mib']:15.3f}"
          f"{ratio['peak_tree_pss_mib']:15.3f}")
    print(f"wall ratio per round {wall_pairs}; voxel agreement {[f'{100 * a:.4f}%' for a in agreements]} "
          f"({n_classes} classes incl. background, {present} in the output)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
