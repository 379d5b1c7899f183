"""World geometry of read_dicom: phantom series in several orientations and file orders, a bright
marker on the patient's left-anterior-superior side, checked against the true RAS position and
against SimpleITK's ImageSeriesReader (LPS world coordinates, converted to RAS)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.data.dicom_writer import write_dicom_series
from medseg.io.dicom import read_dicom

SHAPE = (14, 12, 9)
SPACING = (0.9, 1.1, 2.5)


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


# Direction columns (unit vectors of i, j, k) in RAS.
DIRECTIONS = {
    # DICOM axial: rows to patient left (LPS +x = RAS -x), columns to posterior (RAS -y).
    "axial": np.array([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], dtype=float),
    # Rows flipped: columns run anterior; k written along +z although the normal is -z.
    "axial_flipped_rows": np.array([[-1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float),
    # Coronal: rows to the left, columns downwards (feet), slices along +y.
    "coronal": np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float),
    # Sagittal: rows posterior, columns to the feet, slices along -x (towards the patient's left).
    "sagittal": np.array([[0, 0, -1], [-1, 0, 0], [0, -1, 0]], dtype=float),
    # Oblique: axial tilted 25 degrees about x, then 20 about z.
    "oblique": _rot("z", 20) @ _rot("x", 25) @ np.array([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], dtype=float),
}


def _affine(direction: np.ndarray) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = direction * np.asarray(SPACING)
    centre = (np.asarray(SHAPE) - 1) / 2
    a[:3, 3] = np.array([12.0, -30.0, 45.0]) - a[:3, :3] @ centre  # grid centred at a known point
    return a


def _phantom(affine: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """CT volume with a marker at the voxel nearest the patient's left-anterior-superior corner."""
    rng = np.random.default_rng(1)
    vol = rng.integers(-200, 200, SHAPE).astype(np.float32)
    centre_world = (affine @ [*((np.asarray(SHAPE) - 1) / 2), 1])[:3]
    target = centre_world + np.array([-4.0, 3.0, 3.5])  # RAS: left (x<), anterior (y>), superior (z>)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    idx = np.stack([ii, jj, kk, np.ones_like(ii)], -1).reshape(-1, 4).astype(float)
    world = (idx @ affine.T)[:, :3]
    best = int(np.argmin(np.linalg.norm(world - target, axis=1)))
    marker = tuple(int(v) for v in idx[best, :3])
    vol[marker] = 3000
    return vol, marker, centre_world


def _sitk_marker_ras(folder) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img)  # (z, y, x) = (k, j, i)
    k, j, i = np.unravel_index(int(np.argmax(arr)), arr.shape)
    lps = np.array(img.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))
    return lps * [-1, -1, 1]


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
def test_marker_lands_at_true_world_position(tmp_path, orientation, order):
    affine = _affine(DIRECTIONS[orientation])
    vol, marker, centre = _phantom(affine)
    write_dicom_series(vol, affine, tmp_path, order=order, seed=3)
    img = read_dicom(tmp_path, progress=False)

    true_world = (affine @ [*marker, 1])[:3]
    found = np.unravel_index(int(np.argmax(img[0].numpy())), img.shape[1:])
    read_aff = img.affine.numpy()
    got = (read_aff @ [*found, 1])[:3]
    half_voxel = 0.5 * min(SPACING)
    assert np.linalg.norm(got - true_world) < half_voxel
    # Left/right, anterior/posterior, superior/inferior stated explicitly (RAS: left is x smaller).
    assert got[0] < centre[0] - 2, "marker on the patient's LEFT must have a smaller RAS x"
    assert got[1] > centre[1] + 1 and got[2] > centre[2] + 1
    # Independent reader: SimpleITK (GDCM sorting, LPS physical points).
    assert np.linalg.norm(_sitk_marker_ras(tmp_path) - true_world) < half_voxel

    # Every voxel, not only the marker: map each source voxel through world space into the read grid.
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    src = np.stack([ii, jj, kk, np.ones_like(ii)], -1).reshape(-1, 4).astype(float)
    dst = np.rint((src @ affine.T) @ np.linalg.inv(read_aff).T).astype(int)[:, :3]
    np.testing.assert_array_equal(img[0].numpy()[dst[:, 0], dst[:, 1], dst[:, 2]],
                                  vol[ii.ravel(), jj.ravel(), kk.ravel()])
    # Spacing in meta follows the read axes; k along the normal, increasing.
    assert sorted(np.round(img.meta["spacing"], 4)) == sorted(np.round(SPACING, 4))
    assert img.meta["format"] == "dicom" and img.meta["space"] == "RAS" and img.meta["kind"] == "image"
    assert len(img.meta["sop_instance_uids"]) == SHAPE[2] == len(set(img.meta["sop_instance_uids"]))


def test_sop_uids_follow_slice_position_not_instance_number(tmp_path):
    import pydicom

    affine = _affine(DIRECTIONS["oblique"])
    vol, _, _ = _phantom(affine)
    write_dicom_series(vol, affine, tmp_path, order="shuffled", seed=7)
    img = read_dicom(tmp_path, progress=False)
    read_aff = img.affine.numpy()
    normal = read_aff[:3, 2] / np.linalg.norm(read_aff[:3, 2])
    positions, numbers = [], []
    for f in img.meta["dicom_files"]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        ipp_ras = np.array([float(v) for v in ds.ImagePositionPatient]) * [-1, -1, 1]
        positions.append(float(ipp_ras @ normal))
        numbers.append(int(ds.InstanceNumber))
    assert np.all(np.diff(positions) > 0)  # k increases along the normal
    assert numbers != sorted(numbers) and numbers != sorted(numbers, reverse=True)
    # The file for k=0 holds the origin of the read affine.
    ds0 = pydicom.dcmread(img.meta["dicom_files"][0], stop_before_pixels=True)
    np.testing.assert_allclose(np.array([float(v) for v in ds0.ImagePositionPatient]) * [-1, -1, 1],
                               read_aff[:3, 3], atol=1e-4)


def test_rescale_applied_per_slice(tmp_path):
    import pydicom

    affine = _affine(DIRECTIONS["axial"])
    vol, _, _ = _phantom(affine)
    files = write_dicom_series(vol, affine, tmp_path, order="reversed")
    ds = pydicom.dcmread(files[4])  # slice k=4 gets its own slope/intercept
    ds.RescaleSlope, ds.RescaleIntercept = "2.5", "-1024"
    ds.save_as(files[4])
    img = read_dicom(tmp_path, progress=False)
    expected = vol.copy()
    expected[:, :, 4] = pydicom.dcmread(files[4]).pixel_array.T * 2.5 - 1024
    # The read grid may run k the other way; compare in world space through the affines.
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    src = np.stack([ii, jj, kk, np.ones_like(ii)], -1).reshape(-1, 4).astype(float)
    dst = np.rint((src @ affine.T) @ np.linalg.inv(img.affine.numpy()).T).astype(int)[:, :3]
    np.testing.assert_allclose(img[0].numpy()[dst[:, 0], dst[:, 1], dst[:, 2]],
                               expected[ii.ravel(), jj.ravel(), kk.ravel()], atol=1e-3)
    assert img.dtype == torch.float32


@pytest.mark.slow
def test_full_size_oblique_series_matches_simpleitk(tmp_path):
    """512 x 512 x 40 shuffled oblique CT: every voxel at the same world point as SimpleITK's."""
    rng = np.random.default_rng(9)
    affine = np.eye(4)
    affine[:3, :3] = DIRECTIONS["oblique"] * [0.7, 0.7, 1.25]
    affine[:3, 3] = [150.0, 160.0, -200.0]
    vol = rng.integers(-1024, 2000, (512, 512, 40)).astype(np.float32)
    write_dicom_series(vol, affine, tmp_path, order="shuffled")
    img = read_dicom(tmp_path, progress=False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    ref = reader.Execute()
    d = np.array(ref.GetDirection()).reshape(3, 3) * np.array(ref.GetSpacing())
    ref_aff = np.eye(4)
    ref_aff[:3, :3], ref_aff[:3, 3] = d, ref.GetOrigin()
    ref_aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ref_aff
    np.testing.assert_allclose(img.affine.numpy(), ref_aff, atol=1e-3)
    np.testing.assert_array_equal(img[0].numpy(), sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(img.affine.numpy(), affine, atol=1e-4)
    np.testing.assert_array_equal(img[0].numpy(), vol)
