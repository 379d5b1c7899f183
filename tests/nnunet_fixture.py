"""Build a small, real nnU-Net v2 model with nnunetv2 itself, and the nnUNetv2_predict outputs
medseg must reproduce.

    python tests/nnunet_fixture.py --out tests/data/nnunet_tiny     # rebuild the committed fixture

Steps (all through nnunetv2's own commands and classes, on CPU):
1. a phantom abdomen CT dataset (``medseg.data.phantoms.write_decathlon_dataset(layout="nnunet")``,
   5 cases of 40x40x24 voxels at 1.5 x 1.5 x 2.5 mm) as ``Dataset901_MedsegPhantom``;
2. ``nnUNetv2_extract_fingerprint`` + ``nnUNetv2_plan_experiment``, then the plans' networks are
   made tiny (features 4..16, which keeps the checkpoints at a few hundred KB) and
   ``nnUNetv2_preprocess`` for ``2d`` and ``3d_fullres``;
3. a short training (:class:`nnUNetTrainer_medsegTiny`: 2 epochs of 5 SGD steps at nnU-Net's
   learning rate: the model has not learned the anatomy, its output mixes background and
   organs with many voxels near a decision boundary, which is what an exactness test needs)
   of 3d_fullres folds 0 and 1 and 2d fold 0 (a different seed each); the folders are then
   renamed to the stock trainer
   name (``nnUNetTrainer__nnUNetPlans__<config>``, ``trainer_name`` in the checkpoint too), which
   builds the same network from the plans, so ``nnUNetv2_predict`` finds it;
4. three test inputs (an LPS phantom, an oblique RAS one, a thick-slice 1.5 x 1.5 x 7.5 mm one
   whose anisotropy makes nnU-Net resample with a separate z axis), predicted by
   ``nnUNetv2_predict -device cpu`` for each model/fold set listed in ``PREDICTIONS``.

The optimizer state is dropped from the stored checkpoints (nnU-Net's predictor reads only
``network_weights``, ``trainer_name``, ``init_args`` and ``inference_allowed_mirroring_axes``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

VERSION = "nnunet-tiny-1"  # bump when anything below changes (the cache key of the slow test)
DATASET_ID = 901
DATASET = "Dataset901_MedsegPhantom"
CONFIGS = ("3d_fullres", "2d")
FOLDS = {"3d_fullres": (0, 1), "2d": (0,)}
EPOCHS = {("3d_fullres", 0): 2, ("3d_fullres", 1): 2, ("2d", 0): 2}  # x 5 iterations
INPUTS = ("lps", "oblique_ras", "aniso")
# (model folder, folds, name of the prediction folder)
PREDICTIONS = (("3d_fullres", (0,), "3d_fullres_f0"), ("3d_fullres", (0, 1), "3d_fullres_f01"),
               ("2d", (0,), "2d_f0"))


def _trainer_module() -> str:
    return '''
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_medsegTiny(nnUNetTrainer):
    """nnUNetTrainer with a training schedule of seconds (for test fixtures only)."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ["MEDSEG_NNUNET_EPOCHS"])
        self.num_iterations_per_epoch = 5
        self.num_val_iterations_per_epoch = 1
        # nnU-Net's own learning rate (1e-2) for 10 steps: the output is a mixture of background
        # and several organs with many voxels near a decision boundary, which is what an exactness
        # test needs (200 steps at 0.05 gave a network that predicts background only, 10 steps at
        # 1e-4 one class almost everywhere).
        self.save_every = 1000

    def _do_i_compile(self):
        return False
'''


def _run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{tail}")


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _shrink_plans(plans_path: Path) -> None:
    plans = json.loads(plans_path.read_text())
    for cfg in plans["configurations"].values():
        arch = cfg.get("architecture", {}).get("arch_kwargs")
        if not arch:
            continue
        n = int(arch["n_stages"])
        arch["features_per_stage"] = [min(4 * 2 ** i, 16) for i in range(n)]
        cfg["batch_size"] = 2
    plans_path.write_text(json.dumps(plans, indent=2))


def write_inputs(folder: Path) -> dict[str, Path]:
    """The three test inputs as nnU-Net raw files (``<case>_0000.nii.gz``)."""
    from medseg.data.phantoms import abdomen_ct, thick_slices
    from medseg.data.phantoms.writers import _save_nifti

    folder.mkdir(parents=True, exist_ok=True)
    th = np.deg2rad(20.0)
    oblique = np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]])
    oblique = oblique @ np.diag([1.0, -1.0, -1.0])  # oblique and flipped (j, k run backwards)
    phantoms = {
        "lps": abdomen_ct(shape=(40, 40, 24), spacing=(1.5, 1.5, 2.5), orientation="LPS", seed=501),
        "oblique_ras": abdomen_ct(shape=(44, 36, 26), spacing=(1.4, 1.6, 2.4), orientation=oblique, seed=502),
        "aniso": thick_slices(abdomen_ct(shape=(40, 40, 60), spacing=(1.5, 1.5, 1.25), orientation="RAS",
                                         seed=503), 6, axis=2),
    }
    out = {}
    for name, ph in phantoms.items():
        path = folder / f"{name}_0000.nii.gz"
        _save_nifti(ph.image.astype(np.float32), ph.affine, path)
        out[name] = path
    return out


def build(out: Path, work: Path | None = None, *, log: Path | None = None) -> Path:
    """Build the fixture into ``out`` (models/, inputs/, predictions/); return ``out``."""
    import torch

    from medseg.data.phantoms import write_decathlon_dataset

    out = Path(out)
    work = Path(work) if work else out.parent / (out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = log or work / "build.log"
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(res),
               nnUNet_n_proc_DA="1", nnUNet_compile="f", MEDSEG_PROGRESS="0", OMP_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")]))
    write_decathlon_dataset(raw / DATASET, task="abdomen", n_train=5, n_test=0, shape=(40, 40, 24), seed=7,
                            layout="nnunet")
    _run([_tool("nnUNetv2_extract_fingerprint"), "-d", str(DATASET_ID), "-np", "1"], env, log)
    _run([_tool("nnUNetv2_plan_experiment"), "-d", str(DATASET_ID)], env, log)
    _shrink_plans(pre / DATASET / "nnUNetPlans.json")
    _run([_tool("nnUNetv2_preprocess"), "-d", str(DATASET_ID), "-c", *CONFIGS, "-np", "1", "1"], env, log)
    (work / "medseg_tiny_trainer.py").write_text(_trainer_module())
    for cfg in CONFIGS:
        for fold in FOLDS[cfg]:
            script = (
                "import json, torch\n"
                "from medseg_tiny_trainer import nnUNetTrainer_medsegTiny as T\n"
                f"plans = json.load(open({str(pre / DATASET / 'nnUNetPlans.json')!r}))\n"
                "plans['continue_training'] = False\n"
                f"ds = json.load(open({str(pre / DATASET / 'dataset.json')!r}))\n"
                f"torch.manual_seed({fold + 10 * CONFIGS.index(cfg)})\n"
                f"t = T(plans, {cfg!r}, {fold}, ds, torch.device('cpu'))\n"
                "t.run_training()\n")
            _run([sys.executable, "-c", script], dict(env, nnUNet_n_proc_DA="0", MEDSEG_NNUNET_EPOCHS=str(EPOCHS[cfg, fold])), log)  # no worker processes
    # rename to the stock trainer (same network from the same plans); drop the optimizer state
    models = out / "models"
    shutil.rmtree(out, ignore_errors=True)
    for cfg in CONFIGS:
        src = res / DATASET / f"nnUNetTrainer_medsegTiny__nnUNetPlans__{cfg}"
        dst = res / DATASET / f"nnUNetTrainer__nnUNetPlans__{cfg}"
        src.rename(dst)
        for fold in FOLDS[cfg]:
            ck = dst / f"fold_{fold}" / "checkpoint_final.pth"
            data = torch.load(ck, map_location="cpu", weights_only=False)  # written by this build
            data["trainer_name"] = "nnUNetTrainer"
            data["optimizer_state"] = None
            data["init_args"]["device"] = torch.device("cpu")
            torch.save(data, ck)
        keep = models / dst.name
        keep.mkdir(parents=True)
        for name in ("plans.json", "dataset.json"):
            shutil.copy2(dst / name, keep / name)
        for fold in FOLDS[cfg]:
            (keep / f"fold_{fold}").mkdir()
            shutil.copy2(dst / f"fold_{fold}" / "checkpoint_final.pth", keep / f"fold_{fold}" / "checkpoint_final.pth")
    inputs = write_inputs(out / "inputs")
    for cfg, folds, name in PREDICTIONS:
        _run([_tool("nnUNetv2_predict"), "-i", str(out / "inputs"), "-o", str(out / "predictions" / name),
              "-d", str(DATASET_ID), "-c", cfg, "-f", *map(str, folds), "-device", "cpu",
              "--disable_progress_bar", "-npp", "1", "-nps", "1"], env, log)
        for extra in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
            (out / "predictions" / name / extra).unlink(missing_ok=True)
    (out / "VERSION").write_text(VERSION + "\n")
    (out / "README.md").write_text(
        "# nnU-Net v2 test fixture (built by `python tests/nnunet_fixture.py --out tests/data/nnunet_tiny`)\n\n"
        "`models/`: nnU-Net v2 trained-model folders of a tiny network trained for seconds on phantom CTs\n"
        "(not fit for anything but tests); `inputs/`: test images; `predictions/<config>_f<folds>/`: what\n"
        "`nnUNetv2_predict -device cpu` (nnunetv2 " + _nnunet_version() + ") wrote for them.\n")
    if len(inputs) != len(INPUTS):
        raise RuntimeError("not every input was written")
    return out


def _nnunet_version() -> str:
    from importlib.metadata import version

    return version("nnunetv2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    print(build(args.out, args.work))


if __name__ == "__main__":
    main()
