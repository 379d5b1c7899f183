"""A bundle runs both ways with the same result: ``medseg segment INPUT --bundle DIR`` and MONAI's
own ``python -m monai.bundle run --config_file configs/inference.json ...`` (model-zoo convention).
Both label maps must lie on the source grid (nibabel) and agree (MONAI's DiceMetric >= 0.98)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_bundle_build import LABELS, make_tiny_bundle, shared_bundle


def _dice_monai(a: np.ndarray, b: np.ndarray, n_classes: int) -> list[float]:
    import torch
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=False, reduction="none", num_classes=n_classes)
    ta = torch.as_tensor(a.astype(np.int64))[None, None]
    tb = torch.as_tensor(b.astype(np.int64))[None, None]
    return metric(ta, tb)[0].tolist()


def _monai_cli(bundle: Path, dataset_dir: Path, out_dir: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("ignite", reason="MONAI's bundle workflow needs pytorch-ignite")
    pytest.importorskip("fire", reason="`python -m monai.bundle` needs fire")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json"),
           "--bundle_root", str(bundle), "--dataset_dir", str(dataset_dir), "--output_dir", str(out_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MEDSEG_PROGRESS": "0"})


def _both_ways(bundle: Path, image: Path, tmp_path: Path, capsys) -> tuple[Path, Path]:
    from medseg import cli

    assert cli.main(["segment", str(image), "--bundle", str(bundle), "--output", str(tmp_path / "medseg"),
                     "--format", "nifti"]) == 0
    capsys.readouterr()
    ours = next((tmp_path / "medseg").rglob("seg.nii.gz"))
    proc = _monai_cli(bundle, image.parent, tmp_path / "monai")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stem = image.name.split(".nii")[0]
    theirs = tmp_path / "monai" / f"{stem}_seg.nii.gz"
    assert theirs.is_file(), sorted(p.name for p in (tmp_path / "monai").iterdir())
    return ours, theirs


def _check_same(src: Path, ours: Path, theirs: Path, n_classes: int) -> list[float]:
    import nibabel as nib

    s, a, b = (nib.load(str(p)) for p in (src, ours, theirs))
    for img in (a, b):
        assert img.shape[:3] == s.shape[:3]
        np.testing.assert_allclose(img.affine, s.affine, atol=1e-4)  # same voxel -> world mm mapping
    la, lb = np.squeeze(np.asarray(a.dataobj)), np.squeeze(np.asarray(b.dataobj))
    assert set(np.unique(la).tolist()) <= set(range(n_classes))
    assert len(np.unique(la)) >= 2, "the test model should predict more than one class here"
    dice = _dice_monai(la, lb, n_classes)
    assert min(dice) >= 0.98, dice
    return dice


def test_medseg_and_monai_bundle_run_agree_on_a_phantom(tmp_path_factory, tmp_path, capsys):
    from medseg.data.phantoms import abdomen_ct
    from medseg.io import save

    bundle = shared_bundle(tmp_path_factory)
    ph = abdomen_ct(shape=(40, 36, 20), spacing=(1.5, 1.6, 2.5), orientation="LPS", seed=3)
    from monai.data import MetaTensor

    image = tmp_path / "in" / "abdomen.nii.gz"
    save(MetaTensor(ph.image[None], affine=ph.affine), image)
    ours, theirs = _both_ways(bundle, image, tmp_path, capsys)
    _check_same(image, ours, theirs, n_classes=len(LABELS) + 1)


@pytest.mark.slow
def test_medseg_and_monai_bundle_run_agree_on_real_mr(tmp_path_factory, tmp_path, capsys):
    """Real breast MRI (pyradiomics breast1, 0.66 x 0.66 x 2.1 mm) through an MR-preset bundle."""
    from medseg.data import sample
    from medseg.io import load, save

    bundle = make_tiny_bundle(tmp_path_factory.mktemp("mrbundle"), name="tiny_mr", preset="mr_brain")
    image = tmp_path / "in" / "breast1.nii.gz"
    save(load(sample("breast1_image")), image)
    ours, theirs = _both_ways(bundle, image, tmp_path, capsys)
    _check_same(image, ours, theirs, n_classes=len(LABELS) + 1)


def test_largest_component_postprocess_matches_medseg(tmp_path_factory, tmp_path):
    """keep_largest_component is written as MONAI's KeepLargestConnectedComponentd (face
    connectivity, before the inverse, as medseg does): both paths give one component per label."""
    from monai.data import MetaTensor
    from scipy import ndimage

    from medseg.bundle import load_bundle, run_inference_config
    from medseg.data.phantoms import abdomen_ct
    from medseg.inference import segment
    from medseg.io import load, save

    bundle = make_tiny_bundle(tmp_path_factory.mktemp("lcc"), name="tiny_lcc",
                              postprocess={"keep_largest_component": True})
    # RAS on the preset's own spacing: the network grid is the source grid, so components survive
    ph = abdomen_ct(shape=(36, 32, 16), spacing=(1.5, 1.5, 2.0), orientation="RAS", seed=5)
    image = tmp_path / "in" / "abd.nii.gz"
    save(MetaTensor(ph.image[None], affine=ph.affine), image)
    theirs = run_inference_config(bundle, image.parent, tmp_path / "out", progress=False)
    assert [p.name for p in theirs] == ["abd_seg.nii.gz"]
    ours = segment(load(image), load_bundle(bundle), device="cpu", progress=False)
    a = np.asarray(ours[0]).astype(np.int64)
    b = np.squeeze(np.asarray(load(theirs[0])[0])).astype(np.int64)
    assert a.shape == b.shape == ph.image.shape
    for lab in (1, 2):
        for arr in (a, b):
            if (arr == lab).any():
                assert ndimage.label(arr == lab, structure=ndimage.generate_binary_structure(3, 1))[1] == 1
    assert min(_dice_monai(a, b, len(LABELS) + 1)) >= 0.98
    # the step is active: the same weights without postprocessing leave more than one component
    plain = run_inference_config(shared_bundle(tmp_path_factory), image.parent, tmp_path / "plain", progress=False)
    c = np.squeeze(np.asarray(load(plain[0])[0])).astype(np.int64)
    n_plain = [ndimage.label(c == lab, structure=ndimage.generate_binary_structure(3, 1))[1] for lab in (1, 2)]
    assert max(n_plain) > 1
    assert all(((b == lab) <= (c == lab)).all() for lab in (1, 2))  # only removals


@pytest.mark.slow
def test_train_and_evaluate_configs_run_under_monai(tmp_path_factory, tmp_path):
    """configs/train.json trains one epoch on an MSD-layout folder; configs/evaluate.json (merged
    over inference.json) reports a mean Dice equal to MONAI's DiceMetric on the saved prediction."""
    import re

    import nibabel as nib
    import torch

    from medseg.data.phantoms import write_decathlon_dataset

    pytest.importorskip("ignite", reason="MONAI's bundle workflow needs pytorch-ignite")
    pytest.importorskip("fire", reason="`python -m monai.bundle` needs fire")
    bundle = shared_bundle(tmp_path_factory)
    data = write_decathlon_dataset(tmp_path / "msd", "abdomen", n_train=2, n_test=1, shape=(40, 36, 20), seed=0)
    base = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(bundle)]
    env = {**os.environ, "MEDSEG_PROGRESS": "0"}
    # the phantom has 4 organ labels: train a 5-class head of the same architecture
    proc = subprocess.run(base + ["--config_file", str(bundle / "configs/train.json"), "--dataset_dir", str(data),
                                  "--max_epochs", "1", "--ckpt_dir", str(tmp_path / "ckpt"),
                                  "--network_def#out_channels", "5"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / "ckpt" / "model.pt", weights_only=True)
    from test_bundle_build import SPEC

    from medseg.models import build_network

    build_network({**SPEC, "out_channels": 5}).load_state_dict(state, strict=True)  # the trained 5-class net

    ev = tmp_path / "ev"
    (ev / "imagesTs").mkdir(parents=True)
    (ev / "labelsTs").mkdir()
    img = data / "imagesTr" / "abdomen_000.nii.gz"
    lab = nib.load(str(data / "labelsTr" / "abdomen_000.nii.gz"))
    (ev / "imagesTs" / img.name).write_bytes(img.read_bytes())
    arr = np.clip(np.asarray(lab.dataobj), 0, 2).astype(np.uint8)  # the tiny bundle has 2 labels
    nib.save(nib.Nifti1Image(arr, lab.affine), str(ev / "labelsTs" / img.name))
    cfgs = f"['{bundle / 'configs/inference.json'}','{bundle / 'configs/evaluate.json'}']"
    proc = subprocess.run(base + ["--config_file", cfgs, "--dataset_dir", str(ev), "--output_dir",
                                  str(tmp_path / "evout")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [float(v) for v in re.findall(r"val_mean_dice: ([0-9.]+)", proc.stdout + proc.stderr)]
    assert logged, (proc.stdout + proc.stderr)[-2000:]
    pred = np.squeeze(np.asarray(nib.load(str(tmp_path / "evout" / "abdomen_000_seg.nii.gz")).dataobj))
    expected = float(np.nanmean(_dice_monai(pred, arr, len(LABELS) + 1)))
    assert abs(logged[-1] - expected) < 1e-3
