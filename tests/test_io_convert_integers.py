"""``medseg.io.convert`` of a DICOM series keeps an integer type when RescaleSlope/Intercept allow it
exactly (int16 for CT, as dcm2niix), else float32; the voxels equal SimpleITK's DICOM reader in
world coordinates either way, and ``medseg.io.load`` still gives float32."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medseg.data.dicom_writer import write_dicom_series
from medseg.io import convert, load


def _affine() -> np.ndarray:
    a = np.diag([-0.8, 0.7, 2.5, 1.0])  # L P S: x flipped, as a DICOM LPS series read into RAS
    a[:3, 3] = [40.0, -20.0, 10.0]
    return a


def _sitk_ras(folder) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's voxels (i, j, k) and voxel -> RAS affine of a DICOM series."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
    aff = np.eye(4)
    aff[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    aff[:3, 3] = img.GetOrigin()
    return arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def _world_equal(nii_path, folder) -> nib.Nifti1Image:
    """The NIfTI and SimpleITK's reading of the series hold the same values at the same world points."""
    nii = nib.load(nii_path)
    ref, ref_aff = _sitk_ras(folder)
    can, ref_can = nib.as_closest_canonical(nii), nib.as_closest_canonical(nib.Nifti1Image(ref, ref_aff))
    np.testing.assert_allclose(can.affine, ref_can.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(can.dataobj, dtype=np.float64),
                                  np.asarray(ref_can.dataobj, dtype=np.float64))
    return nii


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(-1024, 3000, size=(9, 7, 5)).astype(np.float32)


def test_integer_hu_series_converts_to_int16(volume, tmp_path):
    write_dicom_series(volume, _affine(), tmp_path / "ct", order="shuffled")
    convert(tmp_path / "ct", tmp_path / "ct.nii")
    nii = _world_equal(tmp_path / "ct.nii", tmp_path / "ct")
    assert nii.get_data_dtype() == np.int16
    tensor = load(tmp_path / "ct")
    assert str(tensor.dtype) == "torch.float32"  # the in-memory form stays float32, same values
    np.testing.assert_array_equal(np.asarray(nii.dataobj), tensor.numpy()[0])
    assert sorted(np.unique(np.asarray(nii.dataobj))) == sorted(np.unique(volume))


def test_integer_intercept_keeps_an_exact_integer_type(volume, tmp_path):
    """Stored values 0..4023 (12 bits) with intercept -1024, as many scanners write CT."""
    stored = volume + 1024
    write_dicom_series(stored, _affine(), tmp_path / "ct", extra_tags={"RescaleIntercept": "-1024", "BitsStored": 12, "PixelRepresentation": 0,
                                                                         "HighBit": 11})
    assert int(pydicom.dcmread(next((tmp_path / "ct").iterdir())).RescaleIntercept) == -1024
    convert(tmp_path / "ct", tmp_path / "ct.nii.gz")
    nii = _world_equal(tmp_path / "ct.nii.gz", tmp_path / "ct")
    assert nii.get_data_dtype() == np.int16  # 12 stored bits - 1024 fit int16
    np.testing.assert_array_equal(np.sort(np.asarray(nii.dataobj), axis=None), np.sort(volume, axis=None))


def test_fractional_slope_converts_to_float32(tmp_path):
    vol = np.linspace(-1000.5, 2000.25, 9 * 7 * 5, dtype=np.float32).reshape(9, 7, 5)
    write_dicom_series(vol, _affine(), tmp_path / "ct")  # non-integer HU: stored with a fractional slope
    assert float(pydicom.dcmread(next((tmp_path / "ct").iterdir())).RescaleSlope) % 1 != 0
    convert(tmp_path / "ct", tmp_path / "ct.nii")
    nii = nib.load(tmp_path / "ct.nii")
    assert nii.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(nii.dataobj), load(tmp_path / "ct").numpy()[0])
    ref, _ = _sitk_ras(tmp_path / "ct")
    np.testing.assert_allclose(np.asarray(nii.dataobj), ref, atol=1e-3 * float(np.abs(ref).max()))
