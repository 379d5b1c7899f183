"""Train and ship ``ct_lung_lesion``: lung nodules / masses on chest CT (3D), trained on phantoms.

Training data: medseg chest CT phantoms with 1-3 nodules (``medseg.data.phantoms.lung_ct``, the
generator behind ``write_decathlon_dataset(task="lung")``), seeds 1-12 in four orientations.
Evaluated on held-out phantoms (seeds 9001-9004) AND on the two real chest CTs with a lesion label
shipped in pyradiomics (``lung1`` and ``lung2``), which are never used in training.

Usage (from the repository root)::

    python bundles/ct_lung_lesion/scripts/train.py --out bundles/ct_lung_lesion
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402
import numpy as np  # noqa: E402

NAME = "ct_lung_lesion"
LABELS = {1: "lung_nodule"}
NETWORK = {"arch": "unet", "spatial_dims": 3, "channels": [8, 16, 32, 64], "strides": [2, 2, 2],
           "num_res_units": 1}
TRAIN_PLAN = [(s, ("LPS", "RAS", "LAS", "RPI")[s % 4]) for s in range(1, 13)]
TEST_PLAN = [(9001, "RAS"), (9002, "LPS"), (9003, "PIL"), (9004, bt.OBLIQUE)]
POSTPROCESS = {"min_component_mm3": 30.0}


def eval_real(model) -> dict[str, dict[str, float]]:
    """Dice / HD95 / lesion detection on pyradiomics lung1 and lung2 (real CT, 5 mm slices)."""
    from medseg.data import sample
    from medseg.inference import segment
    from medseg.io import load
    from medseg.metrics import dice, hd95, lesion_metrics

    out = {}
    for case in ("lung1", "lung2"):
        img = load(sample(f"{case}_image"))
        ref = load(sample(f"{case}_label"))[0].numpy() > 0
        pred = segment(img, model, device="cpu", progress=False)[0].numpy() > 0
        sp = [float(s) for s in img.meta["spacing"][:3]]
        les = lesion_metrics(pred.astype(np.uint8), ref.astype(np.uint8))
        out[f"real {case} (pyradiomics)"] = {
            "lung_nodule": float(dice(pred, ref)), "hd95_mm": float(hd95(pred, ref, sp)),
            "pred_ml": float(pred.sum() * np.prod(sp) / 1000), "ref_ml": float(ref.sum() * np.prod(sp) / 1000),
            **{k: float(v) for k, v in les.items() if isinstance(v, (int, float))}}
        print(case, out[f"real {case} (pyradiomics)"], flush=True)
    return out


def main() -> None:
    args = bt.common_args(__doc__.splitlines()[0]).parse_args()
    work = bt.work_dir(args.work, NAME)
    ds = bt.write_msd(work / "dataset", bt.iter_phantoms("lung_ct", TRAIN_PLAN), LABELS, "CT")
    run = bt.train_run(ds, work / "run", "ct_lung", NETWORK, epochs=40, patch_size=(48, 48, 48),
                       preset_overrides={"target_spacing": [2.0, 2.0, 2.0]},
                       batch_size=2, num_samples=2, pos=3.0, neg=1.0, lr=3e-3, val_fraction=0.17,
                       val_every=5, seed=0, max_minutes=args.max_minutes, resume=args.resume,
                       ship_only=args.ship_only, overlap=0.25, sw_batch_size=2)
    bt.patch_model_spec(run, name=NAME, postprocess=POSTPROCESS)
    bt.slim_checkpoint(run)
    model = bt.load_run_model(run)
    res = bt.eval_cases(model, bt.phantom_cases("lung_ct", TEST_PLAN), LABELS)
    res_all = {**res, "mean (phantoms)": bt.mean_row(res)}
    real = eval_real(model)
    rows = {**res_all, **{k: {"lung_nodule": v["lung_nodule"], "hd95_mm": v["hd95_mm"],
                              "pred_ml": v["pred_ml"], "ref_ml": v["ref_ml"]} for k, v in real.items()}}
    readme = f"""# ct_lung_lesion

3D segmentation of lung nodules and masses (label 1) on chest CT (HU). Small 3D U-Net (channels
8-16-32-64), preset `ct_lung` with 2 mm isotropic resampling (RAS, window -1000..400 HU), sliding
window 48^3, components smaller than 30 mm^3 removed.

## What the weights are (and are not) fit for
**Trained on synthetic phantoms only** (`medseg.data.phantoms.lung_ct`: round soft-tissue nodules
of 3-11 mm radius inside analytic lungs). They are **NOT fit for patients**: real lesions are
spiculated, attached to the pleura or vessels, part-solid, and real lungs are full of vessels
that look like small nodules to a phantom-trained model. The real-CT rows below show what that
means in numbers.

## Measured
Held-out phantoms (seeds never used in training, other orientations) and the two REAL chest CTs
with a lesion label from pyradiomics (`lung1`, `lung2`; 5 mm slices; never used in training).
Dice and HD95 (mm) from `medseg.metrics` on the source grid after `medseg.inference.segment`;
volumes in ml:

{bt.fmt_table(rows, ["lung_nodule", "hd95_mm", "pred_ml", "ref_ml"])}
(`lung_nodule` = Dice. HD95 is NaN/inf when one side is empty.) On the real CTs the phantom-trained
model touches the true lesion but also marks dozens of false-positive components elsewhere in the
chest (lesion-level counts in `docs/heldout_metrics.json`), so the Dice is near zero: these
weights do not transfer to real CT. Lesion-level detection on the
real cases (`medseg.metrics.lesion_metrics`) is in `docs/heldout_metrics.json`.

Reproduce (CPU, seeded; about 15 minutes on 2 cores):
```
python bundles/ct_lung_lesion/scripts/train.py --out bundles/ct_lung_lesion
```

## Recipe for real data
LIDC-IDRI (nodule contours from 4 readers: use the 50 % consensus), MSD Task06 Lung (non-small
cell lung cancer masses) or NSCLC-Radiomics: convert to MSD layout with one label (1 = lesion),
`medseg train DATASET --preset ct_lung --network '{{"arch": "unet", "channels": [16, 32, 64, 128,
256]}}' --patch-size 96 96 64 --pos 3 --epochs 500` on a GPU; report Dice and lesion-level
sensitivity / false positives per scan on held-out patients.

## Data
Training: synthetic, generated by medseg. Evaluation: pyradiomics 3.0.1 sample data
`lung1_image/label.nrrd`, `lung2_image/label.nrrd` (BSD-3). See docs/data_license.txt.
"""
    metrics_file = work / "heldout_metrics.json"
    metrics_file.write_text(json.dumps({**res_all, **real}, indent=2, default=float) + "\n")
    bt.ship(run, args.out, name=NAME,
            description="Small 3D U-Net for lung nodules / masses on chest CT, trained on medseg phantoms "
                        "(NOT fit for patients); evaluated on two real pyradiomics CTs.",
            data_source="synthetic chest CT phantoms with nodules generated by medseg.data.phantoms.lung_ct "
                        "(seeds 1-12, orientations LPS/RAS/LAS/RPI)",
            license_text="Training data: synthetic, generated by medseg (medseg.data.phantoms); no patient "
                         "data, no licence restrictions.\nEvaluation data (not used for training): "
                         "pyradiomics 3.0.1 sample data lung1/lung2 (image and label NRRD), BSD 3-Clause "
                         "License, Copyright (c) 2017 Harvard Medical School / Dana-Farber Cancer Institute "
                         "(pyradiomics authors).",
            readme_head=readme, extra_docs={"heldout_metrics.json": metrics_file},
            task_description="CT lung nodule / mass segmentation (3D)")
    print(json.dumps(rows, indent=2))
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
