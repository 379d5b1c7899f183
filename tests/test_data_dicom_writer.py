"""The DICOM phantom writer: objects valid per dciodvfy (dicom3tools), header geometry equal to
the affine (read back with pydicom, not with medseg's reader), stored values round-trip through
pydicom's decoder, file orders and InstanceNumbers as asked."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from medseg.data.dicom_writer import write_dicom_series, write_dicom_xray
from medseg.errors import ConfigError, InputError

DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools (dciodvfy) not installed")


def _dciodvfy_errors(path) -> list[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def _oblique_affine() -> np.ndarray:
    c, s = np.cos(np.radians(28)), np.sin(np.radians(28))
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.diag([-1.0, -1.0, 1.0])
    a = np.eye(4)
    a[:3, :3] = rot * [0.6, 0.75, 3.0]
    a[:3, 3] = [-20.0, 15.0, 100.0]
    return a


@needs_dciodvfy
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_series_passes_dciodvfy(tmp_path, modality):
    vol = np.random.default_rng(0).integers(-1000, 1500 if modality == "CT" else 0, (8, 6, 3))
    if modality == "MR":
        vol = np.abs(vol)
    files = write_dicom_series(vol.astype(np.float32), _oblique_affine(), tmp_path, modality=modality)
    for f in files:
        assert _dciodvfy_errors(f) == [], f


@needs_dciodvfy
@pytest.mark.parametrize("modality,photometric,tag", [
    ("DX", "MONOCHROME2", "PixelSpacing"), ("DX", "MONOCHROME1", "ImagerPixelSpacing"),
    ("CR", "MONOCHROME1", "PixelSpacing"), ("CR", "MONOCHROME2", "ImagerPixelSpacing")])
def test_xray_passes_dciodvfy(tmp_path, modality, photometric, tag):
    img = np.random.default_rng(1).integers(0, 4000, (30, 20))
    out = write_dicom_xray(img, (0.2, 0.25), tmp_path / "x.dcm", modality=modality,
                           photometric=photometric, spacing_tag=tag, magnification=1.1)
    assert _dciodvfy_errors(out) == []


def test_header_geometry_equals_affine_in_lps(tmp_path):
    affine = _oblique_affine()
    vol = np.random.default_rng(2).normal(0, 300, (9, 7, 5)).astype(np.float32)
    files = write_dicom_series(vol, affine, tmp_path)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], lps[:, 3] + k * lps[:, 2],
                                   atol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   [*(lps[:, 0] / spacing[0]), *(lps[:, 1] / spacing[1])], atol=1e-8)
        # PixelSpacing = [between rows (along j), between columns (along i)].
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [spacing[1], spacing[0]])
        assert float(ds.SliceThickness) == pytest.approx(spacing[2])
        assert (ds.Rows, ds.Columns) == (7, 9)
        # Stored values through pydicom's decoder and the rescale give back HU (within one step).
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(hu, vol[:, :, k].T, atol=float(ds.RescaleSlope))
        assert ds.PatientName == "PHANTOM^ANON" and "PHANTOM" not in f.name


def test_patient_data_never_in_file_names(tmp_path):
    files = write_dicom_series(np.zeros((4, 4, 3)), np.eye(4), tmp_path, patient_name="SMITH^JOHN",
                               patient_id="MRN12345", order="shuffled")
    for f in files:
        assert "SMITH" not in str(f) and "MRN12345" not in str(f)
        assert pydicom.dcmread(f).PatientID == "MRN12345"


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
def test_orders_of_files_and_instance_numbers(tmp_path, order):
    n = 8
    files = write_dicom_series(np.zeros((4, 4, n)), np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path, order=order, seed=4)
    names = [int(f.stem) for f in files]  # file index holding slice k
    numbers = [int(pydicom.dcmread(f).InstanceNumber) for f in files]
    if order == "sorted":
        assert names == list(range(n)) and numbers == list(range(1, n + 1))
    elif order == "reversed":
        assert names == list(range(n))[::-1] and numbers == list(range(n, 0, -1))
    else:
        assert sorted(names) == list(range(n)) and sorted(numbers) == list(range(1, n + 1))
        assert names not in (sorted(names), sorted(names, reverse=True))
        assert numbers not in (sorted(numbers), sorted(numbers, reverse=True))
        assert names != [v - 1 for v in numbers]
    uids = {pydicom.dcmread(f).SeriesInstanceUID for f in files}
    assert len(uids) == 1


def test_given_uids_and_extra_tags_are_written(tmp_path):
    files = write_dicom_series(np.zeros((3, 3, 2)), np.eye(4), tmp_path, study_instance_uid="1.2.3.4",
                               series_instance_uid="1.2.3.4.5", frame_of_reference_uid="1.2.3.4.6",
                               series_description="venous", extra_tags={"BodyPartExamined": "ABDOMEN"})
    ds = pydicom.dcmread(files[1])
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) == ("1.2.3.4", "1.2.3.4.5",
                                                                                  "1.2.3.4.6")
    assert ds.SeriesDescription == "venous" and ds.BodyPartExamined == "ABDOMEN"


def test_xray_monochrome1_and_spacing_tags(tmp_path):
    img = np.random.default_rng(3).integers(0, 4000, (25, 18))
    out = write_dicom_xray(img, (0.2, 0.3), tmp_path / "cr.dcm", modality="CR", photometric="MONOCHROME1",
                           spacing_tag="ImagerPixelSpacing", magnification=1.2)
    ds = pydicom.dcmread(out)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and "PixelSpacing" not in ds
    np.testing.assert_allclose([float(v) for v in ds.ImagerPixelSpacing], [0.3, 0.2])
    assert float(ds.EstimatedRadiographicMagnificationFactor) == pytest.approx(1.2)
    top = (1 << int(ds.BitsStored)) - 1
    np.testing.assert_array_equal(top - ds.pixel_array.astype(int), img.T)
    assert "ImagePositionPatient" not in ds and "ImageOrientationPatient" not in ds


def test_bad_arguments_raise_typed_errors(tmp_path):
    with pytest.raises(ConfigError):
        write_dicom_series(np.zeros((2, 2, 2)), np.eye(4), tmp_path, order="random")
    with pytest.raises(ConfigError):
        write_dicom_series(np.zeros((2, 2, 2)), np.eye(4), tmp_path, modality="PT")
    with pytest.raises(InputError):
        write_dicom_series(np.zeros((2, 2)), np.eye(4), tmp_path)
    with pytest.raises(InputError):
        write_dicom_series(np.full((2, 2, 2), np.nan), np.eye(4), tmp_path)
    with pytest.raises(InputError):
        write_dicom_xray(np.full((4, 4), -5), 1.0, tmp_path / "x.dcm")
    assert list(tmp_path.iterdir()) == []


def test_a_second_series_into_the_same_folder_is_refused(tmp_path):
    from medseg.errors import ConfigError

    vol = np.zeros((8, 8, 4), np.float32)
    first = write_dicom_series(vol, np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "s")
    before = {p.name: p.read_bytes() for p in first}
    with pytest.raises(ConfigError, match="own"):
        write_dicom_series(vol + 100, np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "s")
    assert {p.name: p.read_bytes() for p in first} == before  # the first series is untouched
