"""Tutorial 2: training a 3D organ model on Decathlon-format data.

What you will learn
-------------------
1. The Medical Segmentation Decathlon (MSD) layout that ``medseg train`` reads:
   ``dataset.json`` + ``imagesTr/`` + ``labelsTr/`` + ``imagesTs/``. Real MSD tasks (e.g.
   Task03_Liver) have exactly this shape; here ``write_decathlon_dataset`` writes abdomen CT
   phantoms (liver, spleen, both kidneys, exact labels) so the tutorial runs anywhere.
2. ``medseg.training.train(TrainConfig(...))`` trains a small 3D U-Net and writes a run folder:
   ``model_spec.json`` (network, preset, labels, inference settings), ``checkpoints/best.pt`` and
   ``last.pt``, ``log.csv`` (loss and validation Dice per epoch), ``curves.png``, ``metrics.json``.
3. The run folder is directly usable for inference: ``SegmentationModel.from_run_dir`` +
   ``segment`` label a new scan on its own grid, and we score it against the exact phantom label.

The same run from the command line::

    medseg train DATASET --preset ct_abdomen --network unet --epochs 30 --output RUN

CPU training is slow; the numbers here (a few minutes, a tiny network) are for learning the
workflow, not for a useful model. The ``--quick`` run trains for a handful of epochs only.

Run it::

    python tutorials/02_training_a_3d_organ_model.py --out /tmp/tutorial02 [--quick]

Outputs in ``--out``: ``dataset/`` (MSD layout), ``run/`` (the run folder above),
``test_overlay.png``, ``results.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    """Command-line options shared by every tutorial: --quick and --out."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   default=os.environ.get("MEDSEG_TUTORIAL_QUICK", "0") == "1",
                   help="small settings (also env MEDSEG_TUTORIAL_QUICK=1)")
    p.add_argument("--out", default="tutorial02_output", help="folder for the outputs")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = os.environ.get("MEDSEG_PROGRESS", "1") != "0"
    # Quick: coarse 3 mm voxels, 8 cases, few epochs. Full: finer grid, more cases and epochs.
    if args.quick:
        shape, n_train, epochs, patch, target = (48, 48, 32), 6, 16, (24, 24, 24), (3.0, 3.0, 3.0)
    else:
        shape, n_train, epochs, patch, target = (64, 64, 40), 12, 60, (48, 48, 48), (2.5, 2.5, 2.5)

    import torch

    from medseg.data import phantoms
    from medseg.training import TrainConfig, load_dataset, train

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    # ----------------------------------------------------------------------- 1. the dataset
    print("== 1. A Decathlon-format dataset ==")
    ds_root = phantoms.write_decathlon_dataset(out / "dataset", task="abdomen", n_train=n_train,
                                               n_test=2, shape=shape, seed=0)
    meta = json.loads((ds_root / "dataset.json").read_text())
    print(f"  dataset.json: name {meta.get('name')!r}, labels {meta['labels']}, "
          f"{meta['numTraining']} training / {meta['numTest']} test cases")
    print(f"  first training pair: {meta['training'][0]}")
    ds = load_dataset(ds_root)  # checks every image/label pair shares a grid
    print(f"  load_dataset: format {ds.format!r}, {len(ds.cases)} cases, labels {ds.labels}")

    # ----------------------------------------------------------------------- 2. training
    # The preset "ct_abdomen" resamples to RAS at its target spacing and windows the HU to
    # -160..240 (soft tissue). Here we only coarsen the spacing so the run fits a CPU.
    print("\n== 2. Training ==")
    import medseg.transforms.presets as presets

    # TrainConfig has no preset-override option: we wrap the preset for this run (the same
    # trick bundles/bundle_tools.py uses) and record the override in model_spec.json below.
    original = presets.preprocessing

    def coarse(name: str, **kw):
        return original(name, **({"target_spacing": target} | kw)) if name == "ct_abdomen" else original(name, **kw)

    presets.preprocessing = coarse
    config = TrainConfig(
        dataset=ds_root, output=out / "run", preset="ct_abdomen",
        network={"arch": "unet", "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1},
        epochs=epochs, patch_size=patch, batch_size=2, num_samples=8, lr=1e-2,
        val_every=max(1, epochs // 6), val_fraction=0.25, seed=0, device="cpu", amp=False,
        num_workers=0, overlap=0.25, sw_batch_size=2, progress=progress,
    )
    try:
        run = train(config, on_epoch_end=lambda e, row: print(
            f"  epoch {e:3d}  loss {row.get('train_loss', float('nan')):.3f}  "
            f"val dice {row.get('val_dice_mean', '')}", flush=True))
    finally:
        presets.preprocessing = original
    spec_path = run / "model_spec.json"
    spec = json.loads(spec_path.read_text())
    spec["inference"]["preset_overrides"] = {"target_spacing": list(target)}
    from medseg.io.atomic import atomic_write_text
    atomic_write_text(spec_path, json.dumps(spec, indent=2))
    print(f"  run folder: {', '.join(sorted(p.name for p in run.iterdir()))}")

    # ----------------------------------------------------------------------- 3. the curves
    with open(run / "log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    metrics = json.loads((run / "metrics.json").read_text())
    print("\n== 3. Curves and validation Dice ==")
    print(f"  log.csv columns: {', '.join(log[0])}")
    print(f"  loss: first epoch {float(log[0]['train_loss']):.3f} -> last {float(log[-1]['train_loss']):.3f}")
    print(f"  best epoch {metrics.get('best_epoch')}: validation Dice per organ "
          + ", ".join(f"{k} {v:.3f}" for k, v in metrics.get("best_val_dice", {}).items())
          + f"; mean {metrics.get('best_val_dice_mean', float('nan')):.3f}")
    # Honest reading: with a dozen CPU epochs the large liver is learnt first; the small spleen
    # and kidneys need many more epochs (the full run) before their Dice leaves zero.
    print(f"  curves: {run / 'curves.png'}")

    # ----------------------------------------------------------------------- 4. inference
    # A NEW phantom (seed never used in training), in another orientation (RAS instead of LPS):
    # the model works in the preset's RAS space and returns labels on the scan's own grid.
    print("\n== 4. Segmenting an unseen scan with the run folder ==")
    from medseg.inference import SegmentationModel, segment
    from medseg.io import load
    from medseg.metrics import dice

    test = phantoms.abdomen_ct(shape=shape, spacing=(1.5, 1.5, 2.5), orientation="RAS", seed=777)
    phantoms.save_phantom(test, out / "test_case")
    image = load(out / "test_case" / "image.nii.gz")
    model = SegmentationModel.from_run_dir(run)
    pred = segment(image, model, device="cpu", progress=progress)
    pred_arr = pred[0].numpy()
    print(f"  prediction shape {tuple(pred.shape)} == image {tuple(image.shape)}; "
          f"same affine: {bool(np.allclose(pred.affine.numpy(), image.affine.numpy()))}")
    test_dice = {}
    for value, name in test.labels.items():
        test_dice[name] = float(dice(pred_arr, test.label, label=value))
        print(f"  {name:13s} Dice {test_dice[name]:.3f}")
    from medseg.io.overlay import save_overlay_montage
    save_overlay_montage(image, pred, out / "test_overlay.png", n_slices=4,
                         title="unseen phantom, model prediction", label_names=test.labels)

    val_dice = [float(r["val_dice_mean"]) for r in log if r.get("val_dice_mean") not in (None, "", "nan")]
    results = {"epochs": len(log), "first_loss": float(log[0]["train_loss"]),
               "last_loss": float(log[-1]["train_loss"]), "best_val_dice_mean": max(val_dice) if val_dice else None,
               "test_dice": test_dice, "metrics_json": metrics}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    print(f"\nResults written to {out / 'results.json'}")


if __name__ == "__main__":
    main()
