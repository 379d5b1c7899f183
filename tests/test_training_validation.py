"""Training picks best.pt with the pipeline that ships (TrainConfig(validation="deployment")) and
gives back the process state it changes (determinism flags, cuDNN autotuning, global RNGs)."""

from __future__ import annotations

import csv
import json
import random

import nibabel as nib
import numpy as np
import pytest
import torch
from test_training_loop import make_sphere_msd

from medseg.errors import ConfigError
from medseg.training import TrainConfig, train

NET = {"arch": "unet", "channels": [4, 8], "num_res_units": 0}


def test_deployment_validation_scores_what_segment_writes(tmp_path):
    ds = make_sphere_msd(tmp_path / "ds", n=3)
    cfg = TrainConfig(dataset=ds, output=tmp_path / "run", preset="ct_abdomen", network=NET, epochs=2,
                      patch_size=(16, 16, 8), val_fraction=0.34, num_workers=0, lr=3e-3, validation="deployment",
                      postprocess={"keep_largest_component": True})
    run = train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    with open(run / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["val_loss"] == "" for r in rows)  # the deployed pipeline keeps no logits
    # independent: the run folder through medseg.inference.segment, Dice with numpy against the
    # label file read by nibabel, on the source grid
    from medseg.inference import SegmentationModel, segment
    from medseg.io import load

    (val_id,) = metrics["val_case_ids"]
    model = SegmentationModel.from_run_dir(run)
    pred = np.asarray(segment(load(ds / f"imagesTr/{val_id}.nii.gz"), model, device="cpu", progress=False)[0]) == 1
    ref = np.asarray(nib.load(str(ds / f"labelsTr/{val_id}.nii.gz")).dataobj) == 1
    dice = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
    assert metrics["best_val_dice"]["liver"] == pytest.approx(dice, abs=1e-6)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"]
    with pytest.raises(ConfigError, match="validation 'grid' unknown"):
        train(TrainConfig(dataset=ds, output=tmp_path / "r2", preset="ct_abdomen", validation="grid"))


def test_training_gives_back_the_global_state(tmp_path):
    ds = make_sphere_msd(tmp_path / "ds", n=2)
    before = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    try:
        train(TrainConfig(dataset=ds, output=tmp_path / "run", preset="ct_abdomen", network=NET, epochs=1,
                          patch_size=(16, 16, 8), val_fraction=0.5, num_workers=0, deterministic=True))
        assert torch.backends.cudnn.benchmark is True
        assert torch.are_deterministic_algorithms_enabled() is before[1]
        got = (torch.rand(3), np.random.rand(3), random.random())
        assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    finally:
        torch.backends.cudnn.benchmark = before[0]
