"""End-to-end CPU wall time: `medseg segment` vs `python -m monai.bundle run` on one CT NIfTI.

Both run as fresh subprocesses on the same input (a 320 x 320 x 160 abdomen CT phantom,
0.8 x 0.8 x 2.0 mm, written as NIfTI) with the same network and weights:

* default: a training run folder is made in a temporary directory (a MONAI UNet with seeded
  weights, preset ``ct_abdomen``: RAS, 1.5 x 1.5 x 2.0 mm, HU window -160..240), and a minimal
  MONAI bundle is built beside it with a model-zoo style ``configs/inference.json``
  (LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd -> ScaleIntensityRanged;
  SlidingWindowInferer gaussian; Activationsd softmax -> AsDiscreted argmax -> Invertd
  (nearest) -> SaveImaged; CheckpointLoader; SupervisedEvaluator).
* ``--bundle DIR``: an existing bundle (``configs/inference.json`` + ``configs/medseg.json``);
  ``dataset_dir`` / ``output_dir`` are overridden on the MONAI command line.

The two label maps are compared with Dice per label (MONAI's DiceMetric); they should agree
(mean Dice >= 0.98). The bundle takes the argmax before Invertd (nearest), as medseg does: some
model-zoo bundles instead invert softmax probabilities bilinearly and argmax afterwards, which
for a network with seeded random weights (spatially noisy scores) changes a third of the
voxels, so it would not measure the engine. Wall time on a shared machine is noisy: the CPU
time (user + sys) of each subprocess is reported beside it.

    python benchmarks/bench_segment_vs_monai_bundle.py [--shape 320 320 160] [--bundle DIR]

Writes ``benchmarks/results/segment_vs_monai_bundle.json`` and prints a side-by-side table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SPEC = {"arch": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 5, "channels": [16, 32, 64, 128],
        "strides": [2, 2, 2], "num_res_units": 2, "norm": "instance"}
LABELS = {"1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left"}
ROI = [96, 96, 96]
SPACING = [1.5, 1.5, 2.0]


def make_run_dir(run: Path, seed: int = 0) -> None:
    """A training-run folder (model_spec.json + checkpoints/best.pt) with seeded UNet weights."""
    import torch

    from medseg.models import build_network

    torch.manual_seed(seed)
    net = build_network(SPEC)
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": net.state_dict(), "epoch": 0}, run / "checkpoints" / "best.pt")
    spec = {"name": "bench-unet", "network": SPEC, "preset": "ct_abdomen", "labels": LABELS, "task": "semantic",
            "inference": {"roi_size": ROI, "overlap": 0.25, "sw_batch_size": 4, "postprocess": {}}}
    (run / "model_spec.json").write_text(json.dumps(spec, indent=2))


def make_monai_bundle(run: Path, bundle: Path) -> None:
    """A minimal MONAI bundle (model-zoo conventions) holding the run's weights."""
    import torch

    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    state = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)["state_dict"]
    torch.save(state, bundle / "models" / "model.pt")
    net_def = {"_target_": "UNet", **{k: v for k, v in SPEC.items() if k != "arch"}}
    inference = {
        "imports": ["$import glob", "$import numpy as np"],
        "bundle_root": str(bundle),
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": SPACING, "mode": "bilinear", "padding_mode": "border"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -160, "a_max": 240, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"}]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": ROI, "sw_batch_size": 4, "overlap": 0.25,
                    "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": True, "to_tensor": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_dtype": "$np.uint8", "resample": False, "separate_folder": False}]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}, "map_location": "@device"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "run": ["$@evaluator.run()"],
    }
    metadata = {"version": "0.1.0", "monai_version": "1.5.1", "name": "bench-unet",
                "network_data_format": {"inputs": {"image": {"type": "image", "num_channels": 1}},
                                        "outputs": {"pred": {"type": "image", "num_channels": 5}}}}
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))


def make_input(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    from medseg.data.phantoms import abdomen_ct, save_phantom

    ph = abdomen_ct(shape=shape, spacing=spacing, orientation="LPS", seed=11)
    save_phantom(ph, path, "nifti")


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s = user + sys of the child, process)."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), proc


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[320, 320, 160])
    p.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 2.0])
    p.add_argument("--bundle", type=Path, default=None, help="existing bundle folder (default: build one)")
    p.add_argument("--out", type=Path, default=RESULTS / "segment_vs_monai_bundle.json")
    args = p.parse_args(argv)

    import nibabel as nib
    import numpy as np
    import torch
    from monai.metrics import DiceMetric

    env = dict(os.environ, MEDSEG_PROGRESS="0")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        make_input(tmp / "phantom", tuple(args.shape), tuple(args.spacing))
        data.mkdir()
        (tmp / "phantom" / "image.nii.gz").rename(data / "ct.nii.gz")
        if args.bundle is None:
            model_dir = tmp / "run"
            make_run_dir(model_dir)
            bundle = tmp / "bundle"
            make_monai_bundle(model_dir, bundle)
        else:
            model_dir = bundle = args.bundle.resolve()
        med_cmd = [sys.executable, "-m", "medseg", "segment", str(data / "ct.nii.gz"), "--bundle", str(model_dir),
                   "--output", str(tmp / "medseg_out"), "--format", "nifti", "--device", "cpu"]
        mon_cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
                   str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
                   "--dataset_dir", str(data), "--output_dir", str(tmp / "monai_out")]
        t_med, c_med, p_med = _timed(med_cmd, env)
        if p_med.returncode != 0:
            raise SystemExit(f"medseg segment failed: {p_med.stderr.strip().splitlines()[-1:]}")
        t_mon, c_mon, p_mon = _timed(mon_cmd, env)
        if p_mon.returncode != 0:
            raise SystemExit(f"monai.bundle run failed: {p_mon.stderr.strip().splitlines()[-3:]}")
        seg_med = nib.load(tmp / "medseg_out" / "ct" / "seg.nii.gz")
        (mon_file,) = sorted((tmp / "monai_out").rglob("*.nii.gz"))
        seg_mon = nib.load(mon_file)
        src = nib.load(data / "ct.nii.gz")
        a = np.asarray(seg_med.dataobj).astype(np.int64)
        b = np.asarray(seg_mon.dataobj).astype(np.int64).reshape(a.shape)
        prov = json.loads((tmp / "medseg_out" / "ct" / "provenance.json").read_text())
    labels = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
    metric = DiceMetric(include_background=True, reduction="none")
    dice = {}
    for lab in labels:
        d = metric(torch.from_numpy((a == lab)[None, None].astype(np.float32)),
                   torch.from_numpy((b == lab)[None, None].astype(np.float32)))
        dice[str(lab)] = float(d.flatten()[0])
    report = {
        "shape": args.shape, "spacing_mm": args.spacing, "network": SPEC if args.bundle is None else str(args.bundle),
        "roi": ROI, "wall_s": {"medseg": t_med, "monai_bundle": t_mon}, "wall_ratio_medseg_over_monai": t_med / t_mon,
        "cpu_s": {"medseg": c_med, "monai_bundle": c_mon}, "cpu_ratio_medseg_over_monai": c_med / c_mon,
        "medseg_stage_timings_s": prov["timings_s"], "dice_per_label": dice,
        "mean_dice": float(np.mean(list(dice.values()))) if dice else 1.0,
        "voxel_agreement": float((a == b).mean()),
        "grid_equal": bool(seg_med.shape == src.shape and np.allclose(seg_med.affine, src.affine, atol=1e-5)),
        "monai_grid_equal": bool(seg_mon.shape[:3] == src.shape and np.allclose(seg_mon.affine, src.affine, atol=1e-4)),
        "torch_threads": torch.get_num_threads(),
    }
    print(f"end-to-end CPU, {tuple(args.shape)} CT NIfTI, UNet roi {ROI}")
    print(f"{'':<14} {'wall s':>8} {'CPU s':>8}")
    print(f"{'medseg':<14} {t_med:>8.1f} {c_med:>8.1f}")
    print(f"{'monai bundle':<14} {t_mon:>8.1f} {c_mon:>8.1f}")
    print(f"ratio medseg/monai: wall {report['wall_ratio_medseg_over_monai']:.2f}, CPU "
          f"{report['cpu_ratio_medseg_over_monai']:.2f}; mean Dice {report['mean_dice']:.4f}; "
          f"voxel agreement {100 * report['voxel_agreement']:.3f} %; medseg stages {prov['timings_s']}")
    from medseg.io.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
