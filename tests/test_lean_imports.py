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


def test_segment_cli_in_a_fresh_process_reads_dicom_and_writes_every_format(tmp_path):
    """The lean import hides pydicom, SciPy, matplotlib, Pillow ... only while MONAI imports:
    a DICOM study in, NIfTI + DICOM SEG + PNG out, in a fresh process (as users run it)."""
    import numpy as np
    import pydicom
    import torch

    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantoms import abdomen_ct
    from medseg.models import build_network

    ph = abdomen_ct(shape=(32, 28, 12), spacing=(1.5, 1.5, 2.0), orientation="LPS", seed=2)
    write_dicom_series(ph.image, ph.affine, tmp_path / "dcm", modality="CT")
    spec = {"arch": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
            "strides": [2], "num_res_units": 0}
    torch.manual_seed(0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": build_network(spec).state_dict(), "epoch": 0}, run / "checkpoints" / "best.pt")
    (run / "model_spec.json").write_text(json.dumps({
        "network": spec, "preset": "ct_abdomen", "labels": {"1": "liver", "2": "spleen"}, "task": "semantic",
        "inference": {"roi_size": [16, 16, 16], "overlap": 0.25, "sw_batch_size": 2,
                      "postprocess": {"keep_largest_component": True}}}))
    proc = subprocess.run([sys.executable, "-m", "medseg", "segment", str(tmp_path / "dcm"), "--bundle", str(run),
                           "--output", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, env={**__import__("os").environ, "MEDSEG_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (case,) = (tmp_path / "out").iterdir()
    assert sorted(p.name for p in case.iterdir()) == ["overlay.png", "provenance.json", "seg.dcm", "seg.nii.gz"]
    seg = pydicom.dcmread(case / "seg.dcm")
    assert seg.Modality == "SEG" and seg.NumberOfFrames >= 1
    import nibabel as nib

    lab = nib.load(case / "seg.nii.gz")
    assert lab.shape[:3] == ph.image.shape and set(np.unique(np.asarray(lab.dataobj)).tolist()) <= {0, 1, 2}
