"""``medseg resample`` / ``medseg reorient`` on TotalSegmentator's real CT and label map, against
independent references: SimpleITK's ResampleImageFilter (nearest neighbour / linear) on the same
files, and world coordinates computed here with nibabel's affines (every voxel keeps its world
position when reoriented)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg import cli
from medseg.data import sample
from medseg.io.regrid import grid_for_spacing, reorient, resample


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return sample("ts_ct_sm"), sample("ts_ct_sm_seg")


def _world_values_equal(a_path, b_path, n=4000, seed=0):
    """Every sampled voxel of ``a`` holds the same value at the same world point in ``b``."""
    a, b = nib.load(a_path), nib.load(b_path)
    va, vb = np.asarray(a.dataobj), np.asarray(b.dataobj)
    rng = np.random.default_rng(seed)
    ijk = np.column_stack([rng.integers(0, s, n) for s in va.shape])
    world = nib.affines.apply_affine(a.affine, ijk)
    back = nib.affines.apply_affine(np.linalg.inv(b.affine), world)
    idx = np.round(back).astype(int)
    assert np.abs(back - idx).max() < 1e-3  # voxel centres land on voxel centres
    np.testing.assert_array_equal(va[tuple(ijk.T)], vb[tuple(idx.T)])


@pytest.mark.parametrize("target", ["LPS", "PIR", "ASL"])
def test_reorient_keeps_every_voxel_at_its_world_point(real, tmp_path, target, capsys):
    ct, seg = real
    for src, kind in ((ct, "image"), (seg, "label")):
        out = tmp_path / f"{kind}_{target}.nii.gz"
        assert cli.main(["reorient", str(src), str(out), "--to", target]) == 0
        img = nib.load(out)
        assert "".join(nib.aff2axcodes(img.affine)) == target
        if kind == "label":
            assert np.issubdtype(img.get_data_dtype(), np.integer)
        _world_values_equal(src, out)
    assert "no interpolation" in capsys.readouterr().out


def _sitk_resample(src, ref, interpolator):
    moving = sitk.ReadImage(str(src))
    fixed = sitk.ReadImage(str(ref))
    default = 0.0 if interpolator == sitk.sitkNearestNeighbor else float(sitk.GetArrayViewFromImage(moving).min())
    return sitk.GetArrayFromImage(sitk.Resample(moving, fixed, sitk.Transform(), interpolator, default,
                                                moving.GetPixelID() if interpolator == sitk.sitkNearestNeighbor
                                                else sitk.sitkFloat32))


def _oblique_reference(ct_path, tmp_path):
    """A differently shaped, rotated (12 degrees about S), 2.2 x 2.6 x 3.4 mm grid over the same CT."""
    img = nib.load(ct_path)
    c, s = np.cos(np.deg2rad(12)), np.sin(np.deg2rad(12))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([2.2, -2.6, 3.4])  # j flipped too
    centre = nib.affines.apply_affine(img.affine, (np.array(img.shape) - 1) / 2)
    shape = (150, 118, 24)
    aff[:3, 3] = centre - aff[:3, :3] @ ((np.array(shape) - 1) / 2)
    ref = tmp_path / "oblique_ref.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), aff), ref)
    return ref


def test_resample_label_map_like_an_oblique_grid_equals_simpleitk_nearest(real, tmp_path):
    ct, seg = real
    ref = _oblique_reference(ct, tmp_path)
    out = tmp_path / "seg_on_ref.nii.gz"
    assert cli.main(["resample", str(seg), str(out), "--like", str(ref)]) == 0
    mine = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    theirs = _sitk_resample(seg, ref, sitk.sitkNearestNeighbor)
    assert mine.shape == theirs.shape
    agree = float((mine == theirs).mean())
    assert agree >= 0.999, agree  # only ties half way between two voxels may go either way
    assert set(np.unique(mine)) <= set(np.unique(np.asarray(nib.load(seg).dataobj)))  # no invented labels
    assert np.allclose(nib.load(out).affine, nib.load(ref).affine, atol=1e-4)


def test_resample_image_linear_equals_simpleitk_linear(real, tmp_path):
    ct, _ = real
    ref = _oblique_reference(ct, tmp_path)
    out = tmp_path / "ct_on_ref.nii.gz"
    assert cli.main(["resample", str(ct), str(out), "--like", str(ref), "--kind", "image"]) == 0
    mine = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    theirs = _sitk_resample(ct, ref, sitk.sitkLinear)
    inside = theirs > float(theirs.min())  # SimpleITK's edge handling differs in the last half voxel
    assert np.percentile(np.abs(mine - theirs)[inside], 99) < 0.5  # HU


def test_resample_to_spacing_keeps_field_of_view_and_equals_simpleitk(real, tmp_path):
    _, seg = real
    out = tmp_path / "seg_new_spacing.nii.gz"
    assert cli.main(["resample", str(seg), str(out), "--spacing", "1.7", "2.3", "2.9"]) == 0
    a, b = nib.load(seg), nib.load(out)
    assert np.allclose(b.header.get_zooms(), (1.7, 2.3, 2.9))
    assert b.shape == (215, 132, 31)  # 122 x 101 x 30 voxels of 3 mm, rounded
    corner_a = nib.affines.apply_affine(a.affine, [-0.5, -0.5, -0.5])
    corner_b = nib.affines.apply_affine(b.affine, [-0.5, -0.5, -0.5])
    assert np.allclose(corner_a, corner_b, atol=1e-3)  # the outer face of the first voxel stays put
    mine = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    theirs = _sitk_resample(seg, out, sitk.sitkNearestNeighbor)  # SimpleITK onto the grid medseg wrote
    assert float((mine == theirs).mean()) >= 0.9999


def test_label_maps_are_never_interpolated(real, tmp_path, capsys):
    _, seg = real
    code = cli.main(["resample", str(seg), str(tmp_path / "x.nii.gz"), "--spacing", "2", "2", "2",
                     "--interpolation", "linear"])
    err = capsys.readouterr().err
    assert code == 2 and "nearest neighbour only" in err and err.count("\n") == 1
    assert not (tmp_path / "x.nii.gz").exists()
    with pytest.raises(Exception, match="nearest neighbour only"):
        resample(np.zeros((3, 3, 3), np.uint8), np.eye(4), np.eye(4), (3, 3, 3), label=True, order=1)


def test_bad_orientation_and_spacing_are_one_line_errors(real, tmp_path, capsys):
    ct, _ = real
    assert cli.main(["reorient", str(ct), str(tmp_path / "x.nii.gz"), "--to", "RRS"]) == 2
    assert "three axis codes" in capsys.readouterr().err
    assert cli.main(["resample", str(ct), str(tmp_path / "x.nii.gz"), "--spacing", "0", "1", "1"]) == 2
    assert "positive" in capsys.readouterr().err


def test_api_round_trip_is_exact():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 5, (7, 6, 5)).astype(np.uint8)
    aff = np.diag([-1.5, 2.0, 3.0, 1.0])
    aff[:3, 3] = [10, -4, 7]
    turned, aff2 = reorient(arr, aff, "PIR")
    back, aff3 = reorient(turned, aff2, "LAS")
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_allclose(aff3, aff)
    # resampling onto the same grid, or onto the reoriented one, changes nothing
    np.testing.assert_array_equal(resample(arr, aff, aff, arr.shape, label=True), arr)
    np.testing.assert_array_equal(resample(arr, aff, aff2, turned.shape, label=True), turned)
    new_aff, shape = grid_for_spacing(aff, arr.shape, (0.75, 1.0, 1.5))
    assert shape == (14, 12, 10)
