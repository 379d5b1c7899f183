"""`medseg segment` end to end on a NIfTI and on a DICOM phantom series (real files), and its failures.

Geometry of the written seg.nii.gz is checked against nibabel (NIfTI input) and against
SimpleITK's reading of the DICOM series; seg.dcm is read back with highdicom."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg import cli
from medseg.data.phantoms import save_phantom, spine_ct
from medseg.models import build_network

PATIENT_STRINGS = ("PHANTOM^ANON", "PHANTOM0001")  # what the DICOM writer puts in PatientName / ID


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training run folder holding a hand-set bone-threshold model (> 300 HU -> vertebrae)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    (run / "checkpoints").mkdir(parents=True)
    spec = {"arch": "conv", "spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    net = build_network(spec)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 50.0
        net.bias[1] = -50.0 * (300.0 + 200.0) / 1400.0  # ct_spine window -200..1200 HU
    torch.save({"state_dict": net.state_dict(), "epoch": 1}, run / "checkpoints" / "best.pt")
    (run / "model_spec.json").write_text(json.dumps({
        "name": "bone-threshold", "network": spec, "preset": "ct_spine", "labels": {"1": "vertebrae"},
        "inference": {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 2,
                      "preset_overrides": {"target_spacing": [2.0, 2.0, 2.0]}},
        "task": "semantic"}))
    return run


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    ph = spine_ct(shape=(32, 32, 24), spacing=(2.0, 2.0, 3.0), orientation="LPS", seed=6)
    root = tmp_path_factory.mktemp("phantom")
    save_phantom(ph, root / "nii", "nifti")
    save_phantom(ph, root / "dcm", "dicom")
    return ph, root


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from monai.metrics import compute_dice

    return float(compute_dice(torch.from_numpy(a[None, None].astype(np.float32)),
                              torch.from_numpy(b[None, None].astype(np.float32)), include_background=True))


def test_segment_nifti(run_dir, phantom_files, tmp_path, capsys):
    ph, root = phantom_files
    src = root / "nii" / "image.nii.gz"
    assert cli.main(["segment", str(src), "--bundle", str(run_dir), "--output", str(tmp_path / "out")]) == 0
    case = tmp_path / "out" / "image"
    assert capsys.readouterr().out.strip() == str(case)
    assert sorted(p.name for p in case.iterdir()) == ["overlay.png", "provenance.json", "seg.nii.gz"]
    seg = nib.load(case / "seg.nii.gz")
    ref = nib.load(src)
    assert seg.shape == ref.shape
    np.testing.assert_allclose(seg.affine, ref.affine, atol=1e-5)
    assert np.issubdtype(seg.get_data_dtype(), np.integer)
    truth = np.asarray(nib.load(root / "nii" / "label.nii.gz").dataobj) > 0
    assert _dice(np.asarray(seg.dataobj) == 1, truth) >= 0.9
    prov = json.loads((case / "provenance.json").read_text())
    assert prov["input"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert prov["model"]["weights_sha256"] == hashlib.sha256(
        (run_dir / "checkpoints" / "best.pt").read_bytes()).hexdigest()
    assert prov["output"]["skipped"] == {
        "dicom-seg": "a DICOM SEG needs a 3D DICOM series as input, this input is nifti"}
    assert set(prov["timings_s"]) >= {"load_input", "preprocess", "inference", "postprocess", "invert", "write"}
    assert prov["versions"]["torch"] == torch.__version__
    from PIL import Image

    with Image.open(case / "overlay.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_segment_dicom_series(run_dir, phantom_files, tmp_path):
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk

    ph, root = phantom_files
    series_dir = root / "dcm" / "image"
    out = tmp_path / "out"
    assert cli.main(["segment", str(series_dir), "--bundle", str(run_dir), "--output", str(out), "--tta"]) == 0
    (case,) = list(out.iterdir())
    first = pydicom.dcmread(sorted(series_dir.iterdir())[0], stop_before_pixels=True)
    assert case.name == f"series-{first.SeriesInstanceUID}"
    assert sorted(p.name for p in case.iterdir()) == ["overlay.png", "provenance.json", "seg.dcm", "seg.nii.gz"]
    # geometry of seg.nii.gz against SimpleITK's reading of the series (LPS -> RAS)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    img = reader.Execute()
    seg = nib.load(case / "seg.nii.gz")
    assert seg.shape == img.GetSize()
    for idx in [(0, 0, 0), (31, 0, 0), (0, 31, 23), (31, 31, 23)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(idx))
        ras = lps * np.array([-1.0, -1.0, 1.0])
        np.testing.assert_allclose(nib.affines.apply_affine(seg.affine, idx), ras, atol=1e-3)
    truth = np.asarray(nib.load(root / "dcm" / "label.nii.gz").dataobj) > 0
    assert _dice(np.asarray(seg.dataobj) == 1, truth) >= 0.9
    # DICOM SEG read back by highdicom, referencing the source series
    sdcm = hd.seg.segread(case / "seg.dcm")
    assert sdcm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert sdcm.number_of_segments == 1
    assert sdcm.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    prov_text = (case / "provenance.json").read_text()
    prov = json.loads(prov_text)
    assert prov["input"]["hash_of"] == "sorted SOP Instance UIDs"
    uids = sorted(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series_dir.iterdir())
    assert prov["input"]["sha256"] == hashlib.sha256("\n".join(uids).encode()).hexdigest()
    assert prov["tta"] is True and prov["tta_disagreement"] == 0.0
    for secret in PATIENT_STRINGS:
        assert secret not in prov_text and secret not in case.name


def test_bad_input_exit_2_and_no_case_folder(run_dir, tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all" * 10)
    out = tmp_path / "out"
    assert cli.main(["segment", str(bad), "--bundle", str(run_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medseg: error:") and err.count("\n") == 1
    assert not out.exists() or list(out.iterdir()) == []


def test_existing_case_unknown_format_and_missing_model(run_dir, phantom_files, tmp_path, capsys):
    _, root = phantom_files
    src = root / "nii" / "image.nii.gz"
    out = tmp_path / "out"
    (out / "image").mkdir(parents=True)
    assert cli.main(["segment", str(src), "--bundle", str(run_dir), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert list((out / "image").iterdir()) == []
    assert cli.main(["segment", str(src), "--bundle", str(run_dir), "--output", str(out), "--format", "jpeg"]) == 2
    assert "unknown output format" in capsys.readouterr().err
    assert cli.main(["segment", str(src), "--bundle", str(tmp_path / "nope"), "--output", str(out)]) == 2
    assert capsys.readouterr().err.startswith("medseg: error:")
