"""MONAI imported for inference only: ignite / pyplot / scipy.signal stay out, yet stay importable."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = r"""
import json, sys, time
t0 = time.perf_counter()
from medseg._lean_imports import NOT_NEEDED_FOR_INFERENCE, import_monai_for_inference
first = import_monai_for_inference()
lean_s = time.perf_counter() - t0
loaded = [m for m in NOT_NEEDED_FOR_INFERENCE if m in sys.modules]
import torch
from monai.data import MetaTensor
from monai.networks.nets import UNet
import monai.transforms as mt
x = MetaTensor(torch.zeros(1, 8, 8, 8), affine=torch.eye(4))
y = mt.ScaleIntensityRanged(keys="i", a_min=0, a_max=1, b_min=0, b_max=1)({"i": x})["i"]
net = UNet(3, 1, 2, (4, 8), (2,))
import matplotlib.pyplot, scipy.signal  # importable afterwards
print(json.dumps({"first": first, "second": import_monai_for_inference(), "loaded": loaded,
                  "out": list(net(torch.zeros(1, 1, 8, 8, 8)).shape), "y": float(y.max())}))
"""


def test_monai_without_training_extras_still_runs_inference_pieces():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["first"] is True and res["second"] is False  # already imported the second time
    assert res["loaded"] == []  # none of the three was imported by MONAI
    assert res["out"] == [1, 2, 8, 8, 8] and res["y"] == 0.0
