"""Start-up of the small commands: wall time of ``medseg info/convert/evaluate/report/bundle ...`` as a
user runs them (a fresh ``python -m medseg`` process each), median of ``--repeat`` runs, against the
targets of issue 19 (convert of a 122x101x30 NIfTI < 1.5 s, info < 1 s, a wrong model name < 1 s).

Input: TotalSegmentator's ``example_ct_sm.nii.gz`` (``medseg.data.sample("ts_ct_sm")``, a real CT,
122x101x30) and a label map pair on its grid for evaluate/report. Each run also records whether
torch or MONAI were imported (``-X importtime``), which is the structural point: these commands run
no network and must not import them.

    python benchmarks/bench_startup.py [--repeat 5] [--baseline DIR]

``--baseline DIR``: also time the same commands run from another checkout of medseg (e.g.
``mkdir /tmp/before && git archive <commit> medseg bundles | tar -x -C /tmp/before``), as the
side-by-side column.
Prints a table and writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
#: issue 19's targets, seconds
TARGETS = {"convert": 1.5, "info": 1.0, "segment wrong model name": 1.0, "bundle verify wrong name": 1.0}


def commands(root: Path, ct: Path) -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "info": ["info", str(ct)],
        "convert": ["convert", str(ct), str(root / "out" / "ct.nii.gz")],
        "bundle list": ["bundle", "list"],
        "bundle verify wrong name": ["bundle", "verify", "no_such_bundle"],
        "segment wrong model name": ["segment", str(ct), "--model", "no_such_bundle", "--output", str(root / "seg")],
        "evaluate (no plots)": ["evaluate", str(root / "pred"), str(root / "ref"), "-o", str(root / "eval"),
                                "--no-plots"],
        "evaluate": ["evaluate", str(root / "pred"), str(root / "ref"), "-o", str(root / "eval_plots")],
        "report": ["report", str(root / "eval_plots")],
    }


def prepare(root: Path) -> Path:
    import nibabel as nib

    from medseg.data import sample

    ct = sample("ts_ct_sm")
    img = nib.load(ct)
    for side in ("pred", "ref"):
        (root / side).mkdir(parents=True)
        lab = np.zeros(img.shape, np.uint8)
        lab[40:70, 30:60, 5:20] = 1
        lab[70:90, 30:60, 5:20] = 2
        if side == "pred":
            lab[40:44] = 0
        nib.save(nib.Nifti1Image(lab, img.affine), root / side / "case1.nii.gz")
    return ct


#: runs ``python -m medseg`` from the checkout named by $MEDSEG_BENCH_CHECKOUT, past the editable install's finder
_FROM_CHECKOUT = ("import os, runpy, sys; "
                  "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
                  "sys.path.insert(0, os.environ['MEDSEG_BENCH_CHECKOUT']); "
                  "runpy.run_module('medseg', run_name='__main__', alter_sys=True)")


def _python(env: dict[str, str]) -> list[str]:
    if "MEDSEG_BENCH_CHECKOUT" in env:
        return [sys.executable, "-X", "importtime", "-c", _FROM_CHECKOUT]
    return [sys.executable, "-X", "importtime", "-m", "medseg"]


def run_once(argv: list[str], env: dict[str, str], root: Path) -> tuple[float, int, list[str]]:
    """(wall seconds, exit code, heavy modules imported) of one fresh ``python -m medseg`` process."""
    for out in (root / "out" / "ct.nii.gz",):
        out.unlink(missing_ok=True)
    for folder in ("eval", "eval_plots", "seg"):
        if argv[0] == "evaluate" and (root / folder).exists():
            import shutil

            shutil.rmtree(root / folder)
    t0 = time.perf_counter()
    proc = subprocess.run([*_python(env), *argv], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    heavy = sorted({line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                    if line.startswith("import time:") and line.rsplit("|", 1)[1].strip() in ("torch", "monai")})
    return wall, proc.returncode, heavy


def measure(cmds: dict[str, list[str]], env: dict[str, str], root: Path, repeat: int) -> dict[str, dict]:
    out = {}
    (root / "out").mkdir(exist_ok=True)
    for name, argv in cmds.items():
        if name == "report":  # needs the evaluate output of the same code
            run_once(cmds["evaluate"], env, root)
        runs = [run_once(argv, env, root) for _ in range(repeat)]
        out[name] = {"median_s": round(statistics.median(r[0] for r in runs), 3),
                     "runs_s": [round(r[0], 3) for r in runs], "exit_codes": sorted({r[1] for r in runs}),
                     "imports_torch_or_monai": sorted({m for r in runs for m in r[2]})}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=None, help="another medseg checkout to time side by side")
    args = ap.parse_args()
    env = {**os.environ, "MEDSEG_PROGRESS": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ct = prepare(root)
        cmds = commands(root, ct)
        now = measure(cmds, env, root, args.repeat)
        before = None
        if args.baseline is not None:
            base_env = {**env, "MEDSEG_BENCH_CHECKOUT": str(args.baseline.resolve())}
            check = subprocess.run([sys.executable, "-c", _FROM_CHECKOUT.replace(
                "runpy.run_module('medseg', run_name='__main__', alter_sys=True)", "import medseg; print(medseg.__file__)")],
                capture_output=True, text=True, env=base_env).stdout.strip()
            if not check.startswith(str(args.baseline.resolve())):
                sys.exit(f"--baseline {args.baseline}: python imports medseg from {check}")
            before = measure(cmds, base_env, root, args.repeat)
    result = {
        "input": "TotalSegmentator example_ct_sm.nii.gz (122x101x30)",
        "repeat": args.repeat,
        "targets_s": TARGETS,
        "commands": now,
        "meets_targets": {k: now[k]["median_s"] < v for k, v in TARGETS.items()},
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if before is not None:
        result["baseline"] = {"checkout": str(args.baseline), "commands": before}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    head = f"{'command':28}{'median s':>10}{'target':>8}  torch/monai" + (f"{'baseline s':>12}  torch/monai"
                                                                            if before else "")
    print(head)
    for name, r in now.items():
        target = f"{TARGETS[name]:.1f}" if name in TARGETS else ""
        line = f"{name:28}{r['median_s']:>10.2f}{target:>8}  {','.join(r['imports_torch_or_monai']) or 'no':11}"
        if before:
            b = before[name]
            line += f"{b['median_s']:>12.2f}  {','.join(b['imports_torch_or_monai']) or 'no'}"
        print(line)
    print(f"load average {result['load_average_1min']} on {result['cpus']} CPUs")


if __name__ == "__main__":
    main()
