"""DDP: `medseg train` under torchrun with 2 CPU processes (gloo). Both ranks train, end with the
same weights, and rank 0 alone writes one run folder and one log."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from test_training_loop import make_sphere_msd


def test_torchrun_two_processes_cpu(tmp_path):
    ds = make_sphere_msd(tmp_path / "ds", n=5, shape=(24, 24, 16), seed=4)
    out = tmp_path / "runs" / "ddp"
    env = {**os.environ, "MEDSEG_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "medseg", "train", str(ds), "--preset", "ct_abdomen",
           "--network", '{"arch": "unet", "channels": [4, 8], "num_res_units": 0}',
           "--output", str(out), "--epochs", "2", "--patch", "16,16,16", "--batch-size", "1",
           "--val-fraction", "0.4", "--seed", "3", "--device", "cpu", "--num-workers", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines().count(str(out)) == 1  # printed by rank 0 only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    d0, d1 = metrics["weights_sha256_per_rank"]
    assert d0 == d1  # gradients were all-reduced: identical weights on both ranks
    # 3 training cases over 2 ranks (DistributedSampler pads to 4): 2 volumes x 2 patches x 2 epochs
    assert metrics["patches_seen_per_rank"] == [8, 8]
    assert metrics["n_val_cases"] == 2
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # written once, by one rank
    assert all(0.0 <= float(r["val_dice_liver"]) <= 1.0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]

    # the rank-0 checkpoint holds the weights whose digest both ranks reported
    import torch

    from medseg.models import build_network
    from medseg.training import weights_digest

    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    net = build_network(ck["model_spec"]["network"])
    net.load_state_dict(ck["state_dict"])
    assert weights_digest(net) == d0
    assert len(ck["rng"]) == 2  # one RNG state per rank, for resume
