"""Tutorial 7: lung fields on chest X-rays (2D).

What you will learn
-------------------
1. A radiograph is a 2D DICOM image (modality CR or DX). medseg reads it as ``(1, i, j)``
   with i = pixel column, j = pixel row, spacing from PixelSpacing / ImagerPixelSpacing (mm),
   and MONOCHROME1 films (bright = air) inverted so that dense is always bright.
2. "Right lung" means the PATIENT's right. On a PA film in display convention the patient faces
   you, so the right lung is on the screen's LEFT. medseg's labels follow the patient; the
   affine says where the patient's right is, and we check the prediction against it.
3. Running the shipped bundle ``bundles/xray_chest_lungs`` on phantom radiographs (exact lung
   masks, so we can score Dice) and on a REAL chest CR from pydicom's test files (no mask: we
   look at the picture and at the lung areas - in cm^2 when the file stores a pixel size - and
   judge them).

The bundle's weights were trained on phantoms only (see its docs/README.md): the real film is
out of distribution, and this tutorial shows what that looks like instead of hiding it.

Run it::

    python tutorials/07_chest_xray_lungs.py --out /tmp/tutorial07 [--quick]

Outputs in ``--out``: ``phantom/`` (a DX DICOM radiograph + its exact label), ``phantom_overlay.png``,
``real_cr_overlay.png`` (skipped with --quick), ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    """Command-line options shared by every tutorial: --quick and --out (+ --bundle)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   default=os.environ.get("MEDSEG_TUTORIAL_QUICK", "0") == "1",
                   help="small settings (also env MEDSEG_TUTORIAL_QUICK=1)")
    p.add_argument("--out", default="tutorial07_output", help="folder for the outputs")
    p.add_argument("--bundle", default=str(ROOT / "bundles" / "xray_chest_lungs"), help="bundle folder or name")
    return p.parse_args()


def column_centroid(mask: np.ndarray) -> float:
    """Mean pixel column i of a 2D mask (NaN when empty)."""
    return float(np.argwhere(mask)[:, 0].mean()) if mask.any() else float("nan")


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = os.environ.get("MEDSEG_PROGRESS", "1") != "0"

    from medseg.bundle import load_bundle
    from medseg.data import phantoms, sample
    from medseg.inference import segment
    from medseg.io import load
    from medseg.io.atomic import atomic_write_text
    from medseg.io.overlay import save_overlay_montage
    from medseg.metrics import dice

    results: dict = {"bundle": str(args.bundle)}

    # ----------------------------------------------------------------------- 1. a phantom film
    print("== 1. A phantom radiograph written as real DICOM (DX) ==")
    n_cases = 2 if args.quick else 6
    model = load_bundle(args.bundle)
    print(f"  bundle labels {model.labels}, preset {model.preset}, postprocess {model.postprocess}")
    results["phantoms"] = []
    for n in range(n_cases):
        ph = phantoms.chest_xray(shape=(256, 256), spacing=(1.4, 1.4), seed=500 + n)
        folder = out / "phantom" / f"case_{n}"
        phantoms.save_phantom(ph, folder, format="dicom")  # image.dcm (DX) + label.nii.gz
        image = load(folder / "image.dcm")
        if n == 0:
            po = image.meta.get("patient_orientation")
            print(f"  read back: shape {tuple(image.shape)}, modality {image.meta['modality']}, "
                  f"spacing {image.meta['spacing']} mm ({image.meta.get('spacing_source')})")
            # A projection radiograph has no 3D patient position (no ImagePositionPatient /
            # ImageOrientationPatient): its affine only scales pixels to mm. Which way is the
            # patient's left is in PatientOrientation: the direction of increasing i (columns)
            # and of increasing j (rows). "L", "F" = columns run to the patient's Left, rows to
            # the Feet: the usual PA display, patient's right on the screen's left.
            print(f"  projection: {image.meta.get('projection')}, PatientOrientation {po}")
            results["patient_orientation"] = po
        truth = ph.label
        # ------------------------------------------------------------------- 2. segment
        pred = segment(image, model, device="cpu", progress=progress)
        p = pred[0].numpy()
        row = {"case": folder.name}
        for value, name in model.labels.items():
            row[f"dice_{name}"] = float(dice(p, truth, label=value))
            row[f"pred_{name}_mean_i"] = column_centroid(p == value)
            row[f"true_{name}_mean_i"] = column_centroid(truth == value)
        results["phantoms"].append(row)
        print(f"  {folder.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.startswith("dice")))
        if n == 0:
            save_overlay_montage(image, pred, out / "phantom_overlay.png", views=("axial",), n_slices=1,
                                 title="phantom DX: predicted lung fields", label_names=model.labels)
    means = {name: float(np.mean([r[f"dice_{name}"] for r in results["phantoms"]]))
             for name in model.labels.values()}
    results["phantom_mean_dice"] = means
    print(f"  mean Dice over {n_cases} phantoms: {means}")
    # Left/right check: with PatientOrientation "L\\F" the patient's right is at SMALLER i, so
    # the predicted "lung_right" must have a smaller mean column than the predicted "lung_left",
    # as the exact labels do.
    po = results.get("patient_orientation") or ["L", "F"]
    right_is_low_i = str(po[0]).upper().startswith("L")

    def right_of(a: float, b: float) -> bool:
        return a < b if right_is_low_i else a > b

    truth_ok = [right_of(r["true_lung_right_mean_i"], r["true_lung_left_mean_i"]) for r in results["phantoms"]]
    sides_ok = [right_of(r["pred_lung_right_mean_i"], r["pred_lung_left_mean_i"]) for r in results["phantoms"]]
    results["truth_left_right_as_patient_orientation"] = truth_ok
    results["pred_left_right_correct"] = sides_ok
    print(f"  exact labels: right lung on the patient's right per PatientOrientation: {truth_ok}")
    print(f"  prediction  : right lung on the patient's right per PatientOrientation: {sides_ok}")

    # ----------------------------------------------------------------------- 3. a real CR
    if args.quick:
        print("\n== 3. Real CR: skipped with --quick (a 1955 x 1841 film) ==")
    else:
        print("\n== 3. A real chest CR (pydicom test file RG1_UNCR.dcm, no ground truth) ==")
        cr = load(sample("cr_chest"))
        print(f"  shape {tuple(cr.shape)}, modality {cr.meta['modality']}, spacing {cr.meta['spacing']} mm "
              f"({cr.meta.get('spacing_source')})")
        pred = segment(cr, model, device="cpu", progress=progress)
        p = pred[0].numpy()
        n_px = {name: int((p == value).sum()) for value, name in model.labels.items()}
        fraction = {name: n / p.size for name, n in n_px.items()}
        results["real_cr_pixels"] = n_px
        results["real_cr_area_fraction"] = fraction
        results["real_cr_spacing_source"] = cr.meta.get("spacing_source")
        if cr.meta.get("spacing_source") == "default":
            # This file's PixelSpacing is blank (0.000): there is NO physical pixel size, so no
            # area in cm^2 can be given. medseg says so (spacing_source "default") instead of
            # inventing one; we fall back to the share of the film each lung field covers.
            results["real_cr_area_cm2"] = None
            print("  no physical pixel size in this file: areas as a share of the film instead of cm^2")
            print("  " + ", ".join(f"{k} {100 * v:.1f} % of the film" for k, v in fraction.items()))
            plausible = all(0.05 <= v <= 0.25 for v in fraction.values())
            rule = "each lung field covers roughly 5-25 % of a PA chest film"
        else:
            px_cm2 = float(np.prod(cr.meta["spacing"])) / 100.0
            areas = {name: n * px_cm2 for name, n in n_px.items()}
            results["real_cr_area_cm2"] = areas
            print(f"  lung field areas: {', '.join(f'{k} {v:.0f} cm^2' for k, v in areas.items())}")
            plausible = all(80.0 <= v <= 400.0 for v in areas.values())
            rule = "an adult lung field is roughly 150-300 cm^2 on a PA film"
        results["real_cr_areas_plausible"] = plausible
        print(f"  {rule}: " + ("plausible - still look at the picture: the outline can be rough"
                               if plausible else "NOT plausible - do not trust this output"))
        print("  The weights were trained on phantoms only: a real film is out of distribution.")
        save_overlay_montage(cr, pred, out / "real_cr_overlay.png", views=("axial",), n_slices=1,
                             title="real CR (RG1_UNCR): phantom-trained lung model", label_names=model.labels)

    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    print(f"\nWritten: {out / 'results.json'}, {out / 'phantom_overlay.png'}")


if __name__ == "__main__":
    main()
