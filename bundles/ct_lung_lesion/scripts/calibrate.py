"""Calibrate ``ct_lung_lesion``'s foreground decision on phantoms from the TRAINING generator that
no evaluation uses (calibration seeds 5001-5009 on the nine training grids, never used for
training or testing).

Run on the v0.2.0 weights, which over-segmented nodules (predicted / true volume 1.08 on average
on unseen phantoms): no shift helped (see the bundle README), so none was shipped. Raising the softmax threshold for "nodule" from 0.5 to ``t`` is the same as subtracting
``c = log(t / (1 - t))`` from the nodule logit, which is one number in the last convolution's bias:
so the calibrated bundle needs no new code on either path (``medseg segment`` and ``python -m
monai.bundle run`` both take the argmax). This script finds the bias entry that moves only the
nodule logit (checked on a random input), scores each ``c`` of a fixed grid on the calibration
phantoms, and with ``--apply RUN_DIR`` writes the best ``c`` into a copy of that run's
``checkpoints/best.pt`` (ties go to the smaller shift).

Usage (from the repository root)::

    python bundles/ct_lung_lesion/scripts/calibrate.py [--apply /tmp/lung/run --out /tmp/lung_cal/run]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402
import numpy as np  # noqa: E402

CALIBRATION_SEEDS = range(5001, 5010)
SHIFTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def nodule_bias_key(net) -> str:
    """The state-dict key of the bias that adds to output channel 1 alone (found functionally)."""
    import torch

    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        y0 = net(x)
    found = None
    for key, val in state.items():
        if not key.endswith("bias") or tuple(val.shape) != (y0.shape[1],):
            continue
        trial = dict(state)
        trial[key] = val.clone()
        trial[key][1] -= 1.0
        net.load_state_dict(trial)
        with torch.no_grad():
            d = net(x) - y0
        if float(d[:, 0].abs().max()) < 1e-4 and float((d[:, 1] + 1.0).abs().max()) < 1e-4:
            found = key
    net.load_state_dict(state)
    if found is None:
        raise SystemExit("no bias entry moves the nodule logit alone; cannot calibrate this network")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--apply", type=Path, default=None, help="training run whose best.pt gets the chosen shift")
    ap.add_argument("--out", type=Path, default=None, help="copy of the run to write (with --apply)")
    args = ap.parse_args()
    import torch
    from train import GRIDS

    from medseg.bundle import load_bundle
    from medseg.metrics import dice

    model = load_bundle(args.bundle)
    key = nodule_bias_key(model.network)
    base = model.network.state_dict()[key].clone()
    plan = [(s, GRIDS[s % len(GRIDS)]) for s in CALIBRATION_SEEDS]
    cases = list(bt.iter_phantoms("lung_ct", plan))
    scores = {}
    for c in SHIFTS:
        state = dict(model.network.state_dict())
        state[key] = base.clone()
        state[key][1] -= c
        model.network.load_state_dict(state)
        d = [float(dice(bt.segment_array(model, img, aff) == 1, lab == 1)) for _, img, lab, aff in cases]
        scores[c] = float(np.mean(d))
        print(f"shift {c:.1f} (threshold {1 / (1 + np.exp(-c)):.3f}): mean Dice {scores[c]:.4f} "
              f"over {len(d)} calibration phantoms", flush=True)
    best = max(SHIFTS, key=lambda c: (round(scores[c], 4), -c))
    print(json.dumps({"bias_key": key, "scores": scores, "chosen_shift": best}))
    if args.apply is not None:
        if args.out is None or args.out.exists():
            raise SystemExit("--apply needs a new --out folder")
        shutil.copytree(args.apply, args.out)
        ckpt = args.out / "checkpoints" / "best.pt"
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
        obj["state_dict"][key][1] -= best
        obj["calibration"] = {"nodule_logit_shift": best, "bias_key": key, "scores": scores}
        torch.save(obj, ckpt)
        print(f"wrote {ckpt} with the nodule logit shifted by -{best}")


if __name__ == "__main__":
    main()
