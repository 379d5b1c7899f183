"""Tutorial 3: evaluating a test set and reading the report.

What you will learn
-------------------
1. ``medseg.evaluation.evaluate(pred_dir, ref_dir, out_dir)`` pairs cases by file name, checks
   that prediction and reference share a grid (it never resamples silently), and writes
   ``metrics.csv`` (one row per case and label), ``summary.json`` (mean, median and a bootstrap
   95% interval per label, empty-mask counts, worst cases) and box plots.
2. Empty masks need a rule. When an organ is absent from both the prediction and the reference,
   is Dice 1 or undefined? medseg makes it explicit with an *empty-mask policy*:
   ``"metricsreloaded"`` (default: both empty -> Dice 1) or ``"monai"`` (reference empty ->
   NaN, as MONAI's ``compute_dice(ignore_empty=True)``). Summaries skip NaN and say how many.
3. Surface metrics (HD95, ASSD, NSD) are in MILLIMETRES and use the voxel spacing from the
   affine. With anisotropic voxels (here 1.5 x 1.5 x 5 mm) a one-slice error is 5 mm, not 1.
   We check medseg's numbers against MONAI's own metric functions.

The "predictions" here are made by damaging the exact phantom labels in known ways (a shift
by one slice, an eroded organ, a missed organ, a false positive), so you can see each effect.

Run it::

    python tutorials/03_evaluating_a_test_set.py --out /tmp/tutorial03 [--quick]

Outputs in ``--out``: ``ref/``, ``pred/`` (NIfTI label maps), ``report/`` (metrics.csv,
summary.json, worst_cases.csv, boxplot_*.png), ``report_monai_policy/``, ``checks.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    """Command-line options shared by every tutorial: --quick and --out."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   default=os.environ.get("MEDSEG_TUTORIAL_QUICK", "0") == "1",
                   help="small settings (also env MEDSEG_TUTORIAL_QUICK=1)")
    p.add_argument("--out", default="tutorial03_output", help="folder for the outputs")
    return p.parse_args()


def finite_or_none(obj):
    """Replace NaN/inf by None so the JSON is strict (NaN is not valid JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_or_none(v) for v in obj]
    return obj


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = (48, 48, 20) if args.quick else (96, 96, 40)
    spacing = (3.0, 3.0, 5.0) if args.quick else (1.5, 1.5, 5.0)
    n_boot = 200 if args.quick else 2000

    import nibabel as nib
    from scipy import ndimage

    from medseg.data import phantoms
    from medseg.evaluation import evaluate
    from medseg.io.atomic import atomic_path, atomic_write_text

    # ----------------------------------------------------------------------- 1. a test set
    # Five abdomen CT phantoms with exact labels (1 liver, 2 spleen, 3 right kidney, 4 left
    # kidney), saved as NIfTI references. For each we make a "prediction" with a known defect.
    print("== 1. Building references and damaged predictions ==")
    ref_dir, pred_dir = out / "ref", out / "pred"
    ref_dir.mkdir(exist_ok=True)
    pred_dir.mkdir(exist_ok=True)
    defects = {
        "case_000": "perfect copy",
        "case_001": "whole prediction shifted by one slice (5 mm along k)",
        "case_002": "liver eroded by one voxel",
        "case_003": "spleen missed (prediction empty for label 2)",
        "case_004": "spleen absent in reference AND prediction; false-positive blob as left kidney",
    }
    labels = {}
    for n, (case, what) in enumerate(defects.items()):
        ph = phantoms.abdomen_ct(shape=shape, spacing=spacing, orientation="LPS", seed=10 + n)
        labels = ph.labels
        ref = ph.label.copy()
        pred = ref.copy()
        if case == "case_001":
            pred = np.roll(ref, 1, axis=2)
        elif case == "case_002":
            liver = ndimage.binary_erosion(ref == 1)
            pred[(ref == 1) & ~liver] = 0
        elif case == "case_003":
            pred[pred == 2] = 0
        elif case == "case_004":
            ref[ref == 2] = 0
            pred[pred == 2] = 0
            pred[2:5, 2:5, 2:4] = 4  # a small false positive far from the real left kidney
        # The affine (RAS mm) is what gives the metrics their millimetres.
        for folder, arr in ((ref_dir, ref), (pred_dir, pred)):
            with atomic_path(folder / f"{case}.nii.gz") as tmp:  # temp file + rename
                nib.save(nib.Nifti1Image(arr.astype(np.uint8), ph.affine), str(tmp))
        print(f"  {case}: {what}")
    print(f"  labels: {labels};  voxel spacing {spacing} mm (anisotropic)")

    # ----------------------------------------------------------------------- 2. evaluate
    print("\n== 2. medseg.evaluation.evaluate ==")
    result = evaluate(pred_dir, ref_dir, out / "report", labels=labels, tolerance_mm=2.0,
                      n_boot=n_boot, seed=0)
    print("  files written:", ", ".join(sorted(p.name for p in (out / "report").iterdir())))
    with open(out / "report" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    print(f"  metrics.csv: {len(rows)} rows (case x label), columns: {', '.join(list(rows[0])[:9])}, ...")
    print(f"  {'case':9s} {'label':13s} {'dice':>6s} {'hd95 mm':>8s} {'assd mm':>8s} {'nsd@2mm':>8s}")
    for r in rows:
        name = labels.get(int(r["label"]), r["label"])
        print(f"  {r['case']:9s} {name:13s} {float(r['dice']):6.3f} {float(r['hd95']):8.2f} "
              f"{float(r['assd']):8.2f} {float(r['nsd']):8.3f}")

    # ----------------------------------------------------------------------- 3. reading it
    # The one-slice shift of case_001: with 5 mm slices the surfaces move by 5 mm along k, so
    # HD95 is about 5 mm, although the shift is "one voxel".
    shifted = [r for r in rows if r["case"] == "case_001" and r["label"] == "1"][0]
    print(f"\n  case_001 liver HD95 = {float(shifted['hd95']):.2f} mm: one slice of {spacing[2]} mm")
    # case_002: erosion removes the boundary voxels along every axis, including k, so the
    # largest surface error is again one 5 mm slice.
    # case_003: the spleen is missing from the prediction -> Dice 0, distances undefined (NaN).
    missed = [r for r in rows if r["case"] == "case_003" and r["label"] == "2"][0]
    print(f"  case_003 missed spleen: dice {missed['dice']}, hd95 {missed['hd95']}")
    both_empty = [r for r in rows if r["case"] == "case_004" and r["label"] == "2"][0]
    print(f"  case_004 spleen empty in both (policy metricsreloaded): dice {both_empty['dice']}, "
          f"iou {both_empty['iou']}")

    summary = json.loads((out / "report" / "summary.json").read_text())
    print("\n  summary.json keys:", ", ".join(summary))
    print(f"  empty_policy: {summary['empty_policy']['name']}")
    for entry in summary["per_label"].values():
        d = entry["metrics"]["dice"]
        h = entry["metrics"]["hd95"]
        print(f"  {entry['name']:13s} Dice mean {d['mean']:.3f} (95% CI {d['ci95'][0]:.3f}-{d['ci95'][1]:.3f}, "
              f"n={d['n']}, NaN skipped {d['n_nan']}); HD95 mean {h['mean']:.2f} mm (n={h['n']}); "
              f"empty cases {entry['empty_cases']}")
    print("  worst cases first (what to look at):")
    for w in summary["worst_cases"][:3]:
        print(f"    #{w['rank']} {w['case']} label {w['label']}: dice {w['dice']:.3f}")

    # ----------------------------------------------------------------------- 4. policies
    # Same data, MONAI's convention: a reference-empty label gives NaN Dice (it is skipped in
    # the mean), so the spleen mean changes.
    print("\n== 4. The empty-mask policy changes the means ==")
    result_monai = evaluate(pred_dir, ref_dir, out / "report_monai_policy", labels=labels,
                            tolerance_mm=2.0, policy="monai", n_boot=n_boot, seed=0, plots=False)

    def spleen_dices(res) -> list[float]:
        return [float(r["dice"]) for r in res.rows if int(r["label"]) == 2]

    d_mr, d_mo = spleen_dices(result), spleen_dices(result_monai)
    mean_mr = float(np.nanmean(d_mr))
    mean_mo = float(np.nanmean(d_mo))
    print(f"  spleen Dice per case, metricsreloaded: {[round(v, 3) for v in d_mr]} -> mean {mean_mr:.3f}")
    print(f"  spleen Dice per case, monai          : {[round(v, 3) for v in d_mo]} -> mean {mean_mo:.3f}")

    # ----------------------------------------------------------------------- 5. check vs MONAI
    # An independent check: MONAI's metric functions on the raw arrays of case_001 (liver),
    # with the spacing passed explicitly.
    print("\n== 5. Cross-check against MONAI's metric functions (case_001, liver) ==")
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    def onehot(path: Path, label: int) -> torch.Tensor:
        arr = np.asarray(nib.load(str(path)).dataobj) == label
        return torch.from_numpy(arr)[None, None].float()

    p = onehot(pred_dir / "case_001.nii.gz", 1)
    r = onehot(ref_dir / "case_001.nii.gz", 1)
    monai_dice = float(compute_dice(p, r, include_background=True))
    monai_hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                                  spacing=list(spacing)))
    monai_assd = float(compute_average_surface_distance(p, r, include_background=True, symmetric=True,
                                                        spacing=list(spacing)))
    monai_hd95_vox = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95))
    ours = {k: float(shifted[k]) for k in ("dice", "hd95", "assd")}
    print(f"  dice  medseg {ours['dice']:.4f}  MONAI {monai_dice:.4f}")
    print(f"  hd95  medseg {ours['hd95']:.3f} mm  MONAI {monai_hd95:.3f} mm "
          f"(MONAI without spacing: {monai_hd95_vox:.3f} 'voxels' - meaningless on anisotropic data)")
    print(f"  assd  medseg {ours['assd']:.3f} mm  MONAI {monai_assd:.3f} mm")

    checks = {
        "n_rows": len(rows),
        "n_cases": len(defects),
        "perfect_liver_dice": float([r for r in rows if r["case"] == "case_000" and r["label"] == "1"][0]["dice"]),
        "shift_liver_hd95_mm": ours["hd95"],
        "slice_spacing_mm": spacing[2],
        "missed_spleen_dice": float(missed["dice"]),
        "both_empty_dice_metricsreloaded": float(both_empty["dice"]),
        "both_empty_dice_monai": float([r for r in result_monai.rows if r["case"] == "case_004"
                                        and int(r["label"]) == 2][0]["dice"]),
        "monai": {"dice": monai_dice, "hd95": monai_hd95, "assd": monai_assd},
        "medseg": ours,
        "spleen_mean_dice": {"metricsreloaded": mean_mr, "monai": mean_mo},
        "summary_dice_mean": {e["name"]: e["metrics"]["dice"]["mean"] for e in summary["per_label"].values()},
        "boxplots": sorted(p.name for p in (out / "report").glob("boxplot_*.png")),
    }
    atomic_write_text(out / "checks.json", json.dumps(finite_or_none(checks), indent=2))
    print(f"\nBox plots: {', '.join(checks['boxplots'])} in {out / 'report'}")
    print(f"Checks written to {out / 'checks.json'}")


if __name__ == "__main__":
    main()
