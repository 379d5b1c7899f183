"""`medseg batch` end to end: folder and PACS sources (a real Orthanc over DICOMweb and DIMSE),
SEG stored back exactly once, resume, failure isolation, torchrun sharding, no patient data.

The model is a hand-set 1x1 convolution (an HU band around liver intensity) saved as a real
training run folder, so the whole pipeline (read, preset, sliding window, inverse, writers) runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medseg import cli
from medseg.batch.local_orthanc import LocalOrthanc, orthanc_available
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import abdomen_ct
from medseg.inference import SegmentationModel
from medseg.models import build_network

CANARY_NAME, CANARY_ID = "CANARY^SECRETNAME", "CANARYID777"
SHAPE, SPACING = (40, 40, 16), (6.0, 6.0, 12.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_band_run(tmp_path_factory.mktemp("run"), (48, 48, 16))


def make_band_run(run: Path, roi_size: tuple[int, int, int]) -> Path:
    """A training-run folder holding a band model (40..90 HU -> label 1 'liver')."""
    spec = {"arch": "conv", "spatial_dims": 3, "in_channels": 1, "out_channels": 3}
    net = build_network(spec)
    lo, hi = ((v + 160.0) / 400.0 for v in (40.0, 90.0))  # ct_abdomen window -160..240 HU
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[0, 0], net.bias[0] = -200.0, 200.0 * lo
        net.weight[2, 0], net.bias[2] = 200.0, -200.0 * hi
    model = SegmentationModel(network=net, network_spec=spec, preset="ct_abdomen", labels={1: "liver"},
                              roi_size=roi_size, preset_overrides={"target_spacing": None})
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": net.state_dict(), "epoch": 1, "optimizer": {}}, run / "checkpoints" / "best.pt")
    (run / "model_spec.json").write_text(json.dumps(model.to_spec()))
    return run


def _write_series(root: Path, seed: int, orientation: str = "LPS") -> list[Path]:
    ph = abdomen_ct(shape=SHAPE, spacing=SPACING, orientation=orientation, seed=seed)
    return write_dicom_series(ph.image, ph.affine, root, modality="CT", series_description=f"phantom {seed}",
                              patient_name=CANARY_NAME, patient_id=CANARY_ID, order="shuffled", seed=seed)


def _no_phi(paths: list[Path], text: str = "") -> None:
    for needle in ("CANARY", "SECRETNAME", CANARY_ID):
        assert needle not in text
        for p in paths:
            assert needle not in str(p)
            if p.is_file() and p.suffix != ".dcm":  # a SEG must carry the patient module; nothing else may
                assert needle.encode() not in p.read_bytes(), p


def _manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def test_folder_batch_isolates_failures_resumes_and_leaks_no_patient_data(run_dir, tmp_path, capsys):
    src = tmp_path / "in"
    _write_series(src / "study_a", seed=1)
    _write_series(src / "study_b", seed=2, orientation="RAS")
    (src / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    out = tmp_path / "out"
    code = cli.main(["batch", str(src), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti,dicom-seg,png"])
    captured = capsys.readouterr()
    assert code == 3  # finished, with one failed case
    records = {r["case"]: r for r in _manifest(out)}
    assert sorted(r["status"] for r in records.values()) == ["done", "done", "failed"]
    assert "broken" in records and records["broken"]["status"] == "failed" and records["broken"]["reason"]
    for r in records.values():
        if r["status"] == "done":
            case = out / r["case"]
            assert {"seg.nii.gz", "seg.dcm", "overlay.png", "provenance.json"} <= {p.name for p in case.iterdir()}
            seg = pydicom.dcmread(case / "seg.dcm")
            assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel
    _no_phi(list(out.rglob("*")), captured.out + captured.err)

    code = cli.main(["batch", str(src), "--bundle", str(run_dir), "--output", str(out)])
    assert code == 3
    journal = [json.loads(x) for x in (out / "manifest.rank0.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "done" for r in journal) == 2  # done cases were not redone


@pytest.mark.orthanc
@pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc/orthanc-dicomweb not installed")
@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_pacs_batch_stores_each_seg_once(run_dir, tmp_path, monkeypatch, capsys, protocol):
    with LocalOrthanc() as pacs:
        series_files = {}
        for seed in (3, 4):
            files = _write_series(tmp_path / f"s{seed}", seed=seed)
            pacs.upload(files)
            series_files[pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID] = files
        monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
        host, port, aet = pacs.dimse
        source = pacs.dicomweb_url if protocol == "dicomweb" else f"dimse://{aet}@{host}:{port}"
        out = tmp_path / "out"
        args = ["batch", source, "--bundle", str(run_dir), "--output", str(out), "--store-back", "--retries", "0"]

        if protocol == "dicomweb":  # without credentials the PACS refuses, and medseg says so in one line
            monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
            assert cli.main(args) == 2
            err = capsys.readouterr().err
            assert "HTTP 401" in err and err.count("\n") == 1
        monkeypatch.setenv("MEDSEG_PACS_USER", pacs.user)
        monkeypatch.setenv("MEDSEG_PACS_PASSWORD", pacs.password)

        assert cli.main(args) == 0
        segs = pacs.instances_of_modality("SEG")
        assert len(segs) == 2
        for case in (out / r["case"] for r in _manifest(out)):
            seg = pydicom.dcmread(case / "seg.dcm")
            referenced = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
            sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series_files[referenced]}
            assert {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= sops
        n_instances = pacs.rest("GET", "/statistics")["CountInstances"]

        assert cli.main(args) == 0  # resume: everything is done, nothing is sent
        assert pacs.rest("GET", "/statistics")["CountInstances"] == n_instances
        assert cli.main([*args, "--no-resume"]) == 0  # redo all: the same SEG instances, found on the PACS
        assert len(pacs.instances_of_modality("SEG")) == 2
        assert pacs.rest("GET", "/statistics")["CountInstances"] == n_instances
        assert {r["extra"]["stored"] for r in _manifest(out)} == {"already on the PACS"}
        _no_phi(list(out.rglob("*")), capsys.readouterr().out)


def test_torchrun_two_ranks_process_each_case_exactly_once(run_dir, tmp_path):
    src = tmp_path / "in"
    for seed in (5, 6, 7):
        _write_series(src / f"s{seed}", seed=seed)
    out = tmp_path / "out"
    env = {**os.environ, "MEDSEG_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    from medseg.batch.local_orthanc import free_port

    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "medseg",
         "batch", str(src), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "       3        0        0" in proc.stdout  # rank 0 prints the job totals, not its shard's
    records = _manifest(out)
    assert len(records) == 3 and {r["status"] for r in records} == {"done"}
    assert len({r["case"] for r in records}) == 3
    assert {r["rank"] for r in records} == {0, 1}  # both ranks worked
    per_rank = [len((out / f"manifest.rank{r}.jsonl").read_text().splitlines()) for r in (0, 1)]
    assert sorted(per_rank) == [1, 2]
    assert all((out / r["case"] / "seg.nii.gz").is_file() for r in records)
    assert np.isfinite([r["timings_s"]["total"] for r in records]).all()


@pytest.mark.orthanc
@pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc/orthanc-dicomweb not installed")
def test_review_then_send_stores_each_seg_once_without_segmenting_again(run_dir, tmp_path, monkeypatch, capsys):
    """A run without --store-back (results reviewed first), then the same command with --store-back
    into the same folder: every SEG reaches the PACS exactly once, and nothing is segmented again."""
    from medseg.batch.job import store_results
    from medseg.batch.pacs import DicomWebClient

    series = {seed: _write_series(tmp_path / f"s{seed}", seed=seed) for seed in (5, 6)}
    with LocalOrthanc() as pacs:
        for files in series.values():
            pacs.upload(files)
        monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
        monkeypatch.setenv("MEDSEG_PACS_USER", pacs.user)
        monkeypatch.setenv("MEDSEG_PACS_PASSWORD", pacs.password)
        out = tmp_path / "out"
        base = ["batch", pacs.dicomweb_url, "--bundle", str(run_dir), "--output", str(out), "--retries", "0"]
        assert cli.main(base) == 0  # review first: nothing is sent
        assert pacs.instances_of_modality("SEG") == []
        segs = sorted(out.glob("*/seg.nii.gz"))
        stamps = {p: p.stat().st_mtime_ns for p in segs}
        capsys.readouterr()

        assert cli.main([*base, "--store-back"]) == 0
        text = capsys.readouterr().out
        assert "DICOM SEG store-back: 2 stored, 0 already on the PACS, 0 not sent" in text, text
        assert len(pacs.instances_of_modality("SEG")) == 2
        assert {p: p.stat().st_mtime_ns for p in sorted(out.glob("*/seg.nii.gz"))} == stamps  # not redone
        assert {r["extra"]["stored"] for r in _manifest(out)} == {"stored"}
        n_instances = pacs.rest("GET", "/statistics")["CountInstances"]

        assert cli.main([*base, "--store-back"]) == 0  # all stored: nothing to do, nothing sent
        assert "store-back" not in capsys.readouterr().out
        assert pacs.rest("GET", "/statistics")["CountInstances"] == n_instances

    with LocalOrthanc() as pacs:  # a fresh PACS: review, reject one case, send the rest
        for files in series.values():
            pacs.upload(files)
        monkeypatch.setenv("MEDSEG_PACS_USER", pacs.user)
        monkeypatch.setenv("MEDSEG_PACS_PASSWORD", pacs.password)
        out2 = tmp_path / "out2"
        assert cli.main(["batch", pacs.dicomweb_url, "--bundle", str(run_dir), "--output", str(out2)]) == 0
        rejected = sorted(out2.glob("*/seg.dcm"))[0]
        rejected.unlink()
        capsys.readouterr()
        # no model: send what the reviewed folder holds; exit 3 because one SEG was not sent
        assert cli.main(["batch", pacs.dicomweb_url, "--output", str(out2), "--store-only"]) == 3
        text = capsys.readouterr().out
        assert "DICOM SEG store-back: 1 stored, 0 already on the PACS, 1 not sent" in text, text
        assert f"{rejected.parent.name}: not sent: no seg.dcm in the case folder (removed at review?)" in text
        assert len(pacs.instances_of_modality("SEG")) == 1
        again = store_results(out2, DicomWebClient(pacs.dicomweb_url, auth=pacs.auth))
        assert again.skipped == 1 and again.stores == {"not sent": 1}  # the stored one is not sent twice
        assert len(pacs.instances_of_modality("SEG")) == 1
