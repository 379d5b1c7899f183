"""Start-up by structure: the commands that run no network (info, convert, evaluate, report, bundle
list, a wrong model name) import neither torch nor MONAI, checked in a fresh process that runs them
one after the other (``sys.modules`` after each ``medseg.cli.main`` returns, so the first command
that imports them is named); and segment, which does import MONAI, imports
all of it (no module hidden from it), so MONAI's optional features still work afterwards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

DRIVER = r"""
import json, sys
from medseg import cli
code = cli.main(sys.argv[1:])
heavy = [m for m in ("torch", "monai", "ignite") if m in sys.modules]
sys.stderr.write("\nIMPORTED " + json.dumps({"code": code, "heavy": heavy}) + "\n")
"""


DRIVER_MANY = r"""
import json, sys
from medseg import cli
for argv in json.loads(sys.argv[1]):
    code = cli.main(argv)
    heavy = [m for m in ("torch", "monai", "ignite") if m in sys.modules]
    sys.stderr.write("\nIMPORTED " + json.dumps({"argv": argv, "code": code, "heavy": heavy}) + "\n")
"""


def _run_cli(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MEDSEG_PROGRESS": "0"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("IMPORTED ")]
    assert lines, proc.stderr[-2000:]
    return {**json.loads(lines[-1][len("IMPORTED "):]), "stderr": proc.stderr}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A real CT (TotalSegmentator's 122x101x30 NIfTI), a DICOM series of it, label maps and an
    evaluate output folder."""
    from medseg.data import sample
    from medseg.data.dicom_writer import write_dicom_series

    root = tmp_path_factory.mktemp("startup")
    ct = sample("ts_ct_sm")
    img = nib.load(ct)
    write_dicom_series(np.asarray(img.dataobj)[:, :, :8], img.affine, root / "dicom")
    for side in ("pred", "ref"):
        (root / side).mkdir()
        lab = np.zeros(img.shape, np.uint8)
        lab[40:70, 30:60, 5:20] = 1
        if side == "pred":
            lab[40:45] = 0
        nib.save(nib.Nifti1Image(lab, img.affine), root / side / "case1.nii.gz")
    return root, ct


COMMANDS = {
    "info nifti": lambda r, ct: ["info", str(ct)],
    "info dicom": lambda r, ct: ["info", str(r / "dicom"), "--json"],
    "convert nifti": lambda r, ct: ["convert", str(ct), str(r / "out_ct.nii.gz")],
    "convert dicom": lambda r, ct: ["convert", str(r / "dicom"), str(r / "out_dicom.nii")],
    "evaluate": lambda r, ct: ["evaluate", str(r / "pred"), str(r / "ref"), "-o", str(r / "eval")],
    "report": lambda r, ct: ["report", str(r / "eval")],
    "bundle list": lambda r, ct: ["bundle", "list"],
    "bundle verify wrong name": lambda r, ct: ["bundle", "verify", "no_such_bundle"],
    "segment wrong name": lambda r, ct: ["segment", str(ct), "--model", "no_such_bundle", "--output", str(r / "seg")],
}
FAILING = {"bundle verify wrong name", "segment wrong name"}


def test_commands_without_a_network_import_neither_torch_nor_monai(inputs):
    root, ct = inputs
    argvs = [COMMANDS[name](root, ct) for name in COMMANDS]
    proc = subprocess.run([sys.executable, "-c", DRIVER_MANY, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "MEDSEG_PROGRESS": "0"})
    results = [json.loads(ln[len("IMPORTED "):]) for ln in proc.stderr.splitlines() if ln.startswith("IMPORTED ")]
    assert len(results) == len(COMMANDS), proc.stderr[-3000:]
    for name, res in zip(COMMANDS, results, strict=True):
        assert res["code"] == (2 if name in FAILING else 0), (name, proc.stderr[-3000:])
        assert res["heavy"] == [], f"{name} imported {res['heavy']}"  # cumulative: the first one to import
    assert proc.stderr.count("no_such_bundle") >= 2 and "Traceback" not in proc.stderr
    assert (root / "eval" / "report.html").is_file() and (root / "out_dicom.nii").is_file()


def test_convert_output_matches_the_source_in_world_space(inputs):
    """What the light path wrote is the source: the NIfTI unchanged, the DICOM series as int16."""
    root, ct = inputs
    for name in ("convert nifti", "convert dicom"):
        out = root / ("out_ct.nii.gz" if name == "convert nifti" else "out_dicom.nii")
        if not out.exists():
            assert _run_cli(*COMMANDS[name](root, ct))["code"] == 0
    src, out = nib.load(ct), nib.load(root / "out_ct.nii.gz")
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(src.dataobj))
    dcm = nib.as_closest_canonical(nib.load(root / "out_dicom.nii"))
    part = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(src.dataobj)[:, :, :8], src.affine))
    assert dcm.get_data_dtype() == np.int16
    np.testing.assert_allclose(dcm.affine, part.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(dcm.dataobj), np.round(np.asarray(part.dataobj)))


def test_segment_cli_in_a_fresh_process_reads_dicom_and_writes_every_format(tmp_path):
    """A DICOM study in, NIfTI + DICOM SEG + PNG out, in a fresh process (as users run it); MONAI
    is imported whole, so its optional features (scikit-image behind KeepLargestConnectedComponent)
    work in the same process afterwards."""
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
    after = ("import torch; from monai.transforms import KeepLargestConnectedComponent as K; "
             "x = torch.zeros(1, 6, 6, 6); x[0, :2] = 1; x[0, 4:, :3] = 1; "
             "print('LARGEST', int(K(applied_labels=[1])(x).sum()))")
    driver = DRIVER + after
    proc = subprocess.run([sys.executable, "-c", driver, "segment", str(tmp_path / "dcm"), "--bundle", str(run),
                           "--output", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, env={**os.environ, "MEDSEG_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"code": 0' in proc.stderr, proc.stderr[-2000:]
    assert "LARGEST 72" in proc.stdout  # the 72-voxel slab kept, the 36-voxel one dropped
    noise = [ln for ln in proc.stderr.splitlines() if re.search(r"INFO|FutureWarning|DeprecationWarning|deprecat", ln)]
    assert noise == []  # quiet without --verbose: no MONAI INFO line, no torch/MONAI deprecation note
    (case,) = (tmp_path / "out").iterdir()
    assert sorted(p.name for p in case.iterdir()) == ["overlay.png", "provenance.json", "seg.dcm", "seg.nii.gz"]
    seg = pydicom.dcmread(case / "seg.dcm")
    assert seg.Modality == "SEG" and seg.NumberOfFrames >= 1
    lab = nib.load(case / "seg.nii.gz")
    assert lab.shape[:3] == ph.image.shape and set(np.unique(np.asarray(lab.dataobj)).tolist()) <= {0, 1, 2}
