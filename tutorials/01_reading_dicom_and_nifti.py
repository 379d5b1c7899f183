"""Tutorial 1: reading DICOM and NIfTI, and why the affine matters.

What you will learn
-------------------
1. A folder often holds SEVERAL DICOM series (a localizer and the real scan, or two
   reconstructions). ``medseg.io.dicom.list_series`` shows them, and a selector such as
   ``"description~venous"`` or ``"largest"`` picks one without guessing.
2. Every image medseg reads is a MONAI ``MetaTensor`` shaped ``(channel, i, j, k)`` with a 4x4
   ``affine`` that maps a voxel index to world millimetres in **RAS+** (x towards the patient's
   Right, y Anterior, z Superior). DICOM stores LPS; medseg converts on read.
3. The same anatomy stored in three different voxel orders (LPS, RAS and an oblique grid) sits
   at the SAME world position once you use the affine, and in three different places if you
   only look at array indices. Ignoring the affine is how left and right get swapped.
4. Converting DICOM to NIfTI keeps the geometry: nibabel (an independent reader) finds the same
   world coordinates.

Everything here runs on synthetic CT "phantoms" (anatomy-like shapes with exact labels) that
are written as real DICOM files with pydicom, so no patient data is involved.

Run it::

    python tutorials/01_reading_dicom_and_nifti.py --out /tmp/tutorial01
    python tutorials/01_reading_dicom_and_nifti.py --quick --out /tmp/tutorial01   # smaller

Outputs in ``--out``: ``summary.json`` (the numbers printed below), ``orientation_overlay.png``
(the phantom with the labels placed by the affine vs. by array index), ``ct_venous.nii.gz``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- 0. options


def parse_args() -> argparse.Namespace:
    """Command-line options shared by every tutorial: --quick and --out."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   default=os.environ.get("MEDSEG_TUTORIAL_QUICK", "0") == "1",
                   help="small settings (also env MEDSEG_TUTORIAL_QUICK=1)")
    p.add_argument("--out", default="tutorial01_output", help="folder for the outputs")
    return p.parse_args()


def world_centroid(labels: np.ndarray, affine: np.ndarray, value: int) -> np.ndarray:
    """Centre of mass of label ``value`` in RAS millimetres (voxel centroid pushed through the affine)."""
    ijk = np.argwhere(labels == value).mean(axis=0)
    return (affine @ np.append(ijk, 1.0))[:3]


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = (48, 48, 24) if args.quick else (96, 96, 48)
    spacing = (3.0, 3.0, 5.0) if args.quick else (1.5, 1.5, 2.5)

    from medseg.data import phantoms
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.io import convert, load
    from medseg.io.dicom import list_series, select_series
    from medseg.io.read import orientation_code

    summary: dict = {}

    # ----------------------------------------------------------------------- 1. two series
    # We write two CT series into ONE study folder, as a scanner export often does: a coarse
    # "localizer" and the "venous phase" scan we actually want (each in a subfolder here, the
    # reader searches the whole tree; the files could as well be mixed in one folder).
    print("\n== 1. A folder with two series ==")
    study = out / "study"
    ct = phantoms.abdomen_ct(shape=shape, spacing=spacing, orientation="LPS", seed=1)
    write_dicom_series(ct.image, ct.affine, study / "series_a", series_description="abdomen venous phase",
                       study_instance_uid="1.2.826.0.1.3680043.8.498.1001",
                       order="shuffled", seed=1)
    small = phantoms.abdomen_ct(shape=(shape[0] // 2, shape[1] // 2, 6),
                                spacing=(spacing[0] * 2, spacing[1] * 2, spacing[2] * 4), seed=1)
    write_dicom_series(small.image, small.affine, study / "series_b", series_description="localizer",
                       study_instance_uid="1.2.826.0.1.3680043.8.498.1001")

    found = list_series(study)
    for s in found:
        print(f"  series {s.series_instance_uid[-12:]}  {s.modality}  "
              f"'{s.series_description}'  {s.n_instances} files")
    # Loading the folder without saying which series is an error on purpose: medseg never
    # guesses. The message lists the series and how to pick one.
    from medseg.errors import SeriesSelectionError
    try:
        load(study)
    except SeriesSelectionError as exc:
        print(f"  load(folder) without a selector -> SeriesSelectionError: {str(exc)[:90]}...")
        summary["ambiguous_folder_refused"] = True
    chosen = select_series(found, "description~venous")
    largest = select_series(found, "largest")
    print(f"  'description~venous' picks '{chosen.series_description}', "
          f"'largest' picks '{largest.series_description}'")
    summary["series_found"] = len(found)
    summary["selected_description"] = chosen.series_description

    # ----------------------------------------------------------------------- 2. geometry
    print("\n== 2. Geometry of the loaded series ==")
    img = load(study, series="description~venous")
    affine = img.affine.numpy()
    print(f"  shape (channel, i, j, k): {tuple(img.shape)}")
    print(f"  spacing (mm): {img.meta['spacing']}")
    print(f"  orientation code: {orientation_code(affine)}  (i runs to the patient's Left, "
          "j Posterior, k Superior: the usual axial DICOM stack)")
    print("  affine (voxel -> RAS mm):")
    for row in affine:
        print("    " + "  ".join(f"{v:8.2f}" for v in row))
    print(f"  HU range: {float(img.min()):.0f} .. {float(img.max()):.0f}")
    summary["venous"] = {"shape": list(img.shape[1:]), "spacing_mm": [float(s) for s in img.meta["spacing"]],
                         "orientation": orientation_code(affine)}
    # The voxels equal what we wrote (the shuffled file order does not matter: slices are
    # sorted by their position along the slice normal, not by file name).
    max_err = float(np.abs(img[0].numpy() - np.round(ct.image)).max())
    print(f"  max |read - written| HU: {max_err:.3f}")
    summary["venous"]["max_abs_error_hu"] = max_err

    # ----------------------------------------------------------------------- 3. orientation
    # The SAME phantom (same anatomy in the world) sampled on three grids: the usual LPS
    # stack, a RAS stack (i runs to the Right), and an oblique grid rotated 20 degrees about
    # the superior axis. We write each as DICOM, read it back, and find the liver (right side
    # of the patient) and the spleen (left side).
    print("\n== 3. Same anatomy, three voxel orders ==")
    a = np.deg2rad(20.0)
    oblique = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    oblique = oblique @ phantoms.direction_matrix("LPS")
    grids = {"LPS": "LPS", "RAS": "RAS", "oblique": oblique}
    loaded = {}
    for name, orient in grids.items():
        ph = phantoms.abdomen_ct(shape=shape, spacing=spacing, orientation=orient, seed=2)
        folder = out / f"ct_{name}"
        write_dicom_series(ph.image, ph.affine, folder, series_description=f"phantom {name}")
        tensor = load(folder)
        # The label is exact on the phantom's grid; the DICOM read must give the same grid.
        if not np.allclose(tensor.affine.numpy(), ph.affine, atol=1e-3):
            raise SystemExit(f"{name}: the affine read from DICOM differs from the one written")
        loaded[name] = (tensor, ph)
    liver = next(k for k, v in ct.labels.items() if v == "liver")
    spleen = next(k for k, v in ct.labels.items() if v == "spleen")
    summary["orientation"] = {}
    for name, (tensor, ph) in loaded.items():
        aff = tensor.affine.numpy()
        w_liver = world_centroid(ph.label, aff, liver)
        w_spleen = world_centroid(ph.label, aff, spleen)
        v_liver = np.argwhere(ph.label == liver).mean(axis=0)
        print(f"  {name:8s} code {orientation_code(aff)}  liver at voxel {np.round(v_liver, 1)}"
              f" -> world RAS {np.round(w_liver, 1)} mm;  spleen world x {w_spleen[0]:.1f} mm")
        summary["orientation"][name] = {"code": orientation_code(aff),
                                        "liver_voxel": [float(v) for v in v_liver],
                                        "liver_world_ras_mm": [float(v) for v in w_liver],
                                        "spleen_world_ras_mm": [float(v) for v in w_spleen]}
    ref = np.array(summary["orientation"]["LPS"]["liver_world_ras_mm"])
    spread = max(float(np.linalg.norm(np.array(v["liver_world_ras_mm"]) - ref))
                 for v in summary["orientation"].values())
    print(f"  largest distance between the three liver centres in the world: {spread:.2f} mm "
          f"(voxel size {spacing[0]} mm)")
    print("  In RAS+ the patient's right has the LARGER x: liver x > spleen x on every grid: "
          + str(all(v["liver_world_ras_mm"][0] > v["spleen_world_ras_mm"][0]
                    for v in summary["orientation"].values())))
    summary["liver_world_spread_mm"] = spread

    # ----------------------------------------------------------------------- 4. the bug
    # What goes wrong if you ignore the affine: take the label map drawn on the LPS grid and
    # lay it, index by index, on the RAS image (both arrays have the same shape, so numpy does
    # not complain). The liver mask now covers the spleen side: a left/right swap.
    print("\n== 4. Ignoring the affine ==")
    ras_img, ras_ph = loaded["RAS"]
    _, lps_ph = loaded["LPS"]
    naive = lps_ph.label  # WRONG: indices of another grid
    right = ras_ph.label  # labels of the RAS grid itself

    def dice(x: np.ndarray, y: np.ndarray) -> float:
        return float(2 * np.sum(x & y) / max(1, np.sum(x) + np.sum(y)))

    d_naive = dice(naive == liver, right == liver)
    # The correct way: resample by world coordinates. For these two axis-aligned grids that
    # is a flip of i and j (LPS -> RAS), which nibabel's orientation tools compute from the
    # affines alone.
    import nibabel as nib
    xform = nib.orientations.ornt_transform(nib.io_orientation(lps_ph.affine),
                                            nib.io_orientation(ras_ph.affine))
    fixed = nib.orientations.apply_orientation(lps_ph.label, xform)
    d_fixed = dice(fixed == liver, right == liver)
    print(f"  liver Dice, label laid on by array index : {d_naive:.3f}")
    print(f"  liver Dice, label moved by the affines   : {d_fixed:.3f}")
    summary["liver_dice_ignoring_affine"] = d_naive
    summary["liver_dice_using_affine"] = d_fixed

    from matplotlib import pyplot as plt
    k = ras_ph.image.shape[2] // 2
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    for ax, lab, title in ((axes[0], fixed, f"labels placed by the affine (Dice {d_fixed:.2f})"),
                           (axes[1], naive, f"labels placed by array index (Dice {d_naive:.2f})")):
        # Display convention: radiological view (patient's right on the screen's left, anterior up).
        # The RAS grid's i runs to the Right, so transpose (rows = j) and flip both axes.
        sl = ras_ph.image[:, :, k].T[::-1, ::-1]
        lb = lab[:, :, k].T[::-1, ::-1]
        ax.imshow(sl, cmap="gray", vmin=-200, vmax=300)
        ax.imshow(np.ma.masked_where(lb == 0, lb), cmap="tab10", alpha=0.45, vmin=0, vmax=10)
        ax.contour(lb == liver, levels=[0.5], colors="yellow", linewidths=1)
        ax.set_title(title, fontsize=9)
        ax.text(2, sl.shape[0] / 2, "R", color="w", fontsize=12)
        ax.text(sl.shape[1] - 6, sl.shape[0] / 2, "L", color="w", fontsize=12)
        ax.axis("off")
    fig.suptitle("Axial slice of the RAS-stored phantom; yellow outline = liver label")
    from medseg.io.atomic import atomic_path
    with atomic_path(out / "orientation_overlay.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    print(f"  picture: {out / 'orientation_overlay.png'}")

    # ----------------------------------------------------------------------- 5. to NIfTI
    # medseg.io.convert reads any input and writes NIfTI/NRRD/MHA with the world geometry.
    # We check it with nibabel, a reader that shares no code with medseg.
    print("\n== 5. Converting to NIfTI ==")
    nii_path = out / "ct_venous.nii.gz"
    convert(study, nii_path, series="description~venous")
    nii = nib.load(str(nii_path))
    ijk = np.array([10, 20, 5, 1.0])
    w_medseg = (affine @ ijk)[:3]
    w_nib = (nii.affine @ ijk)[:3]
    same_vox = bool(np.allclose(np.asarray(nii.dataobj), img[0].numpy(), atol=1e-3))
    print(f"  voxel (10, 20, 5): medseg RAS {np.round(w_medseg, 2)} mm, nibabel {np.round(w_nib, 2)} mm")
    print(f"  voxels identical: {same_vox};  nibabel axis codes: {''.join(nib.aff2axcodes(nii.affine))}")
    summary["nifti"] = {"path": nii_path.name, "world_difference_mm": float(np.linalg.norm(w_medseg - w_nib)),
                        "voxels_identical": same_vox}

    from medseg.io.atomic import atomic_write_text
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"\nSummary written to {out / 'summary.json'}")


if __name__ == "__main__":
    main()
