"""``medseg evaluate PRED REF -o DIR``: Dice, IoU, HD95, ASSD, NSD, volumes per case and label.

Exit codes: 0 every case scored, 3 scored but some case failed (listed with its reason, also in
summary.json under ``failed``), 2 nothing could be scored or bad options (one line).
"""

from __future__ import annotations

import argparse

HELP = "score predicted label maps against references (Dice, IoU, HD95, ASSD, NSD, volumes; mm)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", help="prediction: a label file (NIfTI/NRRD/MHA/DICOM SEG/TIFF/PNG) or a folder of them")
    parser.add_argument("ref", help="reference: same kind as PRED; cases are paired by file name without suffix")
    parser.add_argument("-o", "--output", required=True, help="folder for metrics.csv, summary.json, plots")
    parser.add_argument("--labels", nargs="+", metavar="L",
                        help="labels to score, e.g. 1 2 or 1=liver 2=spleen (default: all present)")
    parser.add_argument("--tolerance-mm", type=float, default=1.0, help="NSD tolerance in mm (default 1.0)")
    parser.add_argument("--instances", action="store_true",
                        help="label values are instance ids: add matching, AP, F1, PQ and lesion metrics")
    parser.add_argument("--empty-policy", choices=("metricsreloaded", "monai"), default="metricsreloaded",
                        help="values when a mask is empty (default metricsreloaded; see medseg.metrics.policy)")
    parser.add_argument("--ref-image", metavar="PATH",
                        help="source image / DICOM series of DICOM SEG inputs (or a folder with one per case)")
    parser.add_argument("--workers", type=int, default=1, help="processes scoring cases in parallel")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    parser.add_argument("--no-plots", action="store_true", help="skip the box plots")
    parser.add_argument("--resample-to", choices=("reference",), default=None,
                        help="score a prediction on another grid after resampling it onto the reference grid "
                             "(nearest neighbour; a warning in summary.json). Default: such a case fails")


def run(args: argparse.Namespace) -> int:
    from medseg.evaluation import evaluate

    result = evaluate(args.pred, args.ref, args.output, labels=args.labels, tolerance_mm=args.tolerance_mm,
                      policy=args.empty_policy, instances=args.instances, ref_image=args.ref_image,
                      workers=args.workers, seed=args.seed, plots=not args.no_plots,
                      resample_to=args.resample_to or "none")
    s = result.summary
    failed = f", {len(s['failed'])} failed" if s.get("failed") else ""
    print(f"{s['n_cases']} case(s) scored{failed}; unmatched: {len(s['unmatched']['pred_only'])} prediction-only, "
          f"{len(s['unmatched']['ref_only'])} reference-only; policy {s['empty_policy']['name']}")
    for side in ("pred_only", "ref_only"):
        names = s["unmatched"][side]
        if names:
            more = f" (+{len(names) - 10} more)" if len(names) > 10 else ""
            print(f"  unmatched {side.replace('_', '-')}: {', '.join(names[:10])}{more}")
    if s.get("ignored_files"):
        print(f"  ignored {len(s['ignored_files'])} picture(s) next to a label volume of the same case "
              f"(e.g. {s['ignored_files'][0]})")
    for lab, info in s["per_label"].items():
        d = info["metrics"]["dice"]
        mean = "n/a" if d["mean"] is None else f"{d['mean']:.4f}"
        print(f"  label {lab} ({info['name']}): mean Dice {mean} over n={d['n']}")
    for case, note in s.get("resampled", {}).items():
        print(f"  warning: case {case}: {note}")
    for case, reason in s.get("failed", {}).items():
        print(f"  failed: case {case}: {reason}")
    print(f"report: {result.out_dir}")
    return 3 if s.get("failed") else 0
