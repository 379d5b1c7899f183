"""DICOM radiographs (DX/CR written by the phantom writer) -> 2D MetaTensor: axis order against
pydicom's pixel_array, spacing from the right tag, MONOCHROME1 inverted so bright = dense."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medseg.data.dicom_writer import write_dicom_xray
from medseg.errors import InputError
from medseg.io.dicom import read_dicom


def PA_AFFINE(si: float, sj: float) -> np.ndarray:  # noqa: N802 - a constant-like factory
    a = np.zeros((4, 4))
    a[:3, 0], a[:3, 1], a[:3, 2], a[3, 3] = (-si, 0, 0), (0, 0, -sj), (0, -1, 0), 1.0
    return a


def _image() -> np.ndarray:
    img = np.full((40, 30), 200, dtype=np.int64)  # (i, j): 40 columns, 30 rows
    img[30:36, 5:9] = 3500  # a dense block right of centre, near the top
    return img


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_radiograph_values_axes_and_photometric(tmp_path, modality, photometric):
    src = _image()
    path = write_dicom_xray(src, (0.2, 0.3), tmp_path / "x.dcm", modality=modality, photometric=photometric)
    img = read_dicom(path, progress=False)
    assert img.shape == (1, 40, 30)
    np.testing.assert_array_equal(img[0].numpy(), src)  # bright = dense whatever the photometric
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.float32)
    expect = stored if photometric == "MONOCHROME2" else (1 << ds.BitsStored) - 1 - stored
    np.testing.assert_array_equal(img[0].numpy(), expect.T)  # out[0, i, j] == pixel_array[j, i]
    assert img.meta["photometric_original"] == photometric
    assert img.meta["modality"] == modality and img.meta["kind"] == "image"
    # PixelSpacing = [rows (j), columns (i)] = [0.3, 0.2]: i spacing 0.2 mm, j spacing 0.3 mm.
    assert img.meta["spacing"] == pytest.approx((0.2, 0.3))
    # PA film, PatientOrientation L\F: i -> patient's left (RAS -x), j -> feet (RAS -z), normal i x j.
    np.testing.assert_allclose(img.affine.numpy(), PA_AFFINE(0.2, 0.3))
    assert img.meta["orientation_known"] is True and img.meta["patient_orientation"] == ["L", "F"]
    assert img.meta["spacing_source"] == "PixelSpacing"


def test_spacing_from_imager_pixel_spacing_with_and_without_magnification(tmp_path):
    src = _image()
    p1 = write_dicom_xray(src, 0.15, tmp_path / "a.dcm", spacing_tag="ImagerPixelSpacing", modality="CR")
    p2 = write_dicom_xray(src, 0.15, tmp_path / "b.dcm", spacing_tag="ImagerPixelSpacing", modality="CR",
                          magnification=1.5)
    a, b = read_dicom(p1, progress=False), read_dicom(p2, progress=False)
    assert a.meta["spacing"] == pytest.approx((0.15, 0.15)) and a.meta["spacing_source"] == "ImagerPixelSpacing"
    assert b.meta["spacing"] == pytest.approx((0.1, 0.1))
    assert b.meta["spacing_source"].endswith("EstimatedRadiographicMagnificationFactor")


def test_pixel_spacing_wins_over_imager_pixel_spacing(tmp_path):
    # DX written with PixelSpacing also carries ImagerPixelSpacing; change one to tell them apart.
    path = write_dicom_xray(_image(), 0.2, tmp_path / "dx.dcm", modality="DX")
    ds = pydicom.dcmread(path)
    ds.ImagerPixelSpacing = [0.25, 0.25]
    ds.save_as(path)
    img = read_dicom(path, progress=False)
    assert img.meta["spacing"] == pytest.approx((0.2, 0.2)) and img.meta["spacing_source"] == "PixelSpacing"


def test_no_patient_position_is_invented(tmp_path):
    path = write_dicom_xray(_image(), 0.2, tmp_path / "dx.dcm", view_position="PA")
    img = read_dicom(path, progress=False)
    np.testing.assert_array_equal(img.affine.numpy()[:3, 3], [0, 0, 0])
    assert img.meta["patient_orientation"] == ["L", "F"]
    assert "frame_of_reference_uid" in img.meta and img.meta["frame_of_reference_uid"] == ""


def test_several_radiographs_in_one_series_are_refused(tmp_path):
    path = write_dicom_xray(_image(), 0.2, tmp_path / "s" / "a.dcm")
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "s" / "b.dcm")
    with pytest.raises(InputError, match="radiographs"):
        read_dicom(tmp_path / "s", progress=False)
    # One file at a time works.
    assert read_dicom(tmp_path / "s" / "b.dcm", progress=False).shape == (1, 40, 30)


@pytest.mark.parametrize("view, side", [("PA", "left"), ("AP", "right")])
def test_patient_orientation_puts_the_marker_on_the_right_side(tmp_path, view, side):
    """The dense block sits at large i (image right). On a PA film (L\\F) that is the patient's
    left, RAS x < 0; on an AP film (R\\F) the patient's right, RAS x > 0."""
    path = write_dicom_xray(_image(), 0.2, tmp_path / "x.dcm", modality="DX", view_position=view)
    img = read_dicom(path, progress=False)
    i, j = np.unravel_index(int(np.argmax(img[0].numpy())), img.shape[1:])
    centre = img.affine.numpy() @ [(img.shape[1] - 1) / 2, (img.shape[2] - 1) / 2, 0, 1]
    marker = img.affine.numpy() @ [i, j, 0, 1]
    assert (marker[0] - centre[0] < 0) == (side == "left")
    assert marker[2] - centre[2] > 0  # near the top of the film: towards the head


def test_without_patient_orientation_sides_are_flagged_unknown(tmp_path):
    from medseg.io.safety import GeometryWarning

    path = write_dicom_xray(_image(), 0.2, tmp_path / "x.dcm", modality="CR")
    ds = pydicom.dcmread(path)
    del ds.PatientOrientation
    ds.save_as(path)
    with pytest.warns(GeometryWarning, match="left/right of this radiograph is unknown"):
        img = read_dicom(path, progress=False)
    assert img.meta["orientation_known"] is False
    np.testing.assert_allclose(img.affine.numpy(), np.diag([0.2, 0.2, 1.0, 1.0]))


def test_orientation_directions_parsing():
    from medseg.io.dicom.xray import orientation_directions

    d = orientation_directions(["L", "F"])  # columns: i -> left, j -> feet, normal = i x j -> posterior
    np.testing.assert_allclose(d, np.stack([[-1, 0, 0], [0, 0, -1], [0, -1, 0]], axis=1))
    assert orientation_directions(["L", "LF"]) is None  # 45 degrees apart: not orthogonal
    oblique = orientation_directions(["LF", "RF"])  # orthogonal obliques are fine
    np.testing.assert_allclose(oblique[:, 0], np.array([-1, 0, -1]) / np.sqrt(2))
    assert orientation_directions(["P", "F"]) is not None  # a lateral film
    for bad in ([], ["L"], ["X", "F"], ["LR", "F"], None):
        assert orientation_directions(bad) is None


def test_reader_directions_match_the_phantom_geometry(tmp_path):
    from medseg.data.phantoms import chest_xray, xray_affine

    ph = chest_xray(shape=(64, 64), spacing=(2.0, 2.0), seed=1)
    path = write_dicom_xray(ph.image, 2.0, tmp_path / "x.dcm", modality="DX")
    img = read_dicom(path, progress=False)
    np.testing.assert_allclose(img.affine.numpy()[:3, :3], xray_affine((64, 64), (2.0, 2.0))[:3, :3])
