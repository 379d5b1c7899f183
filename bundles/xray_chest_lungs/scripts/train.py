"""Train and ship ``xray_chest_lungs``: right / left lung fields on PA chest radiographs (2D).

Training data: medseg chest radiograph phantoms (``medseg.data.phantoms.chest_xray``, a
Beer-Lambert projection of an analytic chest), seeds 1-24. Held-out test: seeds 9001-9006.
The script also runs the model on the real chest CR of pydicom's test files
(``medseg.data.sample("cr_chest")``, RG1_UNCR.dcm) and saves the overlay to docs/.

Usage (from the repository root)::

    python bundles/xray_chest_lungs/scripts/train.py --out bundles/xray_chest_lungs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402
import numpy as np  # noqa: E402

NAME = "xray_chest_lungs"
LABELS = {1: "lung_right", 2: "lung_left"}
NETWORK = {"arch": "unet", "spatial_dims": 2, "channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 2],
           "num_res_units": 1}
TRAIN_PLAN = [(s, None) for s in range(1, 25)]
TEST_PLAN = [(s, None) for s in range(9001, 9007)]
POSTPROCESS = {"keep_largest_component": True, "fill_holes": True}


def real_cr_overlay(model, out_png: Path) -> dict[str, float]:
    """Segment the real CR (RG1_UNCR.dcm), write the overlay PNG; return each label's share of
    the image area (RG1's PixelSpacing is blank, so physical areas are unknown)."""
    from medseg.data import sample
    from medseg.inference import segment
    from medseg.io import load
    from medseg.io.overlay import save_overlay_montage

    img = load(sample("cr_chest"))
    seg = segment(img, model, device="cpu", progress=False)
    save_overlay_montage(img, seg, out_png)
    lab = seg[0].numpy()
    return {f"{name}_image_fraction": float((lab == k).mean()) for k, name in LABELS.items()}


def main() -> None:
    args = bt.common_args(__doc__.splitlines()[0]).parse_args()
    work = bt.work_dir(args.work, NAME)
    ds = bt.write_msd(work / "dataset", bt.iter_phantoms("chest_xray", TRAIN_PLAN), LABELS, "DX")
    run = bt.train_run(ds, work / "run", "xray_chest", NETWORK, epochs=30, patch_size=(256, 256), preset_overrides={"long_side": 256},
                       batch_size=4, num_samples=1, lr=3e-3, val_fraction=0.125, val_every=5, seed=0,
                       max_minutes=args.max_minutes, resume=args.resume,
                       ship_only=args.ship_only, overlap=0.25, sw_batch_size=4,
                       augmentation=bt.no_flip_augmentation())
    bt.patch_model_spec(run, name=NAME, postprocess=POSTPROCESS)
    bt.slim_checkpoint(run)
    model = bt.load_run_model(run)
    res = bt.eval_cases(model, bt.phantom_cases("chest_xray", TEST_PLAN), LABELS)
    res_all = {**res, "mean": bt.mean_row(res)}
    png = work / "real_cr_overlay.png"
    areas = real_cr_overlay(model, png)
    print("real CR:", areas)
    cols = list(LABELS.values())
    readme = f"""# xray_chest_lungs

Right (1) and left (2) lung fields on a PA chest radiograph (2D, one channel). Small 2D U-Net,
preset `xray_chest` with `long_side` 256 (longer side resized to 256 px and padded square, 0.5-99.5 percentile
scaling), one 256 x 256 window, largest component kept and holes filled per lung.
"Right" is the PATIENT's right: on a PA film in display convention it is on the viewer's LEFT
(medseg keeps the geometry; the labels follow the patient, not the screen).

Training augmentation: medseg's default chain (rotation, scaling, intensity, gamma, noise) with
random flips switched OFF: a left-right flip would swap which lung is the right one.

## What the weights are (and are not) fit for
**Trained on synthetic radiograph phantoms only** (`medseg.data.phantoms.chest_xray`). They are
**NOT fit for patients** and not a lung-field segmenter for real films: see the real-CR result
below. Use them to test pipelines (DICOM CR/DX reading, MONOCHROME1 handling, spacing, overlays,
bundle tooling), and the recipe below to train real weights.

## Measured on held-out phantoms (seeds 9001-9006, never used in training)
Dice (`medseg.metrics.dice`) on the source grid, after `medseg.inference.segment`:

{bt.fmt_table(res_all, cols)}
## On a real radiograph
`docs/real_cr_overlay.png` is the output on the real chest CR shipped with pydicom's test files
(`RG1_UNCR.dcm`, 1955 x 1841 px, via `medseg.data.sample("cr_chest")`). There is no ground truth
for it, and its PixelSpacing is blank (medseg falls back to 1 mm and says so). Share of the image
labelled: right lung {100 * areas['lung_right_image_fraction']:.1f} %, left lung
{100 * areas['lung_left_image_fraction']:.1f} % (on a well-collimated PA film each lung field
typically covers roughly 10-20 % of the image). Look at the picture before trusting
anything: phantom-trained weights see a real film as out-of-distribution (different texture,
collimation, markers, exposure), so the outline is at best rough and may be badly wrong; that is
the honest state of these weights and why they are marked not fit for patients.

What the overlay of the shipped weights shows (looked at by eye): the sides are right (label 1 on
the patient's right, shown on the viewer's left with the R marker), both lung fields are found,
but the outlines are rough: the right lung misses its lateral and lower parts, the left lung
leaves a hole in its middle and runs down over the heart border towards the diaphragm. Usable as
a smoke test of the pipeline, not as a lung mask.

Reproduce (CPU, seeded; about 10 minutes on 2 cores):
```
python bundles/xray_chest_lungs/scripts/train.py --out bundles/xray_chest_lungs
```

## Recipe for real data (Montgomery / Shenzhen)
1. Montgomery County set: PNG films plus `ManualMask/leftMask` and `rightMask`; Shenzhen: PNG
   films plus lung masks. Merge the masks into one label map (1 = patient's right lung,
   2 = patient's left lung; in Montgomery, `rightMask` is the patient's right lung, drawn on the
   viewer's left) and write each pair as 2D NIfTI with the pixel spacing, MSD layout.
2. `medseg train DATASET --preset xray_chest --network '{{"arch": "unet", "spatial_dims": 2,
   "channels": [16, 32, 64, 128, 256]}}' --patch-size 512 512 --epochs 200`, then
   `medseg bundle build RUN OUT --name xray_chest_lungs`.
3. Check left/right on a few films with `medseg segment` overlays before anything else.

## Data
Synthetic, generated by medseg (no patient data; see docs/data_license.txt). The real CR used
for the demonstration overlay is pydicom's test file RG1_UNCR.dcm (MIT licence of pydicom-data).
"""
    metrics_file = work / "heldout_metrics.json"
    metrics_file.write_text(json.dumps({**res_all, "real_cr_rg1": areas}, indent=2) + "\n")
    bt.ship(run, args.out, name=NAME,
            description="Small 2D U-Net for right/left lung fields on PA chest radiographs, trained on medseg "
                        "phantoms (NOT fit for patients).",
            data_source="synthetic PA chest radiograph phantoms generated by medseg.data.phantoms.chest_xray "
                        "(seeds 1-24)",
            license_text="Synthetic, generated by medseg (medseg.data.phantoms); no patient data, no licence "
                         "restrictions. The demonstration overlay uses pydicom's test file RG1_UNCR.dcm "
                         "(pydicom-data, MIT licence).",
            readme_head=readme,
            extra_docs={"heldout_metrics.json": metrics_file, "real_cr_overlay.png": png},
            task_description="chest radiograph lung field segmentation (2D)")
    print(json.dumps(res_all, indent=2))
    print(f"bundle written to {args.out}; real CR label fractions: {np.round(list(areas.values()), 3)}")


if __name__ == "__main__":
    main()
