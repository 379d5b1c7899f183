"""Train and ship ``ct_lung_lesion``: lung nodules / masses on chest CT (3D), trained on phantoms.

Training data: medseg chest CT phantoms with 1-3 nodules (``medseg.data.phantoms.lung_ct``, the
generator behind ``write_decathlon_dataset(task="lung")``), TRAIN_PLAN's seeds on nine grids
(six axis orders incl. permuted ones, +15 / -25 degree oblique about S-I, +20 degree oblique about R-L),
plus the REAL pyradiomics chest CT ``lung2`` (oversampled: two entries). Evaluated on held-out
phantoms (seeds 9001-9004) and on both real CTs: ``lung1`` is never used in training, ``lung2``
is a TRAINING case (its row says so).

Resolution: 1.5 mm isotropic. The upper bound of the pipeline (the TRUE label resampled to the
network grid and back with the same transforms, :func:`pipeline_upper_bound`) is a mean Dice of
0.897 at 2 mm on the held-out phantoms -- below the 0.9 target before any network error -- and
1.000 at 1.5 mm (the phantoms' in-plane spacing), so the grid is 1.5 mm.

Usage (from the repository root)::

    python bundles/ct_lung_lesion/scripts/train.py --out bundles/ct_lung_lesion \
        [--work DIR] [--max-minutes M] [--resume] [--ship-only]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402
import numpy as np  # noqa: E402

NAME = "ct_lung_lesion"
LABELS = {1: "lung_nodule"}
NETWORK = {"arch": "unet", "spatial_dims": 3, "channels": [16, 32, 64, 128], "strides": [2, 2, 2],
           "num_res_units": 1}
SPACING_MM = 1.5


def _rot(axis: int, deg: float) -> list[list[float]]:
    """Columns = RAS directions of i, j, k: the identity rotated by ``deg`` degrees about RAS ``axis``."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    m = np.eye(3)
    a, b = [k for k in range(3) if k != axis]
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m.tolist()


# nine grids; the held-out ones (RAS, LPS, PIL, bt.OBLIQUE) and the test's ASR use other seeds
GRIDS = ["LPS", "RAS", "LAS", "RPI", "ASL", "SLP", bt.OBLIQUE, _rot(2, -25.0), _rot(0, 20.0)]
TRAIN_PLAN = [(s, GRIDS[s % len(GRIDS)]) for s in range(1, 65)]
TEST_PLAN = [(9001, "RAS"), (9002, "LPS"), (9003, "PIL"), (9004, bt.OBLIQUE)]
POSTPROCESS = {"min_component_mm3": 30.0}
REAL_TRAIN = "lung2"  # the real case used in training (the other, lung1, stays held out)
REAL_COPIES = 2


def _seed_text() -> str:
    seeds = [s for s, _ in TRAIN_PLAN]
    return f"seeds {min(seeds)}-{max(seeds)}"


def training_cases():
    """Phantoms of TRAIN_PLAN, then REAL_COPIES entries of the real ``lung2`` CT (HU, RAS affine)."""
    from medseg.data import sample
    from medseg.io import load

    yield from bt.iter_phantoms("lung_ct", TRAIN_PLAN)
    img = load(sample(f"{REAL_TRAIN}_image"))
    lab = (load(sample(f"{REAL_TRAIN}_label"), kind="label")[0].numpy() > 0).astype(np.uint8)
    aff = np.asarray(img.affine, dtype=np.float64)
    for k in range(REAL_COPIES):
        yield (f"real_{REAL_TRAIN}_copy{k}", img[0].numpy().astype(np.float32), lab, aff)


def _oracle_network():
    """A 'network' that returns the true label as logits: fed ``label * 1000 - 1000`` HU, which
    the ct_lung window (-1000..400 HU -> 0..1) maps to 0 / 0.714, it outputs the class-1 logit
    ``x - 0.357`` (half-way), i.e. the linearly resampled true label thresholded at 0.5."""
    import torch

    class Oracle(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(x), x - 0.357], 1)

    return Oracle()


def pipeline_upper_bound(model, cases, spacings=(2.0, SPACING_MM)) -> dict[str, float]:
    """Mean Dice of the TRUE label pushed through the model's resample -> network grid -> nearest
    back path (:func:`medseg.inference.segment` with an oracle network), per spacing in mm."""
    from medseg.metrics import dice

    out = {}
    for sp in spacings:
        om = dataclasses.replace(model, network=_oracle_network(), postprocess={},
                                 preset_overrides={**model.preset_overrides, "target_spacing": [sp] * 3})
        ds = [dice(bt.segment_array(om, (lab > 0).astype(np.float32) * 1000 - 1000, aff) > 0, lab > 0)
              for _, _, lab, aff in cases]
        out[f"{sp:g} mm"] = float(np.mean(ds))
        print(f"upper bound at {sp:g} mm: {out[f'{sp:g} mm']:.4f}", flush=True)
    return out


def per_nodule(model, cases) -> list[dict[str, float]]:
    """Dice of each true nodule (26-connected component; prediction inside it dilated by 3 voxels)
    and the count of predicted components touching no nodule, per held-out phantom."""
    from scipy import ndimage

    from medseg.metrics import dice

    rows = []
    st = ndimage.generate_binary_structure(3, 3)
    for cid, img, lab, aff in cases:
        pred = bt.segment_array(model, img, aff) > 0
        ref = lab > 0
        cc, n = ndimage.label(ref, structure=st)
        pc, pn = ndimage.label(pred, structure=st)
        fp = sum(1 for j in range(1, pn + 1) if not ref[pc == j].any())
        for i in range(1, n + 1):
            m = cc == i
            near = ndimage.binary_dilation(m, iterations=3)
            rows.append({"case": cid, "n_voxels": int(m.sum()), "dice": float(dice(pred & near, m)),
                         "fp_components_in_case": fp})
    return rows


def eval_real(model) -> dict[str, dict[str, float]]:
    """Dice / HD95 / lesion detection on pyradiomics lung1 (held out) and lung2 (TRAINING case)."""
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
        tag = "TRAINING case" if case == REAL_TRAIN else "held out"
        out[f"real {case} (pyradiomics, {tag})"] = {
            "lung_nodule": float(dice(pred, ref)), "hd95_mm": float(hd95(pred, ref, sp)),
            "pred_ml": float(pred.sum() * np.prod(sp) / 1000), "ref_ml": float(ref.sum() * np.prod(sp) / 1000),
            **{k: float(v) for k, v in les.items() if isinstance(v, (int, float))}}
        print(case, out[f"real {case} (pyradiomics, {tag})"], flush=True)
    return out


def main() -> None:
    args = bt.common_args(__doc__.splitlines()[0]).parse_args()
    work = bt.work_dir(args.work, NAME)
    ds = bt.write_msd(work / "dataset", training_cases(), LABELS, "CT")
    if not args.ship_only:
        from medseg.training import load_dataset, split_cases

        _, val = split_cases(load_dataset(ds), val_fraction=0.1, seed=0)
        if any(c["id"].startswith("real_") for c in val):
            raise SystemExit("the real training case fell into the validation split; change the seed")
    run = bt.train_run(ds, work / "run", "ct_lung", NETWORK, epochs=60, patch_size=(48, 48, 48),
                       preset_overrides={"target_spacing": [SPACING_MM] * 3},
                       batch_size=2, num_samples=4, pos=3.0, neg=1.0, lr=3e-3, warmup_epochs=2,
                       val_fraction=0.1, val_every=5, seed=0, max_minutes=args.max_minutes,
                       resume=args.resume, ship_only=args.ship_only, overlap=0.25, sw_batch_size=4)
    bt.patch_model_spec(run, name=NAME, postprocess=POSTPROCESS)
    bt.slim_checkpoint(run)
    model = bt.load_run_model(run)
    held_out = bt.phantom_cases("lung_ct", TEST_PLAN)
    bound = pipeline_upper_bound(model, held_out)
    res = bt.eval_cases(model, held_out, LABELS)
    res_all = {**res, "mean (phantoms)": bt.mean_row(res)}
    nodules = per_nodule(model, held_out)
    real = eval_real(model)
    rows = {**res_all, **{k: {"lung_nodule": v["lung_nodule"], "hd95_mm": v["hd95_mm"],
                              "pred_ml": v["pred_ml"], "ref_ml": v["ref_ml"]} for k, v in real.items()}}
    nod_table = "| case | nodule voxels | Dice |\n|---|---|---|\n" + "".join(
        f"| {r['case']} | {r['n_voxels']} | {r['dice']:.4f} |\n" for r in nodules)
    fps = {r["case"]: r["fp_components_in_case"] for r in nodules}
    bound_txt = ", ".join(f"{k}: {v:.4f}" for k, v in bound.items())
    real_txt = "; ".join(f"{k}: {int(v.get('n_pred_lesions', 0))} predicted components, "
                         f"{int(v.get('lesion_false_positives', 0))} false positive(s), lesion sensitivity "
                         f"{v.get('lesion_sensitivity', float('nan')):.2f}" for k, v in real.items())
    readme = f"""# ct_lung_lesion

3D segmentation of lung nodules and masses (label 1) on chest CT (HU). 3D U-Net (channels
16-32-64-128), preset `ct_lung` with {SPACING_MM} mm isotropic resampling (RAS, window -1000..400 HU),
sliding window 48^3, components smaller than 30 mm^3 removed.

## What the weights are (and are not) fit for
**Trained on synthetic phantoms** (`medseg.data.phantoms.lung_ct`: round soft-tissue nodules
of about 2.4-8.5 mm radius inside analytic lungs, {_seed_text()} on nine grids incl. permuted and
oblique ones) **plus ONE real chest CT** (pyradiomics `lung2`, {REAL_COPIES} entries of
{len(TRAIN_PLAN) + REAL_COPIES}). They are **NOT fit for patients**: real lesions are spiculated,
attached to the pleura or vessels, part-solid, and real lungs are full of vessels that look like small nodules to a phantom-trained model. One real
training case does not change that; the real-CT rows below show what it means in numbers.

## Measured
Held-out phantoms (seeds never used in training) and the two REAL chest CTs with a lesion label
from pyradiomics (`lung1`, `lung2`; 5 mm slices). **`lung1` was never used in training; `lung2`
IS a training case**, so its row is not a held-out result. Dice and HD95 (mm) from
`medseg.metrics` on the source grid after `medseg.inference.segment`; volumes in ml:

{bt.fmt_table(rows, ["lung_nodule", "hd95_mm", "pred_ml", "ref_ml"])}
(`lung_nodule` = Dice. HD95 is NaN/inf when one side is empty.) Real cases, lesion level
(`medseg.metrics.lesion_metrics`, also in `docs/heldout_metrics.json`): {real_txt}.

Per nodule on the held-out phantoms (prediction within 3 voxels of the nodule; predicted
components touching no nodule per case: {fps}):

{nod_table}
Upper bound of the resampling path (the TRUE label resampled to the network grid and back to
the source grid with the same transforms, mean Dice on the same held-out phantoms): {bound_txt}.
The earlier 2 mm grid could not reach 0.9 even with a perfect network; hence {SPACING_MM} mm.

Further unseen phantoms (`python bundles/more_heldout.py ct_lung_lesion`, issue #5). The
previous weights (v0.2.0, seeds 1-40) scored 0.926 on the four phantoms above but 0.881 on 14
further ones (seeds 7001-7006 in RAS / LPS, 7001-7002 in ASR) and 0.731 on 9 more on the
training grids (seeds 5001-5009): the smallest nodules (17-64 voxels) were missed or split, while
medium ones were over-segmented (predicted / true volume 1.08). A raised nodule threshold did not
help (`scripts/calibrate.py`: 0.682-0.695 against 0.731 on those 9), so it was not shipped. These
weights (v0.3.0) are trained on seeds 1-64 with nothing else changed; the rule for shipping them
was written before training: at least the old weights' mean Dice on a FRESH set never looked at
(seeds 7201-7210 in RAS / LPS, 20 cases) and the test phantom (seed 7001, ASR) at 0.63 or more.
Fresh set: 0.839 (old 0.822); seed 7201-7206 and 7210 all 0.93-0.96, but seed 7207's single
small nodule is missed by both weights (Dice 0) and 7208 / 7209 are 0.81-0.93. The 14 further
phantoms: 0.908 (old 0.881), lowest 0.806 (seed 7001 ASR; old 0.688). So the 0.9 target holds on
the four held-out phantoms and on the 14, not on the fresh 20 because of one missed nodule;
`tests/test_ct_lung_lesion_nodules.py` checks that the nodules found lie at their world (RAS)
positions. On a second fresh set (seeds 7301-7310 in RAS / LPS, 20 cases) these weights score
0.880 (lowest 0.417: seed 7309's nodules are under-segmented).

Tried and NOT shipped (rule fixed before training: at least these weights' 0.880 on seeds
7301-7310, held-out mean >= 0.9): the same training with lesion-balanced patch sampling
(`medseg train --balance-lesions`: a foreground centre per connected component, so small
nodules beside a mass are centres as often). It scored 0.794 on 7301-7310 and 0.886 on the four
held-out phantoms: more false-positive volume (predicted / true 1.17, these weights 0.99), and
seed 7309 was no better (Dice 0 / 0.40 in RAS / LPS; these weights 0.42 / 0.73).

Reproduce (CPU, seeded; `--max-minutes` / `--resume` split it into parts):
```
python bundles/ct_lung_lesion/scripts/train.py --out bundles/ct_lung_lesion --work /tmp/lung
```

## Recipe for real data
LIDC-IDRI (nodule contours from 4 readers: use the 50 % consensus), MSD Task06 Lung (non-small
cell lung cancer masses) or NSCLC-Radiomics: convert to MSD layout with one label (1 = lesion),
`medseg train DATASET --preset ct_lung --network '{{"arch": "unet", "channels": [16, 32, 64, 128,
256]}}' --patch-size 96 96 64 --pos 3 --epochs 500` on a GPU; report Dice and lesion-level
sensitivity / false positives per scan on held-out patients.

## Data
Training: synthetic, generated by medseg, and pyradiomics 3.0.1 sample `lung2_image/label.nrrd`.
Evaluation: held-out phantoms; pyradiomics `lung1_image/label.nrrd` (held out) and `lung2` (trained
on). pyradiomics data BSD-3, see docs/data_license.txt.
"""
    metrics_file = work / "heldout_metrics.json"
    metrics_file.write_text(json.dumps({**res_all, **real, "per_nodule (phantoms)": nodules,
                                        "upper_bound_true_label": bound}, indent=2, default=float) + "\n")
    bt.ship(run, args.out, name=NAME,
            description="3D U-Net for lung nodules / masses on chest CT, trained on medseg phantoms plus one "
                        "real pyradiomics CT (NOT fit for patients); evaluated on held-out phantoms and two "
                        "real pyradiomics CTs (lung1 held out, lung2 a training case).",
            data_source="synthetic chest CT phantoms with nodules generated by medseg.data.phantoms.lung_ct "
                        f"({_seed_text()}, nine grids: LPS/RAS/LAS/RPI/ASL/SLP and three oblique) and the real "
                        "pyradiomics 3.0.1 sample CT lung2 (image + lesion label)",
            license_text="Training data: synthetic, generated by medseg (medseg.data.phantoms); no patient "
                         "data, no licence restrictions. Also trained on pyradiomics 3.0.1 sample data lung2 "
                         "(image and label NRRD); evaluated on lung1 (not used for training) and lung2: BSD "
                         "3-Clause License, Copyright (c) 2017 Harvard Medical School / Dana-Farber Cancer "
                         "Institute (pyradiomics authors).",
            readme_head=readme, extra_docs={"heldout_metrics.json": metrics_file},
            task_description="CT lung nodule / mass segmentation (3D)")
    print(json.dumps(rows, indent=2))
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
