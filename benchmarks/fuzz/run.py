"""Fuzz campaign entry point.

    .venv/bin/python -m benchmarks.fuzz.run --n 10000 --seed 1 [--fresh] [--formats nifti,png]

Builds the seed corpus, mutates ``--n`` inputs (formats drawn in turn, each input reproducible
from ``--seed`` and its index), runs ``medseg info PATH --json`` and ``medseg convert PATH
OUT/x.nii.gz`` on each (fork server by default, ``--fresh`` for new interpreters), classifies
every run, prints counts per format x class and the de-duplicated signatures of the non-clean
runs, and writes ``benchmarks/results/fuzz.json``. Non-clean inputs are kept under
``<workdir>/findings/`` for reproduction.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks.fuzz.mutators import mutate
from benchmarks.fuzz.runner import CLASSES, TIMEOUT_S, ForkServer, Sandbox, classify, run_fresh, snapshot
from benchmarks.fuzz.seeds import build_seeds

RESULTS = Path(__file__).resolve().parents[1] / "results" / "fuzz.json"
COMMANDS = ("info", "convert")
_SEVERITY = {c: (0 if c == "clean" else len(CLASSES) - i) for i, c in enumerate(CLASSES)}  # clean is least severe


def argv_for(command: str, path: Path, sandbox: Sandbox) -> tuple[list[str], Path | None]:
    if command == "info":
        return ["info", str(path), "--json"], None
    out = sandbox.out / "x.nii.gz"
    return ["convert", str(path), str(out)], out


def run_case(index: int, seed_obj, base_seed: int, work: Path, executor, timeout: float,
             commands=COMMANDS) -> dict:
    """Mutate one input and run every command on it; return its record."""
    case = work / f"case{index:06d}"
    (case / "in").mkdir(parents=True)
    rng = random.Random(f"{base_seed}-{index}")
    path, op = mutate(seed_obj, rng, case / "in", cache=work / "_bombs")
    record = {"index": index, "format": seed_obj.fmt, "seed": seed_obj.name, "op": op, "runs": {}}
    for command in commands:
        sandbox = Sandbox(case / command)
        argv, output = argv_for(command, path, sandbox)
        before = snapshot(sandbox.root, skip=(sandbox.out, sandbox.home))
        parent_before = snapshot(case, skip=(sandbox.root,))
        outcome = executor(argv, sandbox, timeout)
        cls, sig = classify(outcome, command=command, sandbox=sandbox, before=before,
                            parent_before=parent_before, parent=case, output=output)
        record["runs"][command] = {"class": cls, "signature": sig, "rc": outcome.rc, "seconds": round(outcome.seconds, 3),
                                   "stderr_tail": outcome.stderr[-600:] if cls != "clean" else ""}
    record["class"] = max((r["class"] for r in record["runs"].values()), key=lambda c: _SEVERITY[c])
    return record


def campaign(n: int, seed: int, *, fresh: bool = False, workdir: Path | None = None, formats=None,
             timeout: float = TIMEOUT_S, keep: int = 200, log=print, indices=None) -> dict:
    """Run the campaign; return the summary dict (also what ``fuzz.json`` holds)."""
    own = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="medseg-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    seeds = build_seeds(work / "seeds") if not (work / "seeds").exists() else None
    if seeds is None:
        shutil.rmtree(work / "seeds")
        seeds = build_seeds(work / "seeds")
    by_fmt = defaultdict(list)
    for s in seeds:
        by_fmt[s.fmt].append(s)
    fmts = sorted(f for f in by_fmt if not formats or f in formats)
    executor = run_fresh if fresh else ForkServer().execute
    findings = work / "findings"
    counts: dict[str, Counter] = defaultdict(Counter)
    run_counts: dict[str, Counter] = defaultdict(Counter)
    signatures: dict[str, dict] = {}
    t0 = time.monotonic()
    kept = 0
    todo = list(indices) if indices is not None else list(range(n))
    records = []
    for done, i in enumerate(todo, 1):
        fmt = fmts[i % len(fmts)]
        pick = random.Random(f"{seed}-pick-{i}").choice(by_fmt[fmt])
        rec = run_case(i, pick, seed, work, executor, timeout)
        records.append(rec)
        counts[fmt][rec["class"]] += 1
        for command, r in rec["runs"].items():
            run_counts[f"{fmt}/{command}"][r["class"]] += 1
            if r["class"] != "clean":
                key = f"{r['class']}|{command}|{r['signature']}"
                entry = signatures.setdefault(key, {"count": 0, "format": fmt, "example_op": rec["op"],
                                                    "example_index": i, "stderr_tail": r["stderr_tail"]})
                entry["count"] += 1
        case = work / f"case{i:06d}"
        if rec["class"] != "clean" and kept < keep:
            findings.mkdir(exist_ok=True)
            shutil.move(str(case), str(findings / case.name))
            (findings / case.name / "record.json").write_text(json.dumps(rec, indent=1))
            kept += 1
        else:
            shutil.rmtree(case, ignore_errors=True)
        if done % 250 == 0 or done == len(todo):
            bad = sum(v for c in counts.values() for k, v in c.items() if k != "clean")
            log(f"[fuzz] {done}/{len(todo)} inputs, {bad} non-clean, {time.monotonic() - t0:.0f} s")
    summary = {
        "command": f"python -m benchmarks.fuzz.run --n {n} --seed {seed}" + (" --fresh" if fresh else "")
        + (f" --formats {','.join(sorted(formats))}" if formats else "")
        + (f" --only {','.join(str(i) for i in todo)}" if indices is not None else ""),
        "executor": "fresh processes" if fresh else "fork server",
        "n_inputs": len(todo),
        "n_runs": sum(len(r["runs"]) for r in records),
        "seconds": round(time.monotonic() - t0, 1),
        "timeout_s": timeout,
        "memory_limit_bytes": __import__("benchmarks.fuzz.runner", fromlist=["x"]).MEMORY_LIMIT,
        "python": platform.python_version(),
        "counts_per_format": {f: dict(sorted(c.items())) for f, c in sorted(counts.items())},
        "counts_per_format_command": {f: dict(sorted(c.items())) for f, c in sorted(run_counts.items())},
        "non_clean_inputs": sum(v for c in counts.values() for k, v in c.items() if k != "clean"),
        "signatures": dict(sorted(signatures.items(), key=lambda kv: -kv[1]["count"])),
        "workdir": str(work),
    }
    summary["_records"] = records
    if own and summary["non_clean_inputs"] == 0:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def format_table(summary: dict) -> str:
    used = [c for c in CLASSES if any(c in v for v in summary["counts_per_format"].values())]
    lines = [f"{'format':<10}" + "".join(f"{c:>14}" for c in used)]
    for fmt, c in summary["counts_per_format"].items():
        lines.append(f"{fmt:<10}" + "".join(f"{c.get(k, 0):>14}" for k in used))
    lines.append(f"{summary['n_inputs']} inputs, {summary['n_runs']} runs, {summary['non_clean_inputs']} non-clean "
                 f"inputs, {summary['seconds']} s ({summary['executor']})")
    for key, e in summary["signatures"].items():
        lines.append(f"  {e['count']:>5}  {key}  e.g. #{e['example_index']} {e['example_op'][:100]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="new interpreter per run (slow; validates the fork server)")
    ap.add_argument("--formats", default="", help="comma-separated mutator families (default: all)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S)
    ap.add_argument("--only", default="", help="comma-separated input indices to rerun")
    ap.add_argument("--results", default=str(RESULTS), help="where to write the JSON summary ('' for nowhere)")
    args = ap.parse_args(argv)
    formats = {f for f in args.formats.split(",") if f} or None
    indices = [int(x) for x in args.only.split(",") if x] or None
    summary = campaign(args.n, args.seed, fresh=args.fresh, workdir=Path(args.workdir) if args.workdir else None,
                       formats=formats, timeout=args.timeout, indices=indices)
    summary.pop("_records")
    print(format_table(summary))
    if args.results:
        out = Path(args.results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {out}")
    return 0 if summary["non_clean_inputs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
