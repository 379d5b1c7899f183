"""Train ``ct_spine`` from REAL vertebra anatomy with domain randomisation, judge it on real CT.

Change against the phantom-only release (written down before training, see docs/PLAN_synth.md):
the training images are drawn by :func:`medseg.data.synth.synthesize` from tissue maps built by
:mod:`medseg.data.spine_synth`: TotalSegmentator's vertebrae S1-T11 of its test CT ``ts_ct`` and
the 42-class map of its upper 30 slices (``ts_ct_sm``; LABEL MAPS ONLY, the CT image is never
read for training), in a torso drawn per seed (sacrum and coccyx, hip bones, femurs, thoracic
vertebrae with ribs, lungs, muscles, bowel: bone that must NOT be named gets CT bone intensities
too), cut to random superior-inferior fields of view (whole, upper with ribs, lower with the pelvis,
only L3-L5 above the sacrum, middle), scaled, mirrored left-right (no label has a side) and stored in
random axis orders. Plus medseg's spine phantoms. Network input at 3 mm isotropic.

Judged on REAL CT against TotalSegmentator's segmentations (``bundles/real_images.py``'s
``spine``): patient A (``ts_ct``: image never trained on, its vertebra label map WAS the synthesis
source: "image unseen, anatomy seen") and patient B (``ts_ct2`` cropped: image and anatomy unseen,
vertebra T12 only), side by side with the phantom-only weights (ablation).

Usage (from the repository root)::

    nice -n -5 python bundles/ct_spine/scripts/train_synth.py --work /tmp/spine --out bundles/ct_spine --max-minutes 70
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402
import real_images  # noqa: E402

NAME = "ct_spine"
LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5")
LABELS = {i + 1: f"vertebra_{lv}" for i, lv in enumerate(LEVELS)}
NETWORK = {"arch": "unet", "spatial_dims": 3, "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2],
           "num_res_units": 1}
SPACING_MM = [3.0, 3.0, 3.0]
PATCH = (64, 64, 80)  # 192 x 192 x 240 mm: five to seven levels and a landmark in one window
N_SYNTH = 120
ORIENTATIONS = ("LPS", "RAS", "PIR", "ASR", "LAS", "RPI", "SLP", "IRA")
PHANTOM_PLAN = [(s, ORIENTATIONS[s % len(ORIENTATIONS)]) for s in range(201, 225)]
TEST_PLAN = [(9001, "RAS"), (9002, "LPS"), (9003, "PIL"), (9004, bt.OBLIQUE)]
EPOCHS = 40
THREADS = 2
# vertebrae -> instances (opening 3 mm = 1 voxel of the network grid, fragments under 1.5 mL
# dropped) -> consecutive levels along world superior, offset by the network's votes
POSTPROCESS = {"vertebra_levels": {"levels": list(LABELS), "opening_mm": 3.0, "min_size_mm3": 1500.0}}
PER_LEVEL = [f"{lv} Dice" for lv in LEVELS]
FP_MM = "vertebra called > 10 mm from any vertebra (mL)"
FP_S1 = "vertebra called on the sacrum S1 (mL)"


#: bone means in HU for this recipe (run 2, docs/PLAN_synth.md): cancellous bone 60-400 HU (published
#: vertebral trabecular attenuation: below ~110 HU osteoporotic, above ~160 HU normal, up to ~350 in
#: the young), cortical shells 200-700 HU (the shell is one or two voxels of the 3 mm grid: about 1 mm of
#: cortex at 1000-1900 HU averaged with cancellous bone). The
#: first run drew whole bones at 180-800 HU and shells at 450-1300 HU: brighter than real vertebrae.
BONE_HU = (("cortex", (200.0, 700.0)),
           ("vertebra|sacrum|hip|femur|rib|sternum|scapula|clavicula|humerus|bone|skull", (60.0, 400.0)))


def synth_config():
    from medseg.data.synth import SynthConfig

    # stronger smooth deformations than the organ model's default (shape variety from one anatomy)
    return SynthConfig(deform_probability=0.8, deform_voxels=4.0, ct_ranges=BONE_HU)


def synth_cases():
    from medseg.data.spine_synth import spine_case
    from medseg.data.synth import synthesize

    cfg = synth_config()
    for i in range(N_SYNTH):
        tissue, names, affine, target, kind = spine_case(i)
        img, lab = synthesize(tissue, names, seed=10_000 + i, target=target, config=cfg)
        yield f"synth_{i:03d}_{kind}", img, lab, affine
    yield from bt.iter_phantoms("spine_ct", PHANTOM_PLAN)


#: run 2's validation cases (its random 10 % split, seed 0): run 3 chooses its checkpoint on exactly these
RUN2_VAL_IDS = ["spine_ct_s0224_LPS", "synth_005_whole", "synth_008_whole", "synth_022_upper", "synth_023_upper",
                "synth_025_lower", "synth_028_upper", "synth_034_whole", "synth_043_upper", "synth_059_lower",
                "synth_071_lower", "synth_072_l3_l5_sacrum", "synth_090_l3_l5_sacrum", "synth_108_whole"]


def patient_a_cases(n: int):
    """Run 3 (docs/PLAN_synth.md): ``n`` copies of patient A's REAL image (``ts_ct``) with its
    TotalSegmentator levels T12-L5 as labels 1-6 and everything else 0 (T11 with its ribs, S1, the
    hips and femoral heads), each cut to a random superior-inferior field of view of the synthetic
    cases' kinds, mirrored left-right half of the time (no label has a side; the affine is kept, so
    the image is a real mirror image) and stored in a random axis order 60 % of the time."""
    import nibabel as nib

    from medseg.data import sample
    from medseg.data.spine_synth import FOV_KINDS, _reorient
    from medseg.data.totalseg import TOTAL_V2, remap

    img_nii = nib.as_closest_canonical(nib.load(str(sample("ts_ct"))))  # RAS: voxel axis 2 runs superior
    seg_nii = nib.as_closest_canonical(nib.load(str(sample("ts_ct_vertebrae"))))
    image, affine = np.asarray(img_nii.dataobj, dtype=np.float32), img_nii.affine
    seg = np.asarray(seg_nii.dataobj)
    label = remap(seg, TOTAL_V2, real_images.SPINE_TS).astype(np.uint8)
    zc = {lv: float(np.argwhere(label == v)[:, 2].mean()) for v, lv in real_images.SPINE_NAMES.items()}
    zc["S1"] = float(np.argwhere(seg == real_images.TOTAL_S1)[:, 2].mean())
    nz = image.shape[2]
    gap = lambda a, b: (zc[a] + zc[b]) / 2  # noqa: E731  (a disc between two levels)
    for i in range(n):
        rng = np.random.default_rng(50_000 + i)
        kind = FOV_KINDS[i % len(FOV_KINDS)]
        if kind == "whole":
            lo, hi = 0.0, float(nz)
        elif kind == "upper":
            lo, hi = rng.uniform(gap("L4", "L3"), gap("L1", "T12")), float(nz)
        elif kind == "lower":
            lo, hi = 0.0, rng.uniform(gap("L2", "L1"), min(zc["T12"] + 3, nz))
        elif kind == "l3_l5_sacrum":
            lo, hi = 0.0, rng.uniform(gap("L3", "L2"), zc["L2"] - 1)
        else:  # middle
            lo, hi = rng.uniform(zc["S1"] - 2, gap("L4", "L3")), rng.uniform(gap("L1", "T12"), nz)
        lo, hi = int(max(0, lo)), int(min(nz, max(hi, lo + 20)))
        img, lab = image[:, :, lo:hi], label[:, :, lo:hi]
        aff = affine.copy()
        aff[:3, 3] = affine[:3, :3] @ np.array([0, 0, lo]) + affine[:3, 3]
        if rng.random() < 0.5:
            img, lab = np.ascontiguousarray(img[::-1]), np.ascontiguousarray(lab[::-1])
        if rng.random() < 0.6:
            perm = [int(v) for v in rng.permutation(3)]
            flips = [bool(f) for f in rng.random(3) < 0.5]
            (img, aff2), (lab, _) = _reorient(img, aff, perm, flips), _reorient(lab, aff, perm, flips)
            aff = aff2
        yield f"real_a_{i:02d}_{kind}", img, lab, aff


def train_with_real_a(args, n_real: int):
    """Run 3: run 2's material plus ``n_real`` copies of patient A, checkpoint chosen on run 2's
    validation cases (a split file); returns ``(work, run, model)`` like ``bt.train_synth``."""
    import itertools

    work = bt.work_dir(args.work, NAME + "_synth")
    ds = bt.write_msd(work / "dataset", itertools.chain(synth_cases(), patient_a_cases(n_real)), LABELS, "CT")
    split = bt.write_split_csv(ds, RUN2_VAL_IDS)
    run = bt.train_run(split, work / "run", "ct_spine", NETWORK, labels=dict(LABELS), epochs=args.epochs,
                       patch_size=PATCH, preset_overrides={"target_spacing": SPACING_MM},
                       batch_size=2, num_samples=2, lr=3e-3, val_every=2, seed=0, warmup_epochs=1,
                       max_minutes=args.max_minutes, resume=args.resume, ship_only=args.ship_only, overlap=0.25,
                       sw_batch_size=2, augmentation=bt.no_flip_augmentation(), init_weights=args.init_weights)
    bt.patch_model_spec(run, name=NAME, postprocess=POSTPROCESS)
    bt.slim_checkpoint(run)
    return work, run, bt.load_run_model(run)


def shipping_rule(new: dict, old: dict) -> tuple[bool, str]:
    """The rule of docs/PLAN_synth.md (written before training): on patient A the mean per-level
    Dice above the phantom-only weights' and less volume called vertebra > 10 mm from any vertebra;
    on patient B a T12 Dice not lower than the phantom-only weights' and (run 2) no more volume
    called another level."""
    a_new, a_old = new["ts_ct (patient A)"], old["ts_ct (patient A)"]
    b_new, b_old = new["ts_ct2 cropped (patient B)"], old["ts_ct2 cropped (patient B)"]
    m_new, m_old = (float(np.mean([r[c] for c in PER_LEVEL])) for r in (a_new, a_old))
    other = "levels other than T12 called (mL)"  # run 2's addition: B's wrongly named volume not larger
    ok = (m_new > m_old and a_new[FP_MM] < a_old[FP_MM] and b_new["T12 Dice"] >= b_old["T12 Dice"]
          and b_new[other] <= b_old[other])
    why = (f"patient A mean per-level Dice {m_new:.3f} vs {m_old:.3f}, volume > 10 mm from any vertebra "
           f"{a_new[FP_MM]:.1f} vs {a_old[FP_MM]:.1f} mL; patient B T12 Dice {b_new['T12 Dice']:.3f} vs "
           f"{b_old['T12 Dice']:.3f}, other levels called {b_new[other]:.1f} vs {b_old[other]:.1f} mL")
    return ok, why


def targets(new: dict) -> str:
    """The issue's targets, met or not, on each real case."""
    a, b = new["ts_ct (patient A)"], new["ts_ct2 cropped (patient B)"]
    per = ", ".join(f"{c.split()[0]} {a[c]:.3f}" for c in PER_LEVEL)
    lvl = "met" if min(a[c] for c in PER_LEVEL) >= 0.80 else "NOT met"
    bone = "met" if a[FP_MM] < 1.0 and a[FP_S1] < 1.0 else "NOT met"
    t12 = "met" if b["T12 Dice"] >= 0.80 else "NOT met"
    return (f"per level >= 0.80 on patient A (image unseen, anatomy seen): {lvl} ({per}); sacrum and hips "
            f"never named (under 1 mL each): {bone} ({a[FP_S1]:.1f} mL on S1, {a[FP_MM]:.1f} mL more than "
            f"10 mm from any vertebra); patient B (unseen) T12 >= 0.80: {t12} ({b['T12 Dice']:.3f})")


def main() -> None:
    import torch

    parser = bt.synth_args(__doc__, NAME, EPOCHS)
    parser.add_argument("--threads", type=int, default=THREADS, help="torch CPU threads")
    parser.add_argument("--real-a", type=int, default=0, metavar="N",
                        help="run 3: add N copies of patient A's REAL image (then A is a training case) and "
                             "choose the checkpoint on run 2's validation cases")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.real_a:
        work, run, model = train_with_real_a(args, args.real_a)
        print(f"run 3 trained: {run}; judge it with choose_postprocess.py {run} and its rule "
              "(docs/PLAN_synth.md, run 3); nothing shipped by this script", flush=True)
        return
    work, run, model = bt.train_synth(args, NAME, synth_cases(), LABELS, "ct_spine", NETWORK, patch=PATCH,
                                      spacing=SPACING_MM, val_fraction=0.1, postprocess=POSTPROCESS)
    from medseg.bundle import load_bundle

    result = {"domain-randomised (this script)": real_images.spine(model),
              "phantom-only (previous release)": real_images.spine(load_bundle(args.ablation))}
    new, old = result["domain-randomised (this script)"], result["phantom-only (previous release)"]
    ship_ok, why = shipping_rule(new, old)
    phantoms = bt.eval_cases(model, bt.phantom_cases("spine_ct", TEST_PLAN), LABELS, only_present=True,
                             merged="all_levels_merged")
    phantoms["mean"] = bt.mean_row(phantoms)
    out = work / "real_ct_metrics.json"
    out.write_text(json.dumps({"real_ct": result, "shipping_rule_met": ship_ok, "rule": why,
                               "heldout_phantoms": phantoms}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"shipping rule {'MET' if ship_ok else 'NOT met'}: {why}\n{targets(new)}")
    if not ship_ok or args.out is None:
        print(f"not shipped; run: {run}\nmetrics: {out}")
        return
    rows_a = {k: v["ts_ct (patient A)"] for k, v in (("domain-randomised", new), ("phantom-only 0.3", old))}
    rows_b = {k: v["ts_ct2 cropped (patient B)"] for k, v in (("domain-randomised", new), ("phantom-only 0.3", old))}
    cols_a = PER_LEVEL + ["merged T12-L5 Dice"] + [f"{lv} HD95 mm" for lv in LEVELS] + [FP_MM, FP_S1]
    cols_b = ["T12 Dice", "T12 HD95 mm", "any vertebra label on the T12 mask (fraction)",
              "levels other than T12 called (mL)"]
    readme = README.format(
        table_a=bt.fmt_table(rows_a, cols_a), table_b=bt.fmt_table(rows_b, cols_b),
        targets=targets(new), rule=why, phantoms=bt.fmt_table(phantoms, [*LABELS.values(), "all_levels_merged"]),
        n=N_SYNTH, channels="-".join(map(str, NETWORK["channels"])), patch="x".join(map(str, PATCH)),
        opening=POSTPROCESS["vertebra_levels"]["opening_mm"], n_ph=len(PHANTOM_PLAN))
    a = new["ts_ct (patient A)"]
    docs = {"real_ct_metrics.json": out}
    plan = Path(args.out) / "docs" / "PLAN_synth.md"  # the plan and rule, written before training: kept
    if plan.is_file():
        keep = work / "PLAN_synth.md"
        keep.write_bytes(plan.read_bytes())
        docs["PLAN_synth.md"] = keep
    bt.ship(run, args.out, name=NAME,
            description="Small 3D U-Net for vertebrae T12-L5 labelled by level on CT, trained on "
                        "domain-randomised images drawn from a real vertebra label map (research use; "
                        "NOT fit for clinical use).",
            data_source="medseg.data.synth images drawn from TotalSegmentator's label maps of its test CT "
                        "(ts_ct vertebrae, ts_ct_sm) in a torso drawn by medseg.data.spine_synth, plus medseg "
                        "spine phantoms",
            license_text="Training images are synthetic, drawn from label maps in TotalSegmentator 2.18.0's "
                         "test files (Apache-2.0) and from medseg phantoms; no image of a patient was trained on.",
            readme_head=readme, extra_docs=docs,
            task_description="CT vertebra segmentation with level labels T12-L5 (3D)",
            changelog="weights trained on domain-randomised images from a real vertebra label map (real CT "
                      f"patient A per level {min(a[c] for c in PER_LEVEL):.3f}-{max(a[c] for c in PER_LEVEL):.3f}, "
                      f"patient B T12 {new['ts_ct2 cropped (patient B)']['T12 Dice']:.3f}; phantom-only 0.3: "
                      f"merged {old['ts_ct (patient A)']['merged T12-L5 Dice']:.3f})")
    print(f"bundle written to {args.out}")


README = """# ct_spine

3D segmentation of lumbar vertebrae on CT (HU) with the level as the label: 1 = T12, 2 = L1,
3 = L2, 4 = L3, 5 = L4, 6 = L5. 3D U-Net (channels {channels}), preset `ct_spine` at 3 mm
isotropic (RAS, window -200..1200 HU), sliding window {patch} voxels, then the `vertebra_levels`
postprocess (instances by an opening of {opening} mm, ordered along the patient's superior axis in
world coordinates, named consecutively by the network's majority vote).

## What the weights are (and are not) fit for
**For research.** Trained on {n} images drawn by `medseg.data.synth` (domain randomisation: a
random CT-like or fully random intensity per structure, a brighter cortical shell on every bone,
texture, bias field, blur, thick slices, noise, strong smooth deformations) from tissue maps of
`medseg.data.spine_synth`: the REAL vertebrae S1-T11 of TotalSegmentator's test CT `example_ct`
(its label map only; the image was never trained on) and the 42-class map of its upper 30 slices,
in a torso drawn per seed: the rest of the sacrum, the hip bones, femoral heads and shafts,
thoracic vertebrae T11-T6 with their ribs (copies of T12), lungs, muscles, bladder, bowel. Bone that
must not be named (sacrum, hips, femurs, ribs, thoracic vertebrae) has CT bone intensities like
the vertebrae and label 0. Fields of view cut at random (whole; upper with the ribs; lower with the
pelvis; only L3-L5 above the sacrum; middle without a landmark), voxel size scaled 0.85-1.15,
mirrored left-right (no label here has a side), stored in random axis orders (the affine keeps the
world). Plus {n_ph} medseg spine phantoms. Only ONE real spine anatomy went in: the figures below
say how the network reads real CT, and patient B is the only unseen anatomy. Not fit for clinical use.

## Measured on REAL CT
`python bundles/real_images.py ct_spine` (writes `benchmarks/results/real_images.json`).
References: TotalSegmentator's own segmentations (a model's output). Ablation: the previous
phantom-only weights (0.3) on the same cases.

**Patient A**, TotalSegmentator `example_ct` (abdomen-pelvis, 3 mm, all 112 slices): image
unseen, anatomy seen (its vertebra label map was the synthesis source). Dice and HD95 per level;
volume called vertebra more than 10 mm from any TotalSegmentator vertebra S1-T11 (hips, femoral
heads) and on S1 (the sacrum):

{table_a}
**Patient B**, TotalSegmentator's second test CT (`aorta_report`, cropped chest-abdomen, 1.5 mm):
image and anatomy never trained on; reference vertebra T12 only (the thoracic vertebrae above it
are unlabelled, so any other level called there is a wrong name):

{table_b}
Targets of issue 15: {targets}.
Shipping rule (written before training, `docs/PLAN_synth.md`): on patient A the mean per-level Dice
above the phantom-only weights' and less volume called vertebra > 10 mm from any vertebra; on
patient B a T12 Dice not lower: met ({rule}).

Held-out phantoms (seeds 9001-9004; the phantom-only release scored 0.91-0.95 per level):

{phantoms}
Reproduce: `nice -n -5 python bundles/ct_spine/scripts/train_synth.py --work DIR --out bundles/ct_spine
--max-minutes 70` (CPU, seeded; `--ship-only` rebuilds from a finished run). The phantom-only
recipe is `scripts/train.py`.

## How the levels are named (and what it needs)
The network labels every voxel with a level; `vertebra_levels` splits the vertebrae into instances,
orders them along world superior and names them consecutively with the offset most voxels vote
for. It needs a landmark in view (the 12th ribs on T12, the sacrum below L5); transitional anatomy
(lumbarised S1, 13 rib pairs, 4 or 6 lumbar vertebrae) is not modelled. Vertebrae the segmentation
joins across a disc are named as one.

## Data
No patient image was trained on (see docs/data_license.txt).
"""

if __name__ == "__main__":
    main()
