"""Train and ship ``fluo_nuclei_2d``: fluorescence nuclei instances (2D) on the stardist DSB image.

Split (documented in docs/README.md): the image is loaded with medseg.io.load as (i, j) =
(column, row) of the picture. Training uses i < 384 (the LEFT three quarters on screen), the
held-out test part is i >= 384 (the right quarter), never seen in training or checkpoint choice
except that one training tile is used for validation (checkpoint selection).

Targets: semantic classes 1 = nucleus interior, 2 = nucleus boundary (inner one-pixel rim of each
instance, so touching nuclei are separated); instances come from medseg's postprocess
(distance-transform watershed), whose parameters this script chooses on the TRAINING region after
training (see ``choose_postprocess``); the held-out quarter is only measured.

Usage (from the repository root; ``--max-minutes`` + ``--resume`` split a run, ``--ship-only``
redoes choice, evaluation and bundle from a finished run in ``--work``)::

    python bundles/fluo_nuclei_2d/scripts/train.py --out bundles/fluo_nuclei_2d --work /tmp/fluo_work
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402
import numpy as np  # noqa: E402

NAME = "fluo_nuclei_2d"
SPLIT_I = 384
LABELS = {1: "nucleus", 2: "nucleus_boundary"}
NETWORK = {"arch": "unet", "spatial_dims": 2, "channels": [16, 32, 64, 128], "strides": [2, 2, 2],
           "num_res_units": 1}
# The instance postprocessing is CHOSEN BY THIS SCRIPT on the training region (columns i < 384, F1
# at IoU 0.5 against its true instances, PQ breaks ties) after training, over the grid below; the
# held-out quarter plays no part in the choice. "cut": seeds and watershed on the interior class
# only, the predicted boundary rim separates touching nuclei and is given back to the nearest
# nucleus afterwards; "merged": interior and boundary taken together as foreground.
MIN_DISTANCES_MM = (4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 14.0)
MIN_SIZES_MM2 = (12.0, 30.0)
BOUNDARY_MODES = {"cut": {"foreground": [1], "boundary_class": 2},
                  "merged": {"foreground": [1, 2], "boundary_class": None}}
# the baseline gets the same seed-distance grid, tuned on the same training region
BASELINE_DISTANCES = tuple(int(d) for d in MIN_DISTANCES_MM)
SEED = 0
EPOCHS = 100


def load_pair():
    """Image (float32, (i, j)), instance mask (int32) and the 4x4 affine of the stardist sample."""
    from medseg.data import sample
    from medseg.io import load

    img = load(sample("nuclei_image"))
    msk = load(sample("nuclei_mask"))
    return (img[0].numpy().astype(np.float32), msk[0].numpy().astype(np.int32),
            np.asarray(img.affine, dtype=np.float64))


def semantic_from_instances(inst: np.ndarray) -> np.ndarray:
    """1 = nucleus interior, 2 = inner boundary rim of each instance (touching nuclei split)."""
    from skimage.segmentation import find_boundaries

    sem = (inst > 0).astype(np.uint8)
    sem[find_boundaries(inst, mode="inner") & (inst > 0)] = 2
    return sem


def held_out(image: np.ndarray, inst: np.ndarray, affine: np.ndarray):
    """The held-out right quarter (i >= SPLIT_I) as MetaTensors with its own affine; instances
    relabelled 1..N after the crop."""
    img = region(image, affine, SPLIT_I, None)
    # keep the true instance identities (touching nuclei stay apart), then renumber 1..N
    sub = inst[SPLIT_I:]
    ids = np.unique(sub[sub > 0])
    lut = np.zeros(int(sub.max()) + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    ref = lut[sub]
    return img, ref


def region(image: np.ndarray, affine: np.ndarray, start: int, stop: int | None):
    """Columns ``start:stop`` of the image as a MetaTensor whose affine is shifted to the crop (RAS mm)."""
    import torch
    from monai.data import MetaTensor

    aff = affine.copy()
    aff[:3, 3] = affine[:3, :3] @ np.array([start, 0, 0]) + affine[:3, 3]
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(image[start:stop]))[None],
                      affine=torch.from_numpy(aff), meta={"space": "RAS", "modality": "microscopy"})


def choose_postprocess(model, image: np.ndarray, inst: np.ndarray, affine: np.ndarray
                       ) -> tuple[dict, list[dict]]:
    """The instance postprocess with the best F1@0.5 (then PQ) on the TRAINING region (i < SPLIT_I)
    over boundary mode x seed distance (mm) x minimum size (mm^2); returns it and every tried score."""
    import dataclasses

    from medseg.inference import segment
    from medseg.metrics import instance_metrics
    from medseg.transforms.postprocess import label_instances

    semantic = dataclasses.replace(model, postprocess={}, task="semantic")
    sem = segment(region(image, affine, 0, SPLIT_I), semantic, device="cpu", progress=False)[0].numpy()
    spacing = np.linalg.norm(affine[:3, :2], axis=0)
    ref = inst[:SPLIT_I]
    tried = []
    for mode, classes in BOUNDARY_MODES.items():
        for dist in MIN_DISTANCES_MM:
            for size in MIN_SIZES_MM2:
                cfg = {**classes, "split": "watershed", "min_distance_mm": dist, "min_size_mm3": size}
                m = instance_metrics(label_instances(sem.astype(np.int32), spacing, **cfg), ref, threshold=0.5)
                tried.append({"mode": mode, **cfg, "F1@0.5": float(m["f1"]), "PQ": float(m["pq"])})
    best = max(tried, key=lambda t: (round(t["F1@0.5"], 9), round(t["PQ"], 9)))
    chosen = {k: best[k] for k in ("foreground", "boundary_class", "split", "min_distance_mm", "min_size_mm3")}
    return {"instance": chosen}, tried


def baseline_distance(image: np.ndarray, inst: np.ndarray) -> int:
    """The baseline's watershed seed distance (px) with the best F1 on the TRAINING region: the
    baseline gets the same chance to be tuned as the network's postprocessing."""
    from medseg.metrics import instance_metrics

    scores = {}
    for d in BASELINE_DISTANCES:
        m = instance_metrics(classical_baseline(image[:SPLIT_I], d), inst[:SPLIT_I])
        scores[d] = (round(float(m["f1"]), 9), round(float(m["pq"]), 9))
    return max(scores, key=lambda d: (*scores[d], -d))


def classical_baseline(image: np.ndarray, min_distance: int = 4) -> np.ndarray:
    """Otsu threshold on a Gaussian-smoothed image, holes filled, distance-transform watershed
    (scikit-image); instances ``(i, j)`` int32."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    sm = gaussian(image.astype(np.float64), sigma=1.0, preserve_range=True)
    fg = ndimage.binary_fill_holes(sm > threshold_otsu(sm))
    fg = remove_small_objects(fg, max_size=12)
    dist = ndimage.distance_transform_edt(fg)
    comps = label(fg, connectivity=1)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=comps, exclude_border=False)
    markers = np.zeros(fg.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=fg).astype(np.int32)


def evaluate(model) -> dict[str, dict[str, float]]:
    """F1 at IoU 0.5 and PQ of the model and of the classical baseline on the held-out quarter."""
    from medseg.inference import segment
    from medseg.metrics import instance_metrics

    image, inst, affine = load_pair()
    img, ref = held_out(image, inst, affine)
    pred = segment(img, model, device="cpu", progress=False)[0].numpy().astype(np.int32)
    base_d = baseline_distance(image, inst)
    base = classical_baseline(image[SPLIT_I:], base_d)
    out = {}
    for key, p in (("medseg fluo_nuclei_2d", pred), ("Otsu + watershed (scikit-image)", base)):
        m = instance_metrics(p, ref, threshold=0.5)
        out[key] = {"F1@0.5": float(m["f1"]), "PQ": float(m["pq"]), "precision": float(m["precision"]),
                    "recall": float(m["recall"]), "n_pred": float(m["n_pred"]), "n_ref": float(m["n_ref"])}
    out["Otsu + watershed (scikit-image)"]["min_distance_px"] = float(base_d)
    return out


def run_minutes(run: Path) -> float:
    """Training wall time of the whole run in minutes: the sum of the per-epoch ``seconds`` in
    ``RUN/log.csv`` (a run continued with ``--resume`` counts all its parts)."""
    import csv

    with open(Path(run) / "log.csv", newline="") as fh:
        return sum(float(row["seconds"]) for row in csv.DictReader(fh) if row.get("seconds")) / 60.0


def main() -> None:
    from medseg.io.atomic import atomic_write_text

    args = bt.common_args(__doc__.splitlines()[0]).parse_args()
    work = bt.work_dir(args.work, NAME)
    image, inst, affine = load_pair()
    sem = semantic_from_instances(inst)
    # twelve overlapping training tiles (192 x 256 px) of the left three quarters (shifted affines)
    cases = []
    for ti, i0 in enumerate((0, 64, 128, 192)):
        for tj, j0 in enumerate((0, 128, 256)):
            aff = affine.copy()
            aff[:3, 3] = affine[:3, :3] @ np.array([i0, j0, 0]) + affine[:3, 3]
            cases.append((f"nuclei_{ti}{tj}", image[i0:i0 + 192, j0:j0 + 256], sem[i0:i0 + 192, j0:j0 + 256], aff))
    ds = bt.write_msd(work / "dataset", cases, LABELS, "microscopy")
    run = bt.train_run(ds, work / "run", "fluo_nuclei", NETWORK, epochs=EPOCHS, patch_size=(128, 128),
                       batch_size=2, num_samples=2, lr=3e-3, val_fraction=0.09, val_every=10,
                       seed=SEED, max_minutes=args.max_minutes, resume=args.resume,
                       ship_only=args.ship_only, overlap=0.5, sw_batch_size=4)
    bt.slim_checkpoint(run)
    postprocess, tried = choose_postprocess(bt.load_run_model(run), image, inst, affine)
    print("instance postprocess chosen on the training region:", json.dumps(postprocess), flush=True)
    bt.patch_model_spec(run, task="instance", name=NAME, postprocess=postprocess)
    scores = evaluate(bt.load_run_model(run))
    print(json.dumps(scores, indent=2))
    ours, base = scores["medseg fluo_nuclei_2d"], scores["Otsu + watershed (scikit-image)"]
    f1, bf1 = ours["F1@0.5"], base["F1@0.5"]
    margin = f1 - bf1
    if f1 >= 0.85 and margin >= 0.01:
        verdict = (f"Reached: F1 {f1:.3f} >= 0.85 and {margin:.3f} above the baseline's {bf1:.3f} "
                   f"({int(round(ours['n_ref']))} true nuclei, so one nucleus moves F1 by about "
                   f"{1 / ours['n_ref']:.3f}).")
    elif f1 >= 0.85 and margin > 0:
        verdict = (f"Reached only by a hair: F1 {f1:.3f} vs the baseline's {bf1:.3f} (less than 0.01 "
                   "apart, within what one nucleus changes).")
    elif f1 >= 0.85:
        verdict = (f"F1 >= 0.85 reached ({f1:.3f}); NOT above the baseline's F1 ({bf1:.3f}); PQ "
                   f"{ours['PQ']:.3f} vs {base['PQ']:.3f}.")
    else:
        verdict = (f"Not reached: F1 {f1:.3f} (baseline {bf1:.3f}). The network is small and was trained "
                   "on CPU for minutes (see below).")
    inst_pp = postprocess["instance"]
    if inst_pp["boundary_class"] is not None:
        how = (f"seeds and watershed on the predicted interior only (the predicted boundary rim cuts "
               f"touching nuclei apart and is given back to the nearest nucleus afterwards), seeds at "
               f"distance-transform maxima >= {inst_pp['min_distance_mm']:g} px apart, nuclei < "
               f"{inst_pp['min_size_mm3']:g} px dropped")
    else:
        how = (f"interior and boundary merged, split by a watershed on the distance transform seeded at "
               f"maxima >= {inst_pp['min_distance_mm']:g} px apart, nuclei < {inst_pp['min_size_mm3']:g} px dropped")
    train_minutes = run_minutes(run)
    tp_ours = int(round(ours["precision"] * ours["n_pred"]))
    tp_base = int(round(base["precision"] * base["n_pred"]))
    top = sorted(tried, key=lambda t: (-t["F1@0.5"], -t["PQ"]))[:5]
    top_rows = "\n".join(f"| {t['mode']} | {t['min_distance_mm']:g} | {t['min_size_mm3']:g} | {t['F1@0.5']:.4f} | "
                         f"{t['PQ']:.4f} |" for t in top)
    readme = f"""# fluo_nuclei_2d

Instance segmentation of fluorescence nuclei in 2D images (one channel). A small 2D U-Net predicts
nucleus interior (1) and nucleus boundary (2); medseg's postprocessing turns that into nucleus
instances ({how}). With
`medseg segment` / `medseg.inference.segment` the output is an instance-ID map; the MONAI path
(`python -m monai.bundle run`, configs/inference.json) runs the same postprocessing through
`medseg.transforms.monai_postprocess.MedsegPostprocessd` (medseg must be installed) and writes the
same instance-ID map (int32).

## What the weights are (and are not) fit for
- Trained on **three quarters of ONE real image**: the stardist sample `img2d.tif` (a 2018 Data
  Science Bowl fluorescence image, 512 x 512, 125 nuclei). That is very little data: expect it to
  work on similar DSB-like fluorescence nuclei (DAPI/Hoechst, similar magnification, ~8-12 px
  radius) and to fail on brightfield/H&E, other magnifications or dense 3D tissue.
- A demonstration and a starting point for fine-tuning (e.g. on the full DSB 2018 stage1 set),
  not a general nuclei segmenter.

## Split and measured numbers (held-out part of the real image)
The image is read by `medseg.io.load` as `(i, j)` = (column, row). Training and checkpoint choice
use columns `i < {SPLIT_I}` (left three quarters, cut into twelve overlapping 192 x 256 tiles, one of
them for validation / checkpoint choice); the test part is the right quarter `i >= {SPLIT_I}` (128 x 512 px,
{int(ours['n_ref'])} nuclei, those cut by the border included), never seen in training.
Metrics: `medseg.metrics.instance_metrics` (Hungarian matching, a match needs IoU > 0.5).

| method | F1 @ IoU 0.5 | PQ | precision | recall | nuclei found / true |
|---|---|---|---|---|---|
| medseg fluo_nuclei_2d | {ours['F1@0.5']:.4f} | {ours['PQ']:.4f} | {ours['precision']:.4f} | {ours['recall']:.4f} | {int(ours['n_pred'])} / {int(ours['n_ref'])} |
| Otsu + watershed (scikit-image, same metrics) | {base['F1@0.5']:.4f} | {base['PQ']:.4f} | {base['precision']:.4f} | {base['recall']:.4f} | {int(base['n_pred'])} / {int(base['n_ref'])} |

Target: F1@0.5 >= 0.85 and above the classical baseline. **{verdict}**
True positives: medseg {tp_ours} of {int(ours['n_ref'])}, baseline {tp_base} of {int(base['n_ref'])}; false positives: medseg
{int(ours['n_pred']) - tp_ours}, baseline {int(base['n_pred']) - tp_base}. With {int(ours['n_ref'])} nuclei in the held-out quarter these
figures are coarse: a difference of one or two nuclei is not a proven difference between the methods.

### How the parameters were chosen (training region only)
Nothing was chosen on the held-out quarter. After training, the script segments the training
region (`i < {SPLIT_I}`) and tries the instance postprocessing over boundary mode (`cut`: interior
only, boundary rim as separator; `merged`: interior + boundary) x seed distance
{MIN_DISTANCES_MM} px x minimum size {MIN_SIZES_MM2} px, keeping the best F1@0.5 (PQ breaks ties)
against the training region's true instances; all tried scores are in
`docs/postprocess_selection.json`. Best five (training region, NOT held-out):

| mode | seed distance (px) | min size (px) | F1 @ 0.5 | PQ |
|---|---|---|---|---|
{top_rows}

The classical baseline: Gaussian smoothing (sigma 1 px), Otsu threshold, hole filling, removal of
objects <= 12 px, watershed on the distance transform seeded at maxima >= {int(base['min_distance_px'])} px apart
(that distance chosen among {BASELINE_DISTANCES} px, the same grid as the network's, by F1 on the
same training region).

Reproduce (CPU, seeded; {EPOCHS} epochs; the shipped run took {train_minutes:.1f} min of training in all, the
sum of the epoch times in its `log.csv`, on a 2-core machine shared with other jobs, split over
`--max-minutes` / `--resume` calls):
```
python bundles/fluo_nuclei_2d/scripts/train.py --out bundles/fluo_nuclei_2d --work /tmp/fluo_work
```
It prints the chosen postprocessing and the table above as JSON (the numbers are measured on the
held-out quarter by the script itself, after training). `--ship-only --work /tmp/fluo_work` redoes
the choice, the evaluation and the bundle from a finished run without training.

## Data
stardist 0.9.2 wheel, `stardist/data/images/img2d.tif` and `mask2d.tif` (fetched by
`medseg.data.sample("nuclei_image")` / `("nuclei_mask")`), BSD-3 (see docs/data_license.txt).
"""
    license_text = ("Training data: stardist sample image img2d.tif and mask2d.tif (a 2018 Data Science "
                    "Bowl image), shipped in the stardist package, BSD 3-Clause License, "
                    "Copyright (c) 2018-2024, Uwe Schmidt, Martin Weigert. All rights reserved.")
    metrics_file, selection_file = work / "heldout_metrics.json", work / "postprocess_selection.json"
    atomic_write_text(metrics_file, json.dumps(scores, indent=2) + "\n")
    atomic_write_text(selection_file, json.dumps({"chosen": postprocess, "training_region_scores": tried},
                                                 indent=2) + "\n")
    bt.ship(run, args.out, name=NAME, description="2D U-Net (interior + boundary) for fluorescence nucleus "
            "instances, trained on three quarters of the stardist DSB sample image.",
            data_source="stardist 0.9.2 sample img2d.tif / mask2d.tif (Data Science Bowl 2018), left "
                        "three quarters (columns i < 384)",
            license_text=license_text, readme_head=readme,
            task_description="fluorescence nucleus instance segmentation (2D)",
            extra_docs={"heldout_metrics.json": metrics_file,
                        "postprocess_selection.json": selection_file})
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
