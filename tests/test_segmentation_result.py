"""segment_file returns a SegmentationResult: what it holds equals what it wrote, read back
independently (json, nibabel, pydicom); Provenance is the one schema of provenance.json."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from test_inference_segment import bone_model

from medseg.errors import InputError
from medseg.inference.pipeline import segment_file
from medseg.inference.result import Provenance, SegmentationResult


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory):
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantoms import spine_ct

    ph = spine_ct(shape=(40, 36, 20), spacing=(1.5, 1.5, 2.5), orientation="LPS", seed=3)
    root = tmp_path_factory.mktemp("series")
    write_dicom_series(ph.image, ph.affine, root / "dcm", modality="CT")
    return root / "dcm"


def test_result_equals_what_was_written(dicom_series, tmp_path):
    res = segment_file(dicom_series, bone_model(), tmp_path / "out", formats="nifti,dicom-seg", progress=False)
    assert isinstance(res, SegmentationResult) and res.path.is_dir() and res.case == res.path.name
    on_disk = json.loads((res.path / "provenance.json").read_text())
    assert on_disk == json.loads(res.provenance.dumps())
    assert Provenance.read(res.path / "provenance.json") == res.provenance
    assert sorted(res.files) == sorted(p.name for p in res.path.iterdir())
    nii = nib.load(str(res.labels_path))
    np.testing.assert_allclose(res.geometry.affine, nii.affine, atol=1e-5)
    assert res.geometry.shape == nii.shape and res.geometry.orientation == "".join(nib.aff2axcodes(nii.affine))
    np.testing.assert_array_equal(np.asarray(res.labels[0]), np.asarray(nii.dataobj))
    seg = pydicom.dcmread(res.path / "seg.dcm", stop_before_pixels=True)
    assert res.seg_uids == (seg.SeriesInstanceUID, seg.SOPInstanceUID)
    assert res.study_instance_uid == seg.StudyInstanceUID
    assert res.rtstruct_uids is None and res.skipped == {}
    assert set(res.timings_s) >= {"load_model", "load_input", "write"} and res.domain_flags == []


def test_result_of_a_nifti_input_says_why_no_seg(tmp_path):
    from medseg.data.phantoms import spine_ct
    from medseg.data.phantoms.writers import save_phantom

    src = save_phantom(spine_ct(shape=(32, 30, 16), seed=1), tmp_path / "spine") / "image.nii.gz"
    res = segment_file(src, bone_model(), tmp_path / "out", formats="nifti,dicom-seg", progress=False)
    assert res.seg_uids is None and "3D DICOM series" in res.skipped["dicom-seg"]
    on_disk = json.loads((res.path / "provenance.json").read_text())
    assert on_disk["output"]["skipped"] == res.skipped and res.study_instance_uid is None


def test_provenance_reader_refuses_bad_files(tmp_path):
    (tmp_path / "c").mkdir()
    p = tmp_path / "c" / "provenance.json"
    p.write_text(json.dumps({"medseg_version": "x"}))
    with pytest.raises(InputError, match="c/provenance.json lacks created_utc"):
        Provenance.read(p)
    good = {"medseg_version": "0", "created_utc": "t", "model": {}, "input": {}, "output": {"files": []},
            "device": "cpu", "tta": False, "tta_disagreement": None, "stitching": None, "timings_s": {"a": 1},
            "versions": {}}
    p.write_text(json.dumps({**good, "schema_version": 9}))
    with pytest.raises(InputError, match="schema_version 9"):
        Provenance.read(p)
    p.write_text(json.dumps({**good, "timings_s": {"a": "slow"}}))
    with pytest.raises(InputError, match="timings_s"):
        Provenance.read(p)
    p.write_text(json.dumps(good))
    assert Provenance.read(p).domain_flags == []


def test_label_map_meta_is_geometry_and_meaning_how_it_was_computed_is_the_record(dicom_series, tmp_path):
    """segment()'s label map carries its grid and what its values mean; device, TTA, stitching and
    timings come back in infer()'s InferenceRecord, and provenance.json records that record."""
    from medseg.inference import infer, segment
    from medseg.io import load

    image = load(dicom_series, progress=False)
    pred = infer(image, bone_model(), device="cpu", progress=False)
    side_channels = {"timings_s", "stitch", "device", "tta", "tta_disagreement", "model_name", "weights_sha256",
                     "preset"}
    assert not side_channels & set(pred.labels.meta)
    assert not side_channels & set(segment(image, bone_model(), device="cpu", progress=False).meta)
    np.testing.assert_allclose(np.asarray(pred.labels.affine), np.asarray(image.affine))
    np.testing.assert_allclose(pred.labels.meta["spacing"], np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0))
    assert pred.labels.meta["labels"] == bone_model().labels and pred.labels.meta["kind"] == "label"
    rec = pred.record
    assert rec.device == "cpu" and rec.tta is False and rec.tta_disagreement is None
    assert set(rec.timings_s) == {"preprocess", "inference", "postprocess", "invert"}
    assert rec.stitching["n_windows"] >= 1 and rec.stitching["fallbacks"] == []
    res = segment_file(dicom_series, bone_model(), tmp_path / "out", formats="nifti", device="cpu", progress=False)
    on_disk = json.loads((res.path / "provenance.json").read_text())
    assert on_disk["device"] == "cpu" and on_disk["stitching"] == rec.stitching
    assert set(on_disk["timings_s"]) >= set(rec.timings_s)
