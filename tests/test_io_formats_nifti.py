"""NIfTI read/write: world coordinates checked against nibabel and SimpleITK, the sform/qform
rule, channels, label dtypes and save_labels."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from medseg.errors import DataFetchError, GeometryError, InputError
from medseg.io import describe, load, save
from medseg.io.safety import GeometryWarning
from medseg.io.write import save_labels

SHAPE = (7, 8, 9)
MARKER = (5, 2, 6)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(name: str) -> np.ndarray:
    aff = np.eye(4)
    spacing = np.array([0.7, 0.9, 2.5])
    if name == "RAS":
        aff[:3, :3] = np.diag(spacing)
        aff[:3, 3] = [-20.0, 15.0, 40.0]
    elif name == "LPS":
        aff[:3, :3] = np.diag([-1, -1, 1]) * spacing
        aff[:3, 3] = [120.0, 95.5, -301.25]
    elif name == "oblique":
        aff[:3, :3] = _rotation(0.3, -0.45, 0.8) @ np.diag(spacing)
        aff[:3, 3] = [11.5, -73.0, 5.25]
    return aff


def _marker_volume() -> np.ndarray:
    vol = np.zeros(SHAPE, np.float32)
    vol[MARKER] = 1000.0
    vol[0, 0, 0] = 10.0  # a second, smaller landmark so no axis can be silently flipped
    return vol


def _world(aff: np.ndarray, idx) -> np.ndarray:
    return (aff @ np.array([*idx, 1.0]))[:3]


def _sitk_marker_ras(path) -> np.ndarray:
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)
    zyx = np.unravel_index(int(np.argmax(arr)), arr.shape)
    lps = np.array(img.TransformIndexToPhysicalPoint([int(v) for v in zyx[::-1]]))
    return lps * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_saved_nifti_places_marker_at_same_world_point(tmp_path, orientation, suffix):
    aff = _affine(orientation)
    expected = _world(aff, MARKER)
    tensor = MetaTensor(torch.from_numpy(_marker_volume()[None]), affine=torch.as_tensor(aff))
    path = save(tensor, tmp_path / f"vol{suffix}")

    ref = nib.load(path)
    assert int(ref.header["sform_code"]) == 1 and int(ref.header["qform_code"]) == 1
    ijk = np.argwhere(np.asarray(ref.dataobj) == 1000.0)[0]
    np.testing.assert_allclose(_world(ref.affine, ijk), expected, atol=1e-4)
    np.testing.assert_allclose(ref.header.get_qform(), ref.header.get_sform(), atol=1e-5)

    np.testing.assert_allclose(_sitk_marker_ras(path), expected, atol=1e-3)

    back = load(path)
    assert back.shape == (1, *SHAPE) and back.dtype == torch.float32
    ijk = np.argwhere(back[0].numpy() == 1000.0)[0]
    assert tuple(ijk) == MARKER
    np.testing.assert_allclose(_world(back.affine.numpy(), ijk), expected, atol=1e-4)
    assert back.meta["affine_source"] == "sform"
    np.testing.assert_allclose(back.meta["spacing"], [0.7, 0.9, 2.5], atol=1e-5)


def test_nifti_written_by_nibabel_reads_like_simpleitk(tmp_path):
    aff = _affine("oblique")
    nib.save(nib.Nifti1Image(_marker_volume(), aff), tmp_path / "ext.nii.gz")
    back = load(tmp_path / "ext.nii.gz")
    ijk = np.argwhere(back[0].numpy() == 1000.0)[0]
    np.testing.assert_allclose(_world(back.affine.numpy(), ijk), _sitk_marker_ras(tmp_path / "ext.nii.gz"), atol=1e-3)


def test_describe_reports_orientation_spacing_origin(tmp_path):
    for name, code in (("RAS", "RAS"), ("LPS", "LPS")):
        aff = _affine(name)
        nib.save(nib.Nifti1Image(_marker_volume(), aff), tmp_path / f"{name}.nii.gz")
        info = describe(tmp_path / f"{name}.nii.gz")
        assert info["orientation"] == code
        assert info["format"] == "nifti" and info["shape"] == [1, *SHAPE]
        np.testing.assert_allclose(info["spacing_mm"], [0.7, 0.9, 2.5], atol=1e-5)
        np.testing.assert_allclose(info["origin_ras_mm"], aff[:3, 3], atol=1e-4)
        assert info["value_range"] == [0.0, 1000.0]


def _with_codes(tmp_path, name, sform, scode, qform, qcode) -> str:
    img = nib.Nifti1Image(_marker_volume(), None)
    img.set_sform(sform, code=scode)
    img.set_qform(qform, code=qcode)
    path = tmp_path / name
    img.to_filename(path)
    return path


def _load_recording(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = load(path)
    return out, [w for w in caught if issubclass(w.category, GeometryWarning)]


def test_rule_sform_used_when_sform_code_positive(tmp_path):
    s_aff, q_aff = _affine("oblique"), _affine("RAS")
    path = _with_codes(tmp_path, "s_only.nii", s_aff, 2, q_aff, 0)
    out, warned = _load_recording(path)
    assert out.meta["affine_source"] == "sform" and not warned
    np.testing.assert_allclose(out.affine.numpy(), nib.load(path).affine, atol=1e-6)
    np.testing.assert_allclose(out.affine.numpy(), s_aff, atol=1e-5)


def test_rule_qform_used_when_only_qform(tmp_path):
    q_aff = _affine("oblique")
    path = _with_codes(tmp_path, "q_only.nii", _affine("RAS"), 0, q_aff, 1)
    out, warned = _load_recording(path)
    assert out.meta["affine_source"] == "qform" and not warned
    np.testing.assert_allclose(out.affine.numpy(), nib.load(path).header.get_qform(), atol=1e-6)
    np.testing.assert_allclose(out.affine.numpy(), q_aff, atol=1e-4)


def test_rule_sform_and_qform_disagreeing_warns_and_uses_sform(tmp_path):
    s_aff = _affine("LPS")
    q_aff = s_aff.copy()
    q_aff[:3, 3] += [0.0, 0.0, 0.01]  # 0.01 mm apart: more than the 1e-3 mm tolerance
    path = _with_codes(tmp_path, "disagree.nii", s_aff, 1, q_aff, 1)
    out, warned = _load_recording(path)
    assert len(warned) == 1 and "disagree" in str(warned[0].message)
    np.testing.assert_allclose(out.affine.numpy(), s_aff, atol=1e-6)
    # a difference below the tolerance is not worth a warning
    q_close = s_aff.copy()
    q_close[:3, 3] += [0.0, 0.0, 1e-4]
    out, warned = _load_recording(_with_codes(tmp_path, "agree.nii", s_aff, 1, q_close, 1))
    assert not warned and out.meta["affine_source"] == "sform"


def test_rule_no_codes_falls_back_to_pixdim_with_warning(tmp_path):
    img = nib.Nifti1Image(_marker_volume(), None)
    img.header.set_zooms((0.7, 0.9, 2.5))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    path = tmp_path / "analyze_like.nii"
    img.to_filename(path)
    assert int(nib.load(path).header["sform_code"]) == 0 and int(nib.load(path).header["qform_code"]) == 0
    out, warned = _load_recording(path)
    assert len(warned) == 1 and "left/right is not known" in str(warned[0].message)
    assert out.meta["affine_source"] == "pixdim"
    np.testing.assert_allclose(out.affine.numpy(), nib.load(path).affine, atol=1e-6)
    assert describe(path)["affine_source"] == "pixdim"


def test_rule_singular_sform_falls_back_to_qform(tmp_path):
    bad = np.zeros((4, 4))
    bad[3, 3] = 1
    q_aff = _affine("LPS")
    out, warned = _load_recording(_with_codes(tmp_path, "singular.nii", bad, 1, q_aff, 1))
    assert out.meta["affine_source"] == "qform" and any("singular" in str(w.message) for w in warned)
    np.testing.assert_allclose(out.affine.numpy(), q_aff, atol=1e-5)


def test_4d_nifti_becomes_channels(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(*SHAPE, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, _affine("RAS")), tmp_path / "multi.nii.gz")
    out = load(tmp_path / "multi.nii.gz")
    assert out.shape == (3, *SHAPE)
    for c in range(3):
        np.testing.assert_array_equal(out[c].numpy(), data[..., c])
    save(out, tmp_path / "again.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "again.nii.gz").dataobj), data)


def test_2d_nifti_stays_2d(tmp_path):
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    nib.save(nib.Nifti1Image(data, _affine("LPS")), tmp_path / "plane.nii")
    out = load(tmp_path / "plane.nii")
    assert out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[0].numpy(), data.astype(np.float32))
    assert len(out.meta["spacing"]) == 2


def test_kind_image_applies_scaling_and_label_keeps_integers(tmp_path):
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 7
    img = nib.Nifti1Image(raw, _affine("RAS"))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    image = load(tmp_path / "scaled.nii.gz")
    assert image.dtype == torch.float32 and image.meta["kind"] == "image"
    np.testing.assert_allclose(image[0].numpy(), nib.load(tmp_path / "scaled.nii.gz").get_fdata(), atol=1e-4)

    lab = nib.Nifti1Image(raw.astype(np.uint8), _affine("RAS"))
    nib.save(lab, tmp_path / "lab.nii.gz")
    labels = load(tmp_path / "lab.nii.gz", kind="label")
    assert labels.dtype == torch.uint8 and labels.meta["kind"] == "label"
    np.testing.assert_array_equal(labels[0].numpy(), raw)
    assert load(tmp_path / "lab.nii.gz", kind="auto").meta["kind"] == "label"

    # integral floats stored by other tools become the smallest integer type
    nib.save(nib.Nifti1Image(raw.astype(np.float32) * 100, _affine("RAS")), tmp_path / "flab.nii.gz")
    flab = load(tmp_path / "flab.nii.gz", kind="label")
    assert flab.dtype == torch.uint16
    np.testing.assert_array_equal(flab[0].numpy(), raw * 100)


def test_auto_kind_keeps_ct_like_images_as_float(tmp_path):
    rng = np.random.default_rng(3)
    ct = rng.integers(-1000, 2000, SHAPE).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, _affine("LPS")), tmp_path / "ct.nii.gz")
    out = load(tmp_path / "ct.nii.gz", kind="auto")
    assert out.meta["kind"] == "image" and out.dtype == torch.float32


def test_save_labels_on_reference_grid(tmp_path):
    aff = _affine("oblique")
    ref = MetaTensor(torch.zeros((1, *SHAPE)), affine=torch.as_tensor(aff))
    labels = np.zeros(SHAPE, np.int64)
    labels[1:3, 2:5, 3:7] = 2
    labels[MARKER] = 7
    path = save_labels(labels, ref, tmp_path / "seg.nii.gz")
    disk = nib.load(path)
    assert disk.header.get_data_dtype() == np.uint8
    np.testing.assert_allclose(disk.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(disk.dataobj), labels)

    big = labels.copy()
    big[0, 0, 0] = 300
    assert nib.load(save_labels(big, ref, tmp_path / "big.nii")).header.get_data_dtype() == np.uint16

    as_meta = MetaTensor(torch.from_numpy(labels[None]), affine=torch.as_tensor(aff))
    save_labels(as_meta, ref, tmp_path / "meta.nii.gz")
    shifted = MetaTensor(torch.from_numpy(labels[None]), affine=torch.as_tensor(aff + _shift()))
    with pytest.raises(GeometryError, match="affine differs"):
        save_labels(shifted, ref, tmp_path / "shifted.nii.gz")
    with pytest.raises(GeometryError, match="differs from the reference grid"):
        save_labels(labels[:-1], ref, tmp_path / "small.nii.gz")
    with pytest.raises(InputError, match="negative"):
        save_labels(labels - 1, ref, tmp_path / "neg.nii.gz")
    assert not (tmp_path / "shifted.nii.gz").exists() and not (tmp_path / "neg.nii.gz").exists()


def _shift() -> np.ndarray:
    s = np.zeros((4, 4))
    s[0, 3] = 1e-3  # 1 micrometre: above the 1e-6 tolerance
    return s


def test_save_dtypes_and_no_leftover_temporaries(tmp_path):
    aff = _affine("RAS")
    mask = MetaTensor(torch.ones((1, *SHAPE), dtype=torch.bool), affine=torch.as_tensor(aff))
    save(mask, tmp_path / "mask.nii.gz")
    assert nib.load(tmp_path / "mask.nii.gz").header.get_data_dtype() == np.uint8
    f64 = MetaTensor(torch.ones((1, *SHAPE), dtype=torch.float64), affine=torch.as_tensor(aff))
    save(f64, tmp_path / "f64.nii")
    assert nib.load(tmp_path / "f64.nii").header.get_data_dtype() == np.float32
    save(np.zeros((1, *SHAPE), np.int64), tmp_path / "plain.nii.gz", affine=aff)
    assert nib.load(tmp_path / "plain.nii.gz").header.get_data_dtype() == np.uint8
    with pytest.raises(GeometryError):
        save(np.zeros((1, *SHAPE), np.float32), tmp_path / "noaff.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f64.nii", "mask.nii.gz", "plain.nii.gz"]


def test_real_mni_template_matches_nibabel():
    from medseg.data import sample

    try:
        path = sample("mni_t1")
    except DataFetchError as exc:  # offline machine without a cache
        pytest.skip(f"sample data unavailable: {exc}")
    ref = nib.load(path)
    out = load(path)
    assert out.shape == (1, *ref.shape) == (1, 197, 233, 189)
    np.testing.assert_allclose(out.affine.numpy(), ref.affine, atol=1e-6)
    np.testing.assert_allclose(out.meta["spacing"], (1.0, 1.0, 1.0), atol=1e-6)
    ijk = (98, 134, 72)
    assert float(out[0][ijk]) == pytest.approx(float(ref.dataobj[ijk]), rel=1e-6)
    np.testing.assert_allclose(_world(out.affine.numpy(), ijk), _world(ref.affine, ijk))


def test_big_endian_nifti_label_and_image(tmp_path):
    raw = (np.arange(np.prod(SHAPE)) % 5).reshape(SHAPE).astype(np.int16)
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_dtype(np.int16)
    img = nib.Nifti1Image(raw, _affine("LPS"), header=hdr)
    img.to_filename(tmp_path / "be.nii")
    assert nib.load(tmp_path / "be.nii").header.get_data_dtype() == np.dtype(">i2")
    lab = load(tmp_path / "be.nii", kind="label")
    assert lab.dtype == torch.int16
    np.testing.assert_array_equal(lab[0].numpy(), raw)
    np.testing.assert_array_equal(load(tmp_path / "be.nii")[0].numpy(), raw.astype(np.float32))


def test_nifti_without_suffix_and_nifti2_found_by_magic(tmp_path):
    aff = _affine("oblique")
    nib.save(nib.Nifti1Image(_marker_volume(), aff), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti2Image(_marker_volume(), aff), tmp_path / "b.nii")
    (tmp_path / "export_0001").write_bytes((tmp_path / "a.nii.gz").read_bytes())
    (tmp_path / "export_0002").write_bytes((tmp_path / "b.nii").read_bytes())
    expected = _world(aff, MARKER)
    for name in ("export_0001", "export_0002", "b.nii"):
        out = load(tmp_path / name)
        ijk = np.argwhere(out[0].numpy() == 1000.0)[0]
        np.testing.assert_allclose(_world(out.affine.numpy(), ijk), expected, atol=1e-4)
    (tmp_path / "export_0003").write_bytes((tmp_path / "b.nii").read_bytes()[:-200])
    with pytest.raises(InputError, match="truncated"):
        load(tmp_path / "export_0003")
