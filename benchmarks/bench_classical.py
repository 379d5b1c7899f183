"""Classical automatic methods against the trained bundles, on the same real cases.

* ``ct_abdomen_organs`` vs the classical methods on TotalSegmentator's ``example_ct_sm`` (liver,
  spleen, kidneys; reference ``example_seg``; the reserved ``example_ct_dicom`` is never read);
* ``ct_lung_lesion`` vs them on pyradiomics lung1 and lung2 (the bundle saw lung2 in training);
* ``fluo_nuclei_2d`` vs the watershed on the stardist nuclei image (instances);
* the CT presets (bone, lung, body) vs TotalSegmentator's bones / lung lobes / all its structures.

A classical method does not name organs, so for each structure it is credited with its best
label (the class whose Dice with the structure is highest): an oracle choice that favours the
classical methods. Writes ``benchmarks/results/classical_vs_bundles.json`` and prints the table.

Usage: ``python benchmarks/bench_classical.py``
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEMANTIC_METHODS = ("otsu", "multi-otsu:3", "kmeans:3", "gmm:3", "edges")
ORGANS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}


def dice(a, b) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def best_label(labels: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    vals = [(dice(labels == v, ref), int(v)) for v in np.unique(labels) if v]
    return max(vals) if vals else (0.0, 0)


def main() -> int:
    import medseg.io
    from medseg.bundle import load_bundle
    from medseg.classical._sitk import spacing_of
    from medseg.classical.methods import run_method
    from medseg.data import sample
    from medseg.data.totalseg import TOTAL_V2
    from medseg.inference.segmentation import segment
    from medseg.metrics.coco import coco_ap
    from medseg.metrics.instance import instance_metrics

    t0 = time.perf_counter()
    rows = []
    cases = [("ts_ct_sm", "ts_ct_sm_seg", "ct_abdomen_organs", ORGANS, {1: 5, 2: 1, 3: 2, 4: 3})]
    for name in ("lung1", "lung2"):
        cases.append((f"{name}_image", f"{name}_label", "ct_lung_lesion", {"lesion": 1}, {1: 1}))
    for img_name, ref_name, bundle, structures, bundle_to_ref in cases:
        img = medseg.io.load(sample(img_name))
        ref = medseg.io.load(sample(ref_name), kind="label").numpy()[0]
        if ref_name.endswith("_label"):
            ref = (ref > 0).astype(np.int32)
        arr = img.numpy()[0].astype(np.float32)
        sp = spacing_of(np.asarray(img.affine), arr.ndim)
        t = time.perf_counter()
        pred = segment(img, load_bundle(bundle), progress=False).numpy()[0]
        t_bundle = time.perf_counter() - t
        classical = {}
        for m in SEMANTIC_METHODS:
            t = time.perf_counter()
            classical[m] = (run_method(m, arr, sp, affine=np.asarray(img.affine)).labels, time.perf_counter() - t)
        for sname, value in structures.items():
            r = ref == value
            bval = next(k for k, v in bundle_to_ref.items() if v == value)
            row = {"case": img_name.replace("_image", ""), "structure": sname, "voxels": int(r.sum()),
                   bundle: round(dice(pred == bval, r), 4), "bundle_s": round(t_bundle, 2)}
            for m, (lab, sec) in classical.items():
                d, v = best_label(lab, r)
                row[m] = round(d, 4)
                row[f"{m}_label"] = v
                row[f"{m}_s"] = round(sec, 2)
            rows.append(row)
            print(row, flush=True)
    # nuclei: instances
    img = medseg.io.load(sample("nuclei_image"))
    ref = medseg.io.load(sample("nuclei_mask"), kind="label").numpy()[0]
    t = time.perf_counter()
    pred = segment(img, load_bundle("fluo_nuclei_2d"), progress=False).numpy()[0]
    t_b = time.perf_counter() - t
    t = time.perf_counter()
    ws = run_method("watershed", img.numpy()[0], (1.0, 1.0)).labels
    t_w = time.perf_counter() - t
    nuclei = {}
    for key, lab, sec in (("fluo_nuclei_2d", pred, t_b), ("watershed", ws, t_w)):
        im = instance_metrics(lab, ref)
        co = coco_ap(lab, ref)
        nuclei[key] = {"f1@0.5": round(im["f1"], 4), "pq": round(im["pq"], 4), "dsb_ap@0.5": round(im["ap"], 4),
                       "coco_ap50": round(co["coco_ap50"], 4), "coco_map": round(co["coco_map"], 4),
                       "n_pred": im["n_pred"], "n_ref": im["n_ref"], "seconds": round(sec, 2)}
    print(nuclei, flush=True)
    # CT presets vs TotalSegmentator (no bundle for these)
    img = medseg.io.load(sample("ts_ct_sm"))
    seg = medseg.io.load(sample("ts_ct_sm_seg"), kind="label").numpy()[0]
    arr = img.numpy()[0].astype(np.float32)
    refs = {"bone": np.isin(seg, [k for k, v in TOTAL_V2.items() if any(w in v for w in (
                "vertebrae", "rib", "sacrum", "hip", "femur", "sternum", "scapula", "clavicula"))]),
            "lung": np.isin(seg, [k for k, v in TOTAL_V2.items() if v.startswith("lung_")]),
            "body": seg > 0}
    presets = {}
    for name, r in refs.items():
        m = run_method(f"preset:{name}", arr, (3.0, 3.0, 3.0), affine=np.asarray(img.affine)).labels > 0
        presets[name] = {"dice": round(dice(m, r), 4), "precision": round(float((m & r).sum() / max(m.sum(), 1)), 4),
                         "recall": round(float((m & r).sum() / max(r.sum(), 1)), 4),
                         "reference": "TotalSegmentator bones" if name == "bone" else (
                             "TotalSegmentator lung lobes" if name == "lung" else
                             "every TotalSegmentator structure (recall only is meaningful)")}
    print(presets, flush=True)
    result = {"command": "python benchmarks/bench_classical.py",
              "note": "classical methods credited with their best label per structure (oracle choice)",
              "semantic": rows, "nuclei": nuclei, "ct_presets_on_ts_ct_sm": presets,
              "wall_s": round(time.perf_counter() - t0, 1)}
    from medseg.io.atomic import atomic_write_text

    out = ROOT / "benchmarks" / "results" / "classical_vs_bundles.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    cols = ["bundle", *SEMANTIC_METHODS]
    print("| case | structure | bundle | " + " | ".join(SEMANTIC_METHODS) + " |")
    print("|" + "---|" * (3 + len(SEMANTIC_METHODS)))
    for r in rows:
        bname = "ct_abdomen_organs" if r["case"] == "ts_ct_sm" else "ct_lung_lesion"
        print(f"| {r['case']} | {r['structure']} | {bname} {r[bname]:.3f} | "
              + " | ".join(f"{r[m]:.3f}" for m in cols[1:]) + " |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
