"""NRRD / NHDR / MHA / MHD: world coordinates against SimpleITK's own physical-point API
(LPS -> RAS), hand-written headers, vector images, 2D images, and real pyradiomics NRRD."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from medseg.errors import DataFetchError
from medseg.io import describe, load, save

LPS2RAS = np.array([-1.0, -1.0, 1.0])
SIZE_XYZ = (9, 7, 5)
MARKER = (6, 2, 3)


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    return (np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]]) @ np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
            @ np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]]))


def _sitk_image(direction: np.ndarray) -> sitk.Image:
    img = sitk.Image(list(SIZE_XYZ), sitk.sitkInt16)
    img.SetSpacing([0.6, 1.1, 3.0])
    img.SetOrigin([-12.5, 40.0, 101.0])
    img.SetDirection([float(v) for v in direction.ravel()])
    img.SetPixel(list(MARKER), 900)
    img.SetPixel([0, 0, 0], 5)
    return img


def _sitk_marker_ras(img: sitk.Image) -> np.ndarray:
    return np.array(img.TransformIndexToPhysicalPoint(list(MARKER))) * LPS2RAS


def _world(aff, idx) -> np.ndarray:
    return (np.asarray(aff, dtype=np.float64) @ np.array([*idx, 1.0]))[:3]


@pytest.mark.parametrize("direction", ["identity", "flipped", "oblique"])
@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_files_written_by_simpleitk_read_at_the_same_world_point(tmp_path, direction, suffix):
    d = {"identity": np.eye(3), "flipped": np.diag([-1.0, 1.0, -1.0]), "oblique": _rotation(0.2, 0.5, -0.7)}[direction]
    img = _sitk_image(d)
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(img, str(path))
    out = load(path)
    assert out.shape == (1, *SIZE_XYZ)
    ijk = tuple(int(v) for v in np.argwhere(out[0].numpy() == 900)[0])
    assert ijk == MARKER  # ITK index (x, y, z) is medseg's (i, j, k)
    np.testing.assert_allclose(_world(out.affine, ijk), _sitk_marker_ras(img), atol=1e-6)
    np.testing.assert_allclose(out.meta["spacing"], [0.6, 1.1, 3.0], atol=1e-9)
    assert out.meta["format"] == ("nrrd" if suffix in (".nrrd", ".nhdr") else "mha")


def _affine(kind: str) -> np.ndarray:
    aff = np.eye(4)
    if kind == "RAS":
        aff[:3, :3] = np.diag([0.8, 0.8, 2.0])
    elif kind == "LPS":
        aff[:3, :3] = np.diag([-0.8, -0.8, 2.0])
    else:
        aff[:3, :3] = _rotation(-0.4, 0.25, 1.1) @ np.diag([0.8, 0.9, 2.0])
    aff[:3, 3] = [33.0, -71.5, 12.25]
    return aff


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique"])
@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_medseg_save_is_read_by_simpleitk_at_the_same_world_point(tmp_path, orientation, suffix):
    aff = _affine(orientation)
    vol = np.zeros((6, 5, 4), np.float32)
    vol[4, 1, 2] = 77.0
    vol[0, 0, 0] = 3.0
    path = save(MetaTensor(torch.from_numpy(vol[None]), affine=torch.as_tensor(aff)), tmp_path / f"out{suffix}")
    img = sitk.ReadImage(str(path))
    assert img.GetSize() == (6, 5, 4)
    assert img.GetPixel(4, 1, 2) == 77.0 and img.GetPixel(0, 0, 0) == 3.0
    ras = np.array(img.TransformIndexToPhysicalPoint([4, 1, 2])) * LPS2RAS
    np.testing.assert_allclose(ras, _world(aff, (4, 1, 2)), atol=1e-6)
    back = load(path)
    np.testing.assert_allclose(back.affine.numpy(), aff, atol=1e-9)
    np.testing.assert_array_equal(back[0].numpy(), vol)


def test_hand_written_nrrd_in_ras_space(tmp_path):
    """The header's own arithmetic is the reference: world = origin + directions @ index."""
    data = np.zeros((3, 4, 5), np.uint8)  # (z, y, x) on disk: x fastest
    data[2, 1, 3] = 200
    header = (
        "NRRD0004\ntype: uint8\ndimension: 3\nspace: right-anterior-superior\nsizes: 5 4 3\n"
        "space directions: (0.5,0,0) (0,0.8,0) (0,0,2)\nkinds: domain domain domain\n"
        "endian: little\nencoding: raw\nspace origin: (10,20,30)\n\n"
    )
    path = tmp_path / "ras.nrrd"
    path.write_bytes(header.encode() + data.tobytes())
    out = load(path, kind="label")
    assert out.shape == (1, 5, 4, 3) and out.dtype == torch.uint8
    ijk = tuple(int(v) for v in np.argwhere(out[0].numpy() == 200)[0])
    assert ijk == (3, 1, 2)
    np.testing.assert_allclose(_world(out.affine, ijk), [10 + 0.5 * 3, 20 + 0.8 * 1, 30 + 2 * 2], atol=1e-9)
    assert describe(path)["orientation"] == "RAS"


def test_vector_image_becomes_channels(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(5, 7, 9, 3)).astype(np.float32)  # (z, y, x, c)
    img = sitk.GetImageFromArray(arr, isVector=True)
    sitk.WriteImage(img, str(tmp_path / "vec.mha"))
    out = load(tmp_path / "vec.mha")
    assert out.shape == (3, 9, 7, 5)
    for c in range(3):
        np.testing.assert_array_equal(out[c].numpy(), arr[..., c].transpose(2, 1, 0))
    save(out, tmp_path / "vec2.nrrd")
    img2 = sitk.ReadImage(str(tmp_path / "vec2.nrrd"))
    assert img2.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img2), arr)


def test_2d_mha_geometry(tmp_path):
    img = sitk.Image([6, 4], sitk.sitkUInt16)
    img.SetSpacing([0.2, 0.3])
    img.SetOrigin([5.0, -7.0])
    img.SetPixel([5, 1], 1234)
    sitk.WriteImage(img, str(tmp_path / "plane.mha"))
    out = load(tmp_path / "plane.mha")
    assert out.shape == (1, 6, 4) and float(out[0, 5, 1]) == 1234.0
    lps = img.TransformIndexToPhysicalPoint([5, 1])
    np.testing.assert_allclose(_world(out.affine, (5, 1, 0))[:2], np.array(lps) * LPS2RAS[:2])
    save(out, tmp_path / "plane2.mha")
    again = sitk.ReadImage(str(tmp_path / "plane2.mha"))
    assert again.GetDimension() == 2
    np.testing.assert_allclose(again.TransformIndexToPhysicalPoint([5, 1]), lps)


def test_tilted_2d_plane_is_saved_as_one_slice_volume(tmp_path):
    aff = np.eye(4)
    aff[:3, :3] = _rotation(0.3, 0.0, 0.0) @ np.diag([0.5, 0.5, 1.0])
    aff[:3, 3] = [1.0, 2.0, 3.0]
    plane = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
    save(MetaTensor(torch.from_numpy(plane), affine=torch.as_tensor(aff)), tmp_path / "tilted.nrrd")
    img = sitk.ReadImage(str(tmp_path / "tilted.nrrd"))
    assert img.GetSize() == (4, 3, 1)
    ras = np.array(img.TransformIndexToPhysicalPoint([3, 2, 0])) * LPS2RAS
    np.testing.assert_allclose(ras, _world(aff, (3, 2, 0)), atol=1e-9)


def _sample(name: str):
    from medseg.data import sample

    try:
        return sample(name)
    except DataFetchError as exc:  # offline machine without a cache
        pytest.skip(f"sample data unavailable: {exc}")


def test_real_pyradiomics_lung_ct_and_label_share_a_grid():
    image_path, label_path = _sample("lung1_image"), _sample("lung1_label")
    image = load(image_path)
    label = load(label_path, kind="label")
    assert image.shape == label.shape == (1, 512, 512, 48)
    assert image.dtype == torch.float32 and not label.dtype.is_floating_point
    np.testing.assert_allclose(label.affine.numpy(), image.affine.numpy(), atol=1e-9)
    lab = label[0].numpy()
    assert set(np.unique(lab).tolist()) == {0, 1}
    # compare with SimpleITK at the nodule's centre: value and world position
    ref = sitk.ReadImage(str(image_path))
    centre = tuple(int(round(v)) for v in np.argwhere(lab == 1).mean(axis=0))
    assert float(image[0][centre]) == pytest.approx(ref.GetPixel(*centre))
    np.testing.assert_allclose(_world(image.affine, centre),
                               np.array(ref.TransformIndexToPhysicalPoint(list(centre))) * LPS2RAS, atol=1e-6)
    # a lung nodule is soft tissue inside air: its mean HU lies far above the lung's
    nodule_hu = float(image[0].numpy()[lab == 1].mean())
    assert -500 < nodule_hu < 200


@pytest.mark.slow
@pytest.mark.parametrize("case", ["lung2", "brain1", "brain2", "breast1"])
def test_other_pyradiomics_pairs_share_a_grid_and_match_simpleitk(case):
    image_path, label_path = _sample(f"{case}_image"), _sample(f"{case}_label")
    image, label = load(image_path), load(label_path, kind="label")
    assert image.shape == label.shape and not label.dtype.is_floating_point
    np.testing.assert_allclose(label.affine.numpy(), image.affine.numpy(), atol=1e-6)
    lab = label[0].numpy()
    assert lab.max() >= 1
    ref = sitk.ReadImage(str(image_path))
    assert image.shape[1:] == ref.GetSize()
    centre = tuple(int(round(v)) for v in np.argwhere(lab > 0).mean(axis=0))
    assert float(image[0][centre]) == pytest.approx(float(ref.GetPixel(*centre)))
    np.testing.assert_allclose(_world(image.affine, centre),
                               np.array(ref.TransformIndexToPhysicalPoint(list(centre))) * LPS2RAS, atol=1e-6)
