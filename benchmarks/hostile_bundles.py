"""Hostile-bundle campaign: every variant of tests/hostile_bundles.py, applied to a shipped bundle,
run through `medseg segment` and `medseg bundle verify` in fresh processes (as a user runs them).

Each run is classified: ``refused`` (exit 2, one `medseg: error:` line, no traceback, canary
absent, nothing written outside the output folder, no output left), ``executed`` (canary file
exists), ``traceback``, ``accepted`` (exit 0: the bundle ran), ``left_behind`` / ``outside``.
Positive control: the variants marked ``executes_when_trusted`` are run once more with
``--trust-bundle`` and must fire their canary (so the canary would have seen an escape).

    python benchmarks/hostile_bundles.py [--bundle bundles/fluo_nuclei_2d] [--only NAME ...]

Prints a table and writes benchmarks/results/hostile_bundles.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hostile_bundles import VARIANTS, leftovers, make_variant  # noqa: E402


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MEDSEG_PROGRESS="0", PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, "-m", "medseg", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600, stdin=subprocess.DEVNULL)


def classify(proc: subprocess.CompletedProcess, canary: Path, root: Path, bundle: Path, out: Path) -> str:
    if canary.exists():
        return "executed"
    if "Traceback" in proc.stderr or proc.returncode not in (0, 2):
        return "traceback"
    outside = leftovers(root, bundle, allowed=root / "in")
    if any(not o.startswith("out") for o in outside):
        return "outside"
    if proc.returncode == 0:
        return "accepted"
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    if not lines or not lines[-1].startswith("medseg: error:"):
        return "traceback"
    if out.exists() and any(out.rglob("*")):
        return "left_behind"
    return "refused"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(ROOT / "bundles" / "fluo_nuclei_2d"))
    ap.add_argument("--only", nargs="*", default=None, help="variant names (default: all)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "hostile_bundles.json"))
    args = ap.parse_args()
    good = Path(args.bundle).resolve()
    variants = [v for v in VARIANTS if not args.only or v.name in args.only]
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="medseg-hostile-") as tmp:
        work = Path(tmp)
        for v in variants:
            row = {"variant": v.name}
            for command in ("segment", "verify", "trusted"):
                if command == "trusted" and not v.executes_when_trusted:
                    continue
                sub = work / command
                sub.mkdir(exist_ok=True)
                bundle, canary = make_variant(good, v, sub)
                root = bundle.parent
                (root / "in").mkdir()
                (root / "in" / "x.nii.gz").write_bytes((good / "tests" / "ref_input.nii.gz").read_bytes())
                out = root / "out"
                if command == "verify":
                    argv = ["bundle", "verify", str(bundle)]
                else:
                    argv = ["segment", str(root / "in" / "x.nii.gz"), "--bundle", str(bundle), "--output", str(out)]
                    if command == "trusted":
                        argv.append("--trust-bundle")
                proc = _run(argv, cwd=root)
                row[command] = classify(proc, canary, root, bundle, out)
                if command == "trusted":
                    row[command] = "fired" if canary.exists() else "did_not_fire"
            rows.append(row)
            print(f"{v.name:<28} " + "  ".join(f"{k}={row[k]}" for k in ("segment", "verify", "trusted") if k in row),
                  flush=True)
    counts = {c: dict(Counter(r[c] for r in rows if c in r)) for c in ("segment", "verify", "trusted")}
    non_clean = sum(1 for r in rows for c in ("segment", "verify") if r.get(c) != "refused")
    summary = {"bundle": good.name, "variants": len(rows), "counts": counts, "non_clean": non_clean,
               "executed": sum(1 for r in rows for c in ("segment", "verify") if r.get(c) == "executed"),
               "seconds": round(time.time() - t0, 1), "rows": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if non_clean == 0 and counts.get("trusted", {}).get("did_not_fire", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
