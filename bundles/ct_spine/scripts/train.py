"""Train and ship ``ct_spine``: vertebrae labelled by level (T12-L5) on CT (3D), trained on phantoms.

Training data: medseg spine CT phantoms (``medseg.data.phantoms.spine_ct``, the generator behind
``write_decathlon_dataset(task="spine")``), seeds 1-12 in four orientations (LPS, RAS, LAS, RPI).
Held-out test: seeds 9001-9004 (never used in training) in RAS, LPS, PIL and a 15 degree oblique
grid.

Usage (from the repository root)::

    python bundles/ct_spine/scripts/train.py --out bundles/ct_spine
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402

NAME = "ct_spine"
LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5")
LABELS = {i + 1: f"vertebra_{lv}" for i, lv in enumerate(LEVELS)}
NETWORK = {"arch": "unet", "spatial_dims": 3, "channels": [8, 16, 32, 64], "strides": [2, 2, 2],
           "num_res_units": 1}
TRAIN_PLAN = [(s, ("LPS", "RAS", "LAS", "RPI")[s % 4]) for s in range(1, 13)]
TEST_PLAN = [(9001, "RAS"), (9002, "LPS"), (9003, "PIL"), (9004, bt.OBLIQUE)]


def main() -> None:
    args = bt.common_args(__doc__.splitlines()[0]).parse_args()
    work = bt.work_dir(args.work, NAME)
    ds = bt.write_msd(work / "dataset", bt.iter_phantoms("spine_ct", TRAIN_PLAN), LABELS, "CT")
    # the patch spans the whole S-I extent (144 mm = 72 voxels at 2 mm): a level can only be told from its
    # neighbours and its size, so the network must see the column from end to end
    run = bt.train_run(ds, work / "run", "ct_spine", NETWORK, epochs=40, patch_size=(48, 48, 72),
                       preset_overrides={"target_spacing": [2.0, 2.0, 2.0]},
                       batch_size=2, num_samples=1, lr=3e-3, val_fraction=0.17, val_every=5, seed=0,
                       max_minutes=args.max_minutes, resume=args.resume,
                       ship_only=args.ship_only, overlap=0.25, sw_batch_size=2,
                       augmentation=bt.no_flip_augmentation())
    bt.patch_model_spec(run, name=NAME, postprocess={})
    bt.slim_checkpoint(run)
    test_cases = bt.phantom_cases("spine_ct", TEST_PLAN)
    res = bt.eval_cases(bt.load_run_model(run), test_cases, LABELS, only_present=True,
                        merged="all_levels_merged")
    mean = bt.mean_row(res)
    res_all = {**res, "mean": mean}
    cols = [*LABELS.values(), "all_levels_merged"]
    readme = f"""# ct_spine

3D segmentation of lumbar vertebrae on CT (HU) with the level as the label: 1 = T12, 2 = L1,
3 = L2, 4 = L3, 5 = L4, 6 = L5. Small 3D U-Net (channels 8-16-32-64), preset `ct_spine` with 2 mm isotropic
resampling (RAS, window -200..1200 HU), sliding window 48 x 48 x 72 (the whole S-I extent of the
training phantoms, so the network sees the column end to end).

Training augmentation: medseg's default chain (rotation, scaling, intensity, gamma, noise) with
random flips switched OFF: a flip along S-I reverses the order of the levels, a left-right flip is harmless
but all flips are off for simplicity.

## What the weights are (and are not) fit for
**Trained on synthetic phantoms only** (`medseg.data.phantoms.spine_ct`: analytic vertebrae, 3-6
consecutive levels per phantom). They are **NOT fit for patients**. In the phantoms a level is
told apart from its neighbours only by a 4 % size step per level (with +-4 % random jitter) and by
which levels are present, so level naming is intrinsically ambiguous there; on real CT the
network has never seen ribs, sacrum, pelvis or a field of view that does not hold the column
from end to end. Use the weights to test pipelines, and the recipe below for real weights.

## Measured on held-out phantoms (seeds never used in training, other orientations)
Dice per level (`medseg.metrics.dice`, source grid, after `medseg.inference.segment`); a level
absent from a phantom is left blank:

{bt.fmt_table(res_all, cols)}
Column `all_levels_merged`: vertebrae vs background with the levels merged (segmentation
without naming).

Target (Dice >= 0.9 per level on held-out phantoms): {"met" if min(v for k, v in mean.items() if k != "all_levels_merged") >= 0.9 else "NOT met"}; the vertebrae themselves are found (merged Dice {mean["all_levels_merged"]:.3f}).

Training: seeds 1-12, orientations LPS/RAS/LAS/RPI (two for validation / checkpoint choice).
Test: seed 9001 RAS, 9002 LPS, 9003 PIL, 9004 oblique (15 degrees about S-I).

Reproduce (CPU, seeded; about 15 minutes on 2 cores):
```
python bundles/ct_spine/scripts/train.py --out bundles/ct_spine
```

## Recipe for real data (VerSe 2019/2020)
1. VerSe gives per-subject CT and a mask with labels 1-24 (C1-L5), 25 (L6), 28 (T13). Keep
   labels 19-24 (T12-L5) renumbered to 1-6 here, or train on all levels (then change the labels).
2. `medseg train DATASET --preset ct_spine --network '{{"arch": "unet", "channels": [16, 32, 64,
   128, 256]}}' --patch-size 128 128 160 --epochs 500` on a GPU; level naming on real spines
   needs long patches (or a two-stage localise-then-label model as in the VerSe winners).
3. Report per-level Dice and the level identification rate on held-out VerSe subjects.

## Data
Synthetic, generated by medseg (no patient data; see docs/data_license.txt).
"""
    metrics_file = work / "heldout_metrics.json"
    metrics_file.write_text(json.dumps(res_all, indent=2) + "\n")
    bt.ship(run, args.out, name=NAME,
            description="Small 3D U-Net for vertebrae T12-L5 labelled by level on CT, trained on medseg "
                        "phantoms (NOT fit for patients).",
            data_source="synthetic spine CT phantoms generated by medseg.data.phantoms.spine_ct "
                        "(seeds 1-12, orientations LPS/RAS/LAS/RPI)",
            license_text="Synthetic, generated by medseg (medseg.data.phantoms); no patient data, no "
                         "licence restrictions.",
            readme_head=readme, extra_docs={"heldout_metrics.json": metrics_file},
            task_description="CT vertebra segmentation with level labels T12-L5 (3D)")
    print(json.dumps(res_all, indent=2))
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
