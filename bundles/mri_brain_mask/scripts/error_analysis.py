"""Where a brain mask disagrees with the MNI152 reference: error volumes (ml) by region and an
overlay PNG (agree / extra / missed) for the shipped bundle and for deepbet.

Regions are boxes in MNI world coordinates (RAS mm; the template's grid is MNI space), not
an atlas: ``superior`` z > 50, ``posterior fossa`` (cerebellum) z < -10 and y < -40,
``brainstem`` |x| < 15, -40 <= y < -5, z < -10, ``inferior`` z < -45 (medulla / cord, below the
pons), ``rest`` everything else. Each error voxel is also classed by its distance from the
reference surface: ``rim`` <= 3 mm (a boundary placed slightly differently, e.g. the
extra-axial CSF layer) or ``bulk`` > 3 mm (a structure added or lost).
Reference ventricles = voxels the reference's hole filling added (inside the brain, GM + WM
probability <= 0.5); ``ventricles missed`` counts those the prediction left out.

``--real`` instead compares the bundle with deepbet on the two REAL clinical T1s of the
pyradiomics sdist (brain1 / brain2: post-contrast, 0.78 x 0.78 x 6.5 mm, a tumour each). They
have no brain mask, so this is agreement between two tools (Dice of one mask against the other,
volumes) plus an overlay (both / bundle only / deepbet only), not accuracy.

Usage (from the repository root; looks at the MNI T1 once per call)::

    python bundles/mri_brain_mask/scripts/error_analysis.py --bundle bundles/mri_brain_mask \
        --out /tmp/work3/mri_brain_mask/analysis [--deepbet | --real]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REGIONS = ("superior", "posterior_fossa", "brainstem", "inferior", "rest")


def region_map(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Integer map (index into REGIONS) of the MNI-space boxes described in the module docstring."""
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    x, y, z = (affine[:3, :3].astype(np.float32) @ ijk + affine[:3, 3:4].astype(np.float32))
    reg = np.full(x.shape, REGIONS.index("rest"), np.uint8)
    reg[z > 50] = REGIONS.index("superior")
    reg[(z < -10) & (y < -40)] = REGIONS.index("posterior_fossa")
    reg[(np.abs(x) < 15) & (y >= -40) & (y < -5) & (z < -10)] = REGIONS.index("brainstem")
    reg[z < -45] = REGIONS.index("inferior")
    return reg.reshape(shape)


def analyse(pred: np.ndarray, ref: np.ndarray, gmwm: np.ndarray, affine: np.ndarray) -> dict:
    """Error volumes (ml) of ``pred`` vs ``ref`` (bool masks on the same 1 mm grid) by region,
    split into rim (<= 3 mm from the reference surface) and bulk; ventricle voxels missed."""
    from scipy import ndimage

    sp = np.linalg.norm(affine[:3, :3], axis=0)
    vox_ml = float(np.prod(sp)) / 1000
    d_out = ndimage.distance_transform_edt(~ref, sampling=sp)
    d_in = ndimage.distance_transform_edt(ref, sampling=sp)
    dist = np.where(ref, d_in, d_out)
    reg = region_map(affine, ref.shape)
    fp, fn = pred & ~ref, ref & ~pred
    out: dict = {"extra_ml": float(fp.sum() * vox_ml), "missed_ml": float(fn.sum() * vox_ml),
                 "pred_ml": float(pred.sum() * vox_ml), "ref_ml": float(ref.sum() * vox_ml)}
    for name, err in (("extra", fp), ("missed", fn)):
        for r, rname in enumerate(REGIONS):
            m = err & (reg == r)
            out[f"{name}_{rname}_rim_ml"] = float((m & (dist <= 3)).sum() * vox_ml)
            out[f"{name}_{rname}_bulk_ml"] = float((m & (dist > 3)).sum() * vox_ml)
        out[f"{name}_max_distance_mm"] = float(dist[err].max()) if err.any() else 0.0
    vent = ref & ~gmwm
    out["ventricles_ref_ml"] = float(vent.sum() * vox_ml)
    out["ventricles_missed_ml"] = float((vent & ~pred).sum() * vox_ml)
    # superior / inferior extent of the masks along z (world mm)
    zs = (affine @ np.c_[np.zeros((ref.shape[2], 2)), np.arange(ref.shape[2]), np.ones(ref.shape[2])].T)[2]
    for key, m in (("pred", pred), ("ref", ref)):
        ks = np.flatnonzero(m.any(axis=(0, 1)))
        out[f"{key}_z_range_mm"] = [float(zs[ks].min()), float(zs[ks].max())]
    return out


def real_agreement(model, out: Path) -> dict:
    """``model`` (a loaded bundle or run, as :func:`medseg.inference.segment` takes it) vs deepbet
    on pyradiomics brain1 / brain2 (real T1, no reference mask): agreement Dice, volumes (ml),
    overlay ``out/real_t1_<case>.png``; returns the numbers."""
    import torch
    from deepbet_peer import deepbet_mask
    from monai.data import MetaTensor

    from medseg.data import sample
    from medseg.inference import segment
    from medseg.io import load
    from medseg.io.overlay import save_overlay_montage
    from medseg.metrics import dice

    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for case in ("brain1", "brain2"):
        t1 = load(sample(f"{case}_image"))
        vox_ml = float(np.prod([float(v) for v in t1.meta["spacing"][:3]])) / 1000
        ours = segment(t1, model, device="cpu", progress=False)[0].numpy() > 0
        theirs = deepbet_mask(t1)
        report[case] = {"agreement_dice": float(dice(ours, theirs)), "bundle_ml": float(ours.sum() * vox_ml),
                        "deepbet_ml": float(theirs.sum() * vox_ml),
                        "bundle_only_ml": float((ours & ~theirs).sum() * vox_ml),
                        "deepbet_only_ml": float((theirs & ~ours).sum() * vox_ml)}
        lab = np.zeros(ours.shape, np.uint8)
        lab[ours & theirs], lab[ours & ~theirs], lab[theirs & ~ours] = 1, 2, 3
        save_overlay_montage(t1, MetaTensor(torch.from_numpy(lab)[None], affine=t1.affine),
                             out / f"real_t1_{case}.png", n_slices=6, views=("axial",),
                             title=f"pyradiomics {case} (real T1, no reference): bundle vs deepbet",
                             label_names={1: "both", 2: "bundle only", 3: "deepbet only"})
        print(case, report[case], flush=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/mri_brain_mask"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deepbet", action="store_true", help="also analyse deepbet's mask")
    ap.add_argument("--real", action="store_true",
                    help="only compare with deepbet on the real pyradiomics T1s (no MNI analysis)")
    args = ap.parse_args()
    if args.real:
        from medseg.bundle import load_bundle
        from medseg.io.atomic import atomic_write_text

        report = real_agreement(load_bundle(args.bundle), args.out)
        atomic_write_text(args.out / "real_t1_agreement.json", json.dumps(report, indent=2) + "\n")
        return
    import torch
    from deepbet_peer import deepbet_mask
    from monai.data import MetaTensor
    from train import mni_reference

    from medseg.bundle import load_bundle
    from medseg.data import sample
    from medseg.inference import segment
    from medseg.io import load
    from medseg.io.atomic import atomic_write_text
    from medseg.io.overlay import save_overlay_montage
    from medseg.metrics import dice

    args.out.mkdir(parents=True, exist_ok=True)
    t1, ref = mni_reference()
    aff = np.asarray(t1.affine, dtype=np.float64)
    gm = load(sample("mni_gm"))[0].numpy().astype(np.float64)
    wm = load(sample("mni_wm"))[0].numpy().astype(np.float64)
    scale = 255.0 if max(gm.max(), wm.max()) > 1.5 else 1.0
    gmwm = (gm + wm) / scale > 0.5
    preds = {"bundle": segment(t1, load_bundle(args.bundle), device="cpu", progress=False)[0].numpy() > 0}
    if args.deepbet:
        preds["deepbet"] = deepbet_mask(t1)
    report = {}
    for key, pred in preds.items():
        res = {"dice": float(dice(pred, ref)), **analyse(pred, ref, gmwm, aff)}
        report[key] = res
        lab = np.zeros(ref.shape, np.uint8)
        lab[pred & ref], lab[pred & ~ref], lab[ref & ~pred] = 1, 2, 3
        save_overlay_montage(t1, MetaTensor(torch.from_numpy(lab)[None], affine=t1.affine),
                             args.out / f"mni_errors_{key}.png", n_slices=4, title=f"{key} vs reference",
                             label_names={1: "agree", 2: "extra", 3: "missed"})
    atomic_write_text(args.out / "mni_errors.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
