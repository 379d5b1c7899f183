"""``--format rtstruct`` end to end: ``medseg segment`` writes an RT structure set whose contours,
placed with SimpleITK's geometry of the source series, give back the NIfTI label map it wrote
(read by nibabel) in world coordinates; ``medseg batch --store-back`` sends it to a real Orthanc
once (a rerun, and a --no-resume rerun, send nothing), and what Orthanc returns is that object."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from test_batch_job import _write_series, make_band_run
from test_io_dicom_rtstruct import _dice, _rasterise_with_sitk, _to_sitk_grid

from medseg import cli
from medseg.batch.local_orthanc import LocalOrthanc, orthanc_available


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_band_run(tmp_path_factory.mktemp("run"), (48, 48, 16))


def test_segment_writes_an_rtstruct_matching_its_nifti(run_dir, tmp_path, capsys):
    files = _write_series(tmp_path / "ct", seed=8, orientation="RAS")
    out = tmp_path / "out"
    assert cli.main(["segment", str(tmp_path / "ct"), "--model", str(run_dir), "--output", str(out),
                     "--format", "nifti,rtstruct"]) == 0
    case = next(out.iterdir())
    assert sorted(p.name for p in case.iterdir()) == ["provenance.json", "rtstruct.dcm", "seg.nii.gz"]
    prov = json.loads((case / "provenance.json").read_text())
    assert prov["output"]["files"] == ["seg.nii.gz", "rtstruct.dcm"] and prov["output"]["skipped"] == {}
    ds = pydicom.dcmread(case / "rtstruct.dcm")
    src = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.StructureSetROISequence[0].ROIName == "Liver"
    nii = nib.load(case / "seg.nii.gz")
    lab = np.asarray(nii.dataobj) == 1
    assert lab.sum() > 100
    mask, img = _rasterise_with_sitk(tmp_path / "ct", case / "rtstruct.dcm", 1)
    truth = _to_sitk_grid(lab.astype(np.uint8), nii.affine, img).astype(bool)
    assert _dice(mask, truth) >= 0.95
    if shutil.which("dciodvfy"):
        proc = subprocess.run(["dciodvfy", str(case / "rtstruct.dcm")], capture_output=True, text=True, timeout=120)
        assert not [x for x in proc.stderr.splitlines() if x.startswith("Error")]


def test_segment_of_a_nifti_says_why_no_rtstruct(run_dir, tmp_path, capsys):
    from medseg.data.phantoms import abdomen_ct
    from medseg.io.write import save

    ph = abdomen_ct(shape=(40, 40, 16), spacing=(6.0, 6.0, 12.0), seed=1)
    import torch

    save(torch.from_numpy(ph.image)[None], tmp_path / "ct.nii.gz", affine=ph.affine)
    capsys.readouterr()
    assert cli.main(["segment", str(tmp_path / "ct.nii.gz"), "--model", str(run_dir), "--output",
                     str(tmp_path / "out"), "--format", "nifti,rtstruct"]) == 0
    err = capsys.readouterr().err
    assert "no RT structure set written: an RT structure set needs a 3D DICOM series as input, this input is nifti" in err
    assert not list((tmp_path / "out").rglob("rtstruct.dcm"))


@pytest.mark.orthanc
@pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc/orthanc-dicomweb not installed")
def test_batch_store_back_sends_each_rtstruct_once(run_dir, tmp_path, monkeypatch):
    with LocalOrthanc() as pacs:
        for seed in (3, 4):
            pacs.upload(_write_series(tmp_path / f"s{seed}", seed=seed))
        monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
        monkeypatch.setenv("MEDSEG_PACS_USER", pacs.user)
        monkeypatch.setenv("MEDSEG_PACS_PASSWORD", pacs.password)
        out = tmp_path / "out"
        args = ["batch", pacs.dicomweb_url, "--bundle", str(run_dir), "--output", str(out), "--store-back",
                "--retries", "0", "--format", "nifti,dicom-seg,rtstruct"]
        assert cli.main(args) == 0
        assert len(pacs.instances_of_modality("RTSTRUCT")) == 2
        assert len(pacs.instances_of_modality("SEG")) == 2
        n_instances = pacs.rest("GET", "/statistics")["CountInstances"]
        assert cli.main(args) == 0  # resume: nothing to do, nothing sent
        assert cli.main([*args, "--no-resume"]) == 0  # redone: the same instances, found on the PACS
        assert pacs.rest("GET", "/statistics")["CountInstances"] == n_instances
        assert len(pacs.instances_of_modality("RTSTRUCT")) == 2

        # retrieved from Orthanc: the very object in the case folder, referencing its CT series
        local = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in out.glob("*/rtstruct.dcm")}
        assert len(local) == 2
        for series in pacs.instances_of_modality("RTSTRUCT"):
            (instance,) = series["Instances"]
            got = pydicom.dcmread(io.BytesIO(pacs.rest("GET", f"/instances/{instance}/file")))
            mine = pydicom.dcmread(local[str(got.SOPInstanceUID)])
            assert got.ROIContourSequence[0].ContourSequence[0].ContourData == \
                mine.ROIContourSequence[0].ContourSequence[0].ContourData
            ref = got.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
            ct_series = ref.RTReferencedSeriesSequence[0].SeriesInstanceUID
            assert any(s["MainDicomTags"]["SeriesInstanceUID"] == ct_series for s in pacs.instances_of_modality("CT"))
        records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        assert {r["extra"]["stored"] for r in records} == {"already on the PACS"}
        assert all(r["extra"]["rtstruct_series_instance_uid"] for r in records)
