"""medseg's evaluation vs MONAI's metric functions on the same multi-label NIfTI cases.

Writes N cases (default 10) of 512x512x300 voxels (``--small``: 256x256x150), five labels of
organ-like ellipsoids of very different sizes, anisotropic voxels (0.7 x 0.7 x 1.5 mm), as
uncompressed NIfTI files; the prediction of each label is the reference ellipsoid moved, resized
and with a notch cut out. Then times, case by case:

* **medseg**: ``medseg.evaluation.evaluate_files`` (reads both files once through
  ``medseg.io.load``, checks the grids, Dice/IoU/HD95/ASSD/NSD/volumes for all labels);
* **MONAI**: nibabel read of both files, then per label ``compute_dice``, ``compute_iou``,
  ``compute_hausdorff_distance(percentile=95, spacing)``,
  ``compute_average_surface_distance(symmetric=True, spacing)`` and
  ``compute_surface_dice(class_thresholds=[tol], spacing)`` on (1, 1, X, Y, Z) tensors.

Prints a side-by-side table (seconds per case and the ratio), checks that every number agrees
(overlap to 1e-4, distances to 0.05 mm) and writes ``benchmarks/results/metrics.json`` (one
entry per variant, ``small`` / ``full``).

    python benchmarks/bench_metrics.py --small --cases 3
    python benchmarks/bench_metrics.py            # full size, 10 cases
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPACING = (0.7, 0.7, 1.5)
TOLERANCE_MM = 1.0
# (centre as a fraction of the shape, radii in mm): liver-, spleen-, kidney-, kidney-, lesion-like
ORGANS = [
    ((0.35, 0.45, 0.50), (75.0, 60.0, 70.0)),
    ((0.70, 0.55, 0.55), (40.0, 30.0, 45.0)),
    ((0.35, 0.75, 0.40), (25.0, 20.0, 35.0)),
    ((0.68, 0.78, 0.40), (25.0, 20.0, 35.0)),
    ((0.50, 0.30, 0.60), (8.0, 8.0, 7.0)),
]


def _paint(arr: np.ndarray, value: int, centre_vox, radii_mm, notch: bool = False) -> None:
    """Paint an ellipsoid into ``arr`` touching only its bounding box (no full-volume grids)."""
    r_vox = [r / s for r, s in zip(radii_mm, SPACING, strict=True)]
    lo = [max(int(np.floor(c - r)) - 1, 0) for c, r in zip(centre_vox, r_vox, strict=True)]
    hi = [min(int(np.ceil(c + r)) + 2, n) for c, r, n in zip(centre_vox, r_vox, arr.shape, strict=True)]
    grids = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre_vox, r_vox, strict=True)) <= 1.0
    if notch:  # a wedge cut from one side: a realistic local error, large HD95
        inside &= ~((grids[0] - centre_vox[0] > 0.3 * r_vox[0]) & (grids[1] - centre_vox[1] > 0.2 * r_vox[1]))
    box = arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    box[inside] = value


def make_case(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pred, ref) uint8 label maps with 5 labels."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    scale = shape[0] / 512.0
    for value, (frac, radii) in enumerate(ORGANS, start=1):
        centre = np.array(frac) * np.array(shape) + rng.normal(0, 3, 3)
        radii = np.array(radii) * scale * rng.uniform(0.9, 1.1, 3)
        _paint(ref, value, centre, radii)
        moved = centre + rng.normal(0, 2.0, 3)
        _paint(pred, value, moved, radii * rng.uniform(0.92, 1.08, 3), notch=value in (1, 3))
    return pred, ref


def write_cases(root: Path, n: int, shape) -> tuple[Path, Path]:
    import nibabel as nib

    pred_dir, ref_dir = root / "pred", root / "ref"
    pred_dir.mkdir(parents=True, exist_ok=True)
    ref_dir.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*SPACING, 1.0])
    for i in range(n):
        pred, ref = make_case(shape, seed=i)
        nib.save(nib.Nifti1Image(pred, affine), str(pred_dir / f"case{i:02d}.nii"))
        nib.save(nib.Nifti1Image(ref, affine), str(ref_dir / f"case{i:02d}.nii"))
    return pred_dir, ref_dir


def monai_case(pred_path: Path, ref_path: Path, labels) -> tuple[dict, float, float]:
    """MONAI's numbers for one case; returns (rows by label, total s, compute-only s)."""
    import nibabel as nib
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    t0 = time.perf_counter()
    p_img, r_img = nib.load(str(pred_path)), nib.load(str(ref_path))
    pred, ref = np.asarray(p_img.dataobj), np.asarray(r_img.dataobj)
    spacing = [float(z) for z in r_img.header.get_zooms()[:3]]
    t1 = time.perf_counter()
    pt, rt = torch.from_numpy(pred), torch.from_numpy(ref)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lab in labels:
            P = (pt == lab)[None, None].float()
            R = (rt == lab)[None, None].float()
            out[lab] = {
                "dice": compute_dice(P, R, ignore_empty=True).item(),
                "iou": compute_iou(P, R, ignore_empty=True).item(),
                "hd95": compute_hausdorff_distance(P, R, percentile=95, spacing=spacing).item(),
                "assd": compute_average_surface_distance(P, R, symmetric=True, spacing=spacing).item(),
                "nsd": compute_surface_dice(P, R, class_thresholds=[TOLERANCE_MM], spacing=spacing).item(),
            }
    t2 = time.perf_counter()
    return out, t2 - t0, t2 - t1


def medseg_case(name: str, pred_path: Path, ref_path: Path, labels) -> tuple[dict, float, float]:
    """medseg's numbers for one case; returns (rows by label, total s, compute-only s)."""
    from medseg.evaluation import evaluate_files, read_label_map
    from medseg.metrics import evaluate_case

    t0 = time.perf_counter()
    rows, _ = evaluate_files(name, pred_path, ref_path, labels=labels, tolerance_mm=TOLERANCE_MM, policy="monai")
    t1 = time.perf_counter()
    pred, ref = read_label_map(pred_path), read_label_map(ref_path)
    t2 = time.perf_counter()
    evaluate_case(pred, ref, None, labels, "monai", TOLERANCE_MM)
    t3 = time.perf_counter()
    return {int(r["label"]): r for r in rows}, t1 - t0, t3 - t2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="256x256x150 instead of 512x512x300")
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--workdir", help="where the NIfTI cases go (default: a temporary folder)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "metrics.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDSEG_PROGRESS", "0")
    shape = (256, 256, 150) if args.small else (512, 512, 300)
    labels = list(range(1, len(ORGANS) + 1))

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t = time.perf_counter()
        pred_dir, ref_dir = write_cases(Path(tmp), args.cases, shape)
        print(f"wrote {args.cases} cases of {shape} ({time.perf_counter() - t:.1f} s)", flush=True)
        # warm both code paths once (imports) on a tiny case, untimed
        warm_pred, warm_ref = write_cases(Path(tmp) / "warm", 1, (64, 64, 40))
        warm = next(warm_pred.iterdir())
        medseg_case("warm", warm, warm_ref / warm.name, labels)
        monai_case(warm, warm_ref / warm.name, labels)

        per_case, max_diff = [], {m: 0.0 for m in ("dice", "iou", "hd95", "assd", "nsd")}
        mismatches = []
        print(f"{'case':8s} {'medseg s':>9s} {'MONAI s':>9s} {'ratio':>6s}   "
              f"{'medseg calc':>11s} {'MONAI calc':>10s} {'ratio':>6s}")
        for pred_path in sorted(pred_dir.iterdir()):
            ref_path = ref_dir / pred_path.name
            name = pred_path.name[:-4]
            ms_rows, ms_total, ms_calc = medseg_case(name, pred_path, ref_path, labels)
            mo_rows, mo_total, mo_calc = monai_case(pred_path, ref_path, labels)
            for lab in labels:
                for m in max_diff:
                    a, b = float(ms_rows[lab][m]), float(mo_rows[lab][m])
                    d = abs(a - b)
                    max_diff[m] = max(max_diff[m], d)
                    if d > (0.05 if m in ("hd95", "assd") else 1e-4):
                        mismatches.append(f"{name} label {lab} {m}: medseg {a} MONAI {b}")
            per_case.append({"case": name, "medseg_s": ms_total, "monai_s": mo_total,
                             "medseg_compute_s": ms_calc, "monai_compute_s": mo_calc})
            print(f"{name:8s} {ms_total:9.2f} {mo_total:9.2f} {mo_total / ms_total:6.1f}   "
                  f"{ms_calc:11.2f} {mo_calc:10.2f} {mo_calc / ms_calc:6.1f}", flush=True)

    tot = {k: sum(c[k] for c in per_case) for k in ("medseg_s", "monai_s", "medseg_compute_s", "monai_compute_s")}
    print(f"{'total':8s} {tot['medseg_s']:9.2f} {tot['monai_s']:9.2f} {tot['monai_s'] / tot['medseg_s']:6.1f}   "
          f"{tot['medseg_compute_s']:11.2f} {tot['monai_compute_s']:10.2f} "
          f"{tot['monai_compute_s'] / tot['medseg_compute_s']:6.1f}")
    print("largest |medseg - MONAI|: " + ", ".join(f"{m} {v:.2e}" for m, v in max_diff.items()))
    agree = not mismatches
    print("numbers agree" if agree else "MISMATCH:\n  " + "\n  ".join(mismatches[:20]))
    result = {
        "shape": list(shape), "spacing_mm": list(SPACING), "labels": len(labels), "cases": args.cases,
        "tolerance_mm": TOLERANCE_MM, "per_case": per_case, "totals_s": tot,
        "ratio_monai_over_medseg": tot["monai_s"] / tot["medseg_s"],
        "ratio_compute_only": tot["monai_compute_s"] / tot["medseg_compute_s"],
        "max_abs_difference": max_diff, "numbers_agree": agree,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0]},
        "command": "python benchmarks/bench_metrics.py" + (" --small" if args.small else "")
                   + f" --cases {args.cases}",
    }
    sys.path.insert(0, str(ROOT))
    from medseg.io.atomic import atomic_write_text

    # one file, one entry per variant ("small" / "full"): a quick run never erases a full one
    out_path = Path(args.out)
    stored = json.loads(out_path.read_text()) if out_path.exists() else {}
    stored["small" if args.small else "full"] = result
    atomic_write_text(out_path, json.dumps(stored, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
