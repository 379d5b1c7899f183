"""Real DICOM files (fetched through medseg.data, cached) read by read_dicom, compared with
SimpleITK (world coordinates, LPS converted to RAS) and with pydicom's own per-frame tags."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medseg.data import sample
from medseg.errors import GeometryError
from medseg.io.dicom import list_series, read_dicom, select_series

pytestmark = pytest.mark.network  # fetches into the cache on first use

LPS = np.array([-1.0, -1.0, 1.0])


def _sitk_affine_ras(img: sitk.Image) -> np.ndarray:
    """Voxel (x, y, z) -> RAS affine from SimpleITK's origin/direction/spacing (LPS)."""
    d = np.array(img.GetDirection()).reshape(3, 3)
    a = np.eye(4)
    a[:3, :3] = d * np.array(img.GetSpacing())
    a[:3, 3] = img.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a


def _compare_with_sitk(img, sitk_img: sitk.Image) -> None:
    """Every voxel of ``img`` lands where SimpleITK puts the same value (same world point)."""
    arr = sitk.GetArrayFromImage(sitk_img).astype(np.float32)  # (k, j, i)
    ref = np.transpose(arr, (2, 1, 0))
    ref_aff = _sitk_affine_ras(sitk_img)
    ours = img[0].numpy()
    assert ours.size == ref.size
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in ours.shape], indexing="ij")
    idx = np.stack([ii, jj, kk, np.ones_like(ii)], -1).reshape(-1, 4).astype(float)
    world = idx @ img.affine.numpy().T
    rel = np.rint(world @ np.linalg.inv(ref_aff).T).astype(int)[:, :3]
    np.testing.assert_allclose(ours.ravel(), ref[rel[:, 0], rel[:, 1], rel[:, 2]], atol=1e-3)


@pytest.mark.parametrize("name", ["ct_small", "mr_small", "mr_mr2"])
def test_single_slices_match_simpleitk(name):
    path = sample(name)
    img = read_dicom(path, progress=False)
    ref = sitk.ReadImage(str(path))
    assert img.shape[1:3] == ref.GetSize()[:2]
    ours = img.affine.numpy()
    theirs = _sitk_affine_ras(ref)
    # In-plane columns and origin must agree exactly; k is the normal times the slice spacing.
    np.testing.assert_allclose(ours[:3, :2], theirs[:3, :2], atol=1e-4)
    np.testing.assert_allclose(ours[:3, 3], theirs[:3, 3], atol=1e-4)
    _compare_with_sitk(img, ref)
    ds = pydicom.dcmread(path)
    assert img.meta["sop_instance_uids"] == [ds.SOPInstanceUID]
    assert img.meta["modality"] == ds.Modality
    if name == "ct_small":  # HU: stored * slope + intercept
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(img[0, :, :, 0].numpy(), hu.T)


def test_ct5n_series_matches_simpleitk_series_reader():
    folder = sample("ct5n_series")
    series = list_series(folder)
    assert len(series) == 1 and series[0].n_instances == 5
    img = read_dicom(folder, progress=False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    np.testing.assert_allclose(img.affine.numpy(), _sitk_affine_ras(ref), atol=1e-3)
    _compare_with_sitk(img, ref)
    np.testing.assert_allclose(img.meta["spacing"], ref.GetSpacing(), atol=1e-4)


def test_mr700_projections_are_refused_as_a_volume():
    # MR700 holds angiography projections at several angles: not one stack.
    folder = sample("mr700_series")
    with pytest.raises(GeometryError, match="mixed orientations"):
        read_dicom(folder, progress=False)


def test_enhanced_ct_frames_follow_per_frame_plane_positions():
    path = sample("enhanced_ct")
    img = read_dicom(path, progress=False)
    ds = pydicom.dcmread(path)
    n = int(ds.NumberOfFrames)
    assert img.shape[-1] == n
    aff = img.affine.numpy()
    frames = ds.pixel_array
    shared = ds.SharedFunctionalGroupsSequence[0]
    pvt = shared.PixelValueTransformationSequence[0]
    slope, intercept = float(pvt.RescaleSlope), float(pvt.RescaleIntercept)
    for k in range(n):
        f = img.meta["frame_numbers"][k] - 1
        ipp = np.array([float(v) for v in
                        ds.PerFrameFunctionalGroupsSequence[f].PlanePositionSequence[0].ImagePositionPatient])
        np.testing.assert_allclose((aff @ [0, 0, k, 1])[:3] * LPS, ipp, atol=1e-4)
        np.testing.assert_allclose(img[0, :, :, k].numpy(), frames[f].T * slope + intercept, atol=1e-3)
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    assert img.meta["spacing"][:2] == pytest.approx((spacing[1], spacing[0]))
    assert img.meta["sop_instance_uids"] == [ds.SOPInstanceUID] * n


def test_enhanced_mr_without_plane_positions_is_refused():
    # emri_small.dcm is an Enhanced MR whose functional groups were stripped: no frame geometry.
    with pytest.raises(GeometryError, match="PlanePositionSequence"):
        read_dicom(sample("enhanced_mr"), progress=False)


def test_cr_chest_monochrome1_inverted_and_blank_spacing_ignored(tmp_path):
    path = sample("cr_chest")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = read_dicom(path, progress=False)
    assert img.shape == (1, ds.Columns, ds.Rows)
    assert img.meta["photometric_original"] == "MONOCHROME1"
    top = (1 << int(ds.BitsStored)) - 1
    np.testing.assert_array_equal(img[0].numpy(), (top - ds.pixel_array.astype(np.float32)).T)
    # This anonymised file carries PixelSpacing 0\0: treated as absent, not as 0 mm.
    assert [float(v) for v in ds.PixelSpacing] == [0.0, 0.0]
    assert img.meta["spacing_source"] == "default" and img.meta["spacing"] == (1.0, 1.0)

    # The same radiograph with a detector spacing and a magnification factor.
    ds.ImagerPixelSpacing = [0.15, 0.2]
    del ds.PixelSpacing
    ds.EstimatedRadiographicMagnificationFactor = 1.25
    copy = tmp_path / "cr.dcm"
    ds.save_as(copy)
    img2 = read_dicom(copy, progress=False)
    assert img2.meta["spacing"] == pytest.approx((0.2 / 1.25, 0.15 / 1.25))
    # PatientOrientation L\F (PA): i -> RAS -x, j -> RAS -z, normal -> RAS -y
    np.testing.assert_allclose(img2.affine.numpy()[:3, :3], np.array([[-0.16, 0, 0], [0, 0, -0.12], [0, -1, 0]]).T)
    assert "Magnification" in img2.meta["spacing_source"]


def test_cr_rg3_reads_as_2d_radiograph():
    path = sample("cr_rg3")
    img = read_dicom(path, progress=False)
    ds = pydicom.dcmread(path)
    assert img.ndim == 3 and img.meta["modality"] == "CR"
    bright_dense = (1 << int(ds.BitsStored)) - 1 - ds.pixel_array.astype(np.float32) \
        if ds.PhotometricInterpretation == "MONOCHROME1" else ds.pixel_array.astype(np.float32)
    np.testing.assert_array_equal(img[0].numpy(), bright_dense.T)
    assert img.meta["patient_orientation"] == list(ds.PatientOrientation)


def test_selection_among_real_series(tmp_path):
    # Two real series copied into one folder: selection by modality rule and by UID.
    shutil.copytree(sample("ct5n_series"), tmp_path / "ct")
    shutil.copy(sample("mr_small"), tmp_path / "mr.dcm")
    series = list_series(tmp_path)
    assert sorted(s.modality for s in series) == ["CT", "MR"]
    mr = select_series(series, "modality=MR")
    assert read_dicom(tmp_path, series=mr.series_instance_uid, progress=False).shape[-1] == 1
    assert read_dicom(tmp_path, series="largest", progress=False).shape[-1] == 5


@pytest.mark.parametrize("name", ["ct_small", "mr_small", "cr_chest", "cr_rg3", "mr_mr2", "enhanced_mr",
                                  "enhanced_ct", "rt_ct_slice"])
def test_native_pixel_path_equals_pydicom_decoder(name):
    # medseg reads uncompressed pixel data straight from the file; pydicom's decoder is the reference
    # (BitsStored 10/12/15/16, signed and unsigned, explicit and implicit VR).
    from pathlib import Path

    from medseg.io.dicom.headers import read_header
    from medseg.io.dicom.read import load_frames

    path = Path(sample(name))
    frames = load_frames(read_header(path))
    ref = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(frames.reshape(ref.shape), ref)


def test_native_pixel_path_sign_extends_12_bit_signed(tmp_path):
    from medseg.io.dicom.headers import read_header
    from medseg.io.dicom.read import _read_native

    path = tmp_path / "s12.dcm"
    shutil.copy(sample("ct_small"), path)
    ds = pydicom.dcmread(path)
    values = np.array([[-2048, -1, 0, 2047]] * 2, dtype=np.int16)
    raw = (values.astype(np.int32) & 0x0FFF).astype(np.uint16)
    raw[0] |= 0xA000  # junk above BitsStored must be ignored
    ds.Rows, ds.Columns = values.shape
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
    ds.PixelData = raw.tobytes()
    ds.save_as(path)
    frames = _read_native(read_header(path))
    np.testing.assert_array_equal(frames[0], values)
    np.testing.assert_array_equal(frames[0], pydicom.dcmread(path).pixel_array)
