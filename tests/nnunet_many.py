"""A many-class nnU-Net v2 model folder (TotalSegmentator-like class count), built in seconds.

    python tests/nnunet_many.py --out tests/data/nnunet_many     # rebuild the committed fixture

The model is nnU-Net's stock ``PlainConvUNet`` built from the plans of the tiny fixture
(``tests/data/nnunet_tiny``, planned by nnunetv2 itself; see tests/nnunet_fixture.py) with
``N`` output classes, its weights drawn by nnU-Net's own He initialisation under
``torch.manual_seed(seed)`` (not trained: the output is a patchwork of many classes with many
near-ties, which is what an exactness test needs), saved in the stock checkpoint layout (the
tiny fixture's checkpoint dict with ``network_weights`` and ``init_args`` replaced, trainer
``nnUNetTrainer``). ``dataset.json`` names the classes: the first ones are names that
``medseg.labels`` knows (coded in DICOM SEG), the rest ``structure_NNN`` (free text).
``patch_size`` may be changed (it only sets the sliding-window tile).

The committed fixture (``tests/data/nnunet_many``) holds the model (105 classes, seed 0) and
what ``nnUNetv2_predict -device cpu`` wrote for the tiny fixture's three inputs (LPS, oblique
and flipped, thick-slice).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY = HERE / "data" / "nnunet_tiny" / "models" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
FOLDER = "nnUNetTrainer__nnUNetPlans__3d_fullres"
VERSION = "nnunet-many-1"


def build_model(out: Path, n_classes: int = 105, seed: int = 0, patch_size: list[int] | None = None,
                spacing: list[float] | None = None, mirroring: bool = True) -> Path:
    """Write ``out/<trainer>__<plans>__3d_fullres`` (plans.json, dataset.json, fold_0) and return it.

    ``spacing`` replaces the plans' network spacing (mm, plans axis order); ``mirroring=False``
    writes ``inference_allowed_mirroring_axes: None`` into the checkpoint, as nnU-Net's
    ``nnUNetTrainerNoMirroring`` does (TotalSegmentator's published checkpoints are of that trainer).
    """
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from medseg.inference.sources.nnunet import load_checkpoint
    from medseg.labels import LABELS

    folder = Path(out) / FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "fold_0").mkdir(parents=True)
    plans = json.loads((TINY / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    if patch_size is not None:
        cfg["patch_size"] = [int(p) for p in patch_size]
    if spacing is not None:
        cfg["spacing"] = [float(x) for x in spacing]
    known = [n for n in LABELS if n not in ("foreground", "lesion")]
    names = [known[i] if i < len(known) else f"structure_{i + 1:03d}" for i in range(n_classes - 1)]
    dataset = json.loads((TINY / "dataset.json").read_text())
    dataset["name"] = f"medseg-many-{n_classes}"
    dataset["labels"] = {"background": 0, **{name: i + 1 for i, name in enumerate(names)}}
    arch = cfg["architecture"]
    torch.manual_seed(seed)
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 1, n_classes, allow_init=True, deep_supervision=False)
    ck = load_checkpoint(TINY / "fold_0" / "checkpoint_final.pth")
    ck["network_weights"] = net.state_dict()
    ck["logging"] = {}
    ck["init_args"] = dict(ck["init_args"], plans=plans, dataset_json=dataset, fold=0)
    ck["trainer_name"] = "nnUNetTrainer"
    if not mirroring:
        ck["inference_allowed_mirroring_axes"] = None
    torch.save(ck, folder / "fold_0" / "checkpoint_final.pth")
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def predict_reference(model: Path, inputs: Path, out: Path, folds: tuple[str, ...] = ("0",)) -> Path:
    """``nnUNetv2_predict_from_modelfolder -device cpu`` on every ``*_0000.nii.gz`` in ``inputs``."""
    import os

    env = dict(os.environ, nnUNet_raw=str(out), nnUNet_preprocessed=str(out), nnUNet_results=str(out),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    subprocess.run([_tool("nnUNetv2_predict_from_modelfolder"), "-i", str(inputs), "-o", str(out), "-m", str(model),
                    "-f", *folds, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"],
                   env=env, check=True, capture_output=True)
    for extra in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
        (out / extra).unlink(missing_ok=True)
    return out


def build(out: Path) -> Path:
    """The committed fixture: models/, predictions/3d_fullres_f0/ for the tiny fixture's inputs."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    model = build_model(out / "models")
    predict_reference(model, HERE / "data" / "nnunet_tiny" / "inputs", out / "predictions" / "3d_fullres_f0")
    (out / "VERSION").write_text(VERSION + "\n")
    (out / "README.md").write_text(
        "# Many-class nnU-Net v2 test fixture (`python tests/nnunet_many.py --out tests/data/nnunet_many`)\n\n"
        "`models/`: nnU-Net's stock network from the tiny fixture's plans with 105 classes and seeded random\n"
        "weights (nnU-Net's He initialisation, torch.manual_seed(0)); `predictions/3d_fullres_f0/`: what\n"
        "`nnUNetv2_predict_from_modelfolder -device cpu` wrote for `../nnunet_tiny/inputs/`.\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    print(build(args.out))


if __name__ == "__main__":
    main()
