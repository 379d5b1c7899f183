"""Score the shipped 3D bundles on REAL scans with references (Dice, HD95 per structure).

Real cases (all through :mod:`medseg.data`, pinned and sha256-checked; the reserved blind test
``example_ct_dicom`` / ``example_seg_dicom`` is never read):

* ``ct_abdomen_organs``: ``ts_ct_sm`` (real abdominal CT, 3 mm) against TotalSegmentator's
  ``ts_ct_sm_seg`` (liver, spleen, kidneys);
* ``ct_spine``: ``ts_ct`` (the whole 112-slice CT) against TotalSegmentator's vertebrae
  ``ts_ct_vertebrae`` (T12-L5 by level; plus the volume the bundle calls vertebra more than 10 mm
  from any TotalSegmentator vertebra S1-T11: hips, femoral heads named as vertebrae; and the volume
  called vertebra on TotalSegmentator's S1, the sacrum), and the cropped CT of a second patient
  (``ts_ct2_masks``) against its vertebra T12 mask (Dice, HD95, and the volume given any other level
  or called T12 off the mask: the thoracic vertebrae above carry no reference label);
* ``ct_lung_lesion``: pyradiomics ``lung1`` and ``lung2`` (real chest CT, one lesion each);
* ``mri_brain_mask``: not here (its own script scores MNI152 and deepbet agreement).

Usage: ``python bundles/real_images.py [BUNDLE ...] [--bundle-dir DIR]`` -> prints a Markdown table
per bundle and writes ``benchmarks/results/real_images.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bundle_tools as bt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ORGANS = {"liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4}
SPINE_TS = {"vertebrae_T12": 1, "vertebrae_L1": 2, "vertebrae_L2": 3, "vertebrae_L3": 4,
            "vertebrae_L4": 5, "vertebrae_L5": 6}
SPINE_NAMES = {1: "T12", 2: "L1", 3: "L2", 4: "L3", 5: "L4", 6: "L5"}
TOTAL_S1 = 26  # TotalSegmentator v2 "vertebrae_S1" (the sacrum's first segment)


def _nii(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def _scores(pred: np.ndarray, ref: np.ndarray, labels: dict[int, str], affine: np.ndarray) -> dict[str, float]:
    from medseg.metrics.segmentation import hd95

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row: dict[str, float] = {}
    for v, n in labels.items():
        row[f"{n} Dice"] = bt.dice_per_label(pred, ref, {v: n})[n]
        row[f"{n} HD95 mm"] = float(hd95(pred == v, ref == v, spacing=spacing))
    return row


def organs(model) -> dict[str, dict[str, float]]:
    from medseg.data import sample
    from medseg.data.totalseg import TOTAL_V2, remap

    img, aff = _nii(sample("ts_ct_sm"))
    seg, _ = _nii(sample("ts_ct_sm_seg"))
    ref = remap(seg, TOTAL_V2, ORGANS)
    pred = bt.segment_array(model, img.astype(np.float32), aff)
    return {"ts_ct_sm": _scores(pred, ref, {v: k for k, v in ORGANS.items()}, aff)}


def spine(model) -> dict[str, dict[str, float]]:
    from scipy import ndimage

    from medseg.data import sample
    from medseg.data.totalseg import TOTAL_V2, remap

    img, aff = _nii(sample("ts_ct"))
    seg, _ = _nii(sample("ts_ct_vertebrae"))
    ref = remap(seg, TOTAL_V2, SPINE_TS)
    pred = bt.segment_array(model, img.astype(np.float32), aff)
    row = _scores(pred, ref, SPINE_NAMES, aff)
    row["merged T12-L5 Dice"] = float(bt.dice_per_label((pred > 0).astype(np.uint8), (ref > 0).astype(np.uint8),
                                                        {1: "m"})["m"])
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    dist = ndimage.distance_transform_edt(seg == 0, sampling=spacing)
    ml = float(np.prod(spacing)) / 1000
    row["vertebra called > 10 mm from any vertebra (mL)"] = float((pred > 0)[dist > 10].sum() * ml)
    row["vertebra called on the sacrum S1 (mL)"] = float(((pred > 0) & (seg == TOTAL_S1)).sum() * ml)
    out = {"ts_ct (patient A)": row}
    folder = sample("ts_ct2_masks")
    img2, aff2 = _nii(folder / "ct_cropped.nii.gz")
    t12, _ = _nii(folder / "vertebrae_T12.nii.gz")
    pred2 = bt.segment_array(model, img2.astype(np.float32), aff2)
    from medseg.metrics.segmentation import hd95

    sp2 = np.linalg.norm(aff2[:3, :3], axis=0)
    out["ts_ct2 cropped (patient B)"] = {
        "T12 Dice": bt.dice_per_label(pred2, (t12 > 0).astype(np.uint8), {1: "T12"})["T12"],
        "T12 HD95 mm": float(hd95(pred2 == 1, t12 > 0, spacing=sp2)),
        "any vertebra label on the T12 mask (fraction)": float(((pred2 > 0) & (t12 > 0)).sum() / max((t12 > 0).sum(), 1)),
        # the thoracic vertebrae above T12 carry no reference label: any level called there is a wrong name
        "levels other than T12 called (mL)": float(((pred2 > 1) | ((pred2 == 1) & (t12 == 0))).sum()
                                                   * np.prod(sp2) / 1000),
    }
    return out


def lung(model) -> dict[str, dict[str, float]]:
    from medseg.data import sample
    from medseg.io import load

    out = {}
    for case in ("lung1", "lung2"):
        image = load(sample(f"{case}_image"))
        label = load(sample(f"{case}_label"), kind="label")
        aff = np.asarray(image.affine, dtype=np.float64)
        pred = bt.segment_array(model, image[0].numpy(), aff)
        out[case] = _scores(pred, (label[0].numpy() > 0).astype(np.uint8), {1: "lesion"}, aff)
    return out


TASKS = {"ct_abdomen_organs": organs, "ct_spine": spine, "ct_lung_lesion": lung}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="*", default=list(TASKS))
    ap.add_argument("--bundle-dir", type=Path, help="score the bundle in this folder instead of the shipped one")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_images.json")
    args = ap.parse_args()
    from medseg.bundle import load_bundle

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.bundles:
        model = load_bundle(str(args.bundle_dir) if args.bundle_dir else name)
        res = TASKS[name](model)
        version = json.loads(((args.bundle_dir or ROOT / "bundles" / name) / "configs" / "metadata.json").read_text())["version"]
        results[name] = {"version": version, "cases": res}
        cols = sorted({c for r in res.values() for c in r})
        print(f"\n## {name} {version}\n" + bt.fmt_table(res, cols), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
