"""TIFF / PNG: axis order (i = column x, j = row y), spacing from resolution tags, channels,
z-stacks, label maps; real stardist nuclei checked against tifffile and SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import torch
from PIL import Image

from medseg.errors import DataFetchError, InputError
from medseg.io import describe, load, save

LPS2RAS = np.array([-1.0, -1.0, 1.0])


def _sample(name: str):
    from medseg.data import sample

    try:
        return sample(name)
    except DataFetchError as exc:  # offline machine without a cache
        pytest.skip(f"sample data unavailable: {exc}")


def _world(aff, idx) -> np.ndarray:
    return (np.asarray(aff, dtype=np.float64) @ np.array([*idx, 1.0]))[:3]


def test_real_stardist_nuclei_image_matches_tifffile_and_simpleitk():
    path = _sample("nuclei_image")
    raw = tifffile.imread(path)
    assert raw.dtype == np.uint16 and raw.shape == (512, 512)
    out = load(path)
    assert out.shape == (1, 512, 512) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[0].numpy(), raw.T.astype(np.float32))  # [x, y] == picture[y, x]
    assert out.meta["modality"] == "microscopy" and out.meta["spacing_source"] == "default"
    ref = sitk.ReadImage(str(path))
    for x, y in ((0, 0), (400, 37), (13, 511)):
        assert float(out[0, x, y]) == ref.GetPixel(x, y)
        np.testing.assert_allclose(_world(out.affine, (x, y, 0)),
                                   np.array([*ref.TransformIndexToPhysicalPoint([x, y]), 0.0]) * LPS2RAS)
    info = describe(path)
    assert info["spacing_source"] == "default" and any("spacing 1.0" in w for w in info["warnings"])


def test_real_stardist_instance_mask_as_labels():
    path = _sample("nuclei_mask")
    raw = tifffile.imread(path)
    out = load(path, kind="label")
    assert out.dtype == torch.uint16 and out.meta["kind"] == "label"
    np.testing.assert_array_equal(out[0].numpy(), raw.T)
    assert len(np.unique(out.numpy())) - 1 == len(np.unique(raw)) - 1 == 125


def test_tiff_resolution_in_cm_agrees_with_simpleitk(tmp_path):
    pic = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, pic, resolution=(2000, 2500), resolutionunit="CENTIMETER")
    out = load(path)
    assert out.shape == (1, 30, 20)
    np.testing.assert_allclose(out.meta["spacing"], (0.005, 0.004))
    assert out.meta["spacing_source"] == "tiff_resolution"
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(ref.GetSpacing(), out.meta["spacing"])
    np.testing.assert_allclose(_world(out.affine, (29, 19, 0))[:2],
                               np.array(ref.TransformIndexToPhysicalPoint([29, 19])) * LPS2RAS[:2])


def test_imagej_zstack_in_microns(tmp_path):
    stack = np.zeros((4, 20, 30), np.uint16)  # (z, y, x)
    stack[3, 5, 7] = 999
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 0.325, 1 / 0.5),
                     metadata={"unit": "um", "spacing": 2.0, "axes": "ZYX"})
    out = load(path)
    assert out.shape == (1, 30, 20, 4)
    assert tuple(int(v) for v in np.argwhere(out[0].numpy() == 999)[0]) == (7, 5, 3)
    np.testing.assert_allclose(out.meta["spacing"], (0.000325, 0.0005, 0.002), rtol=1e-6)


def test_tiff_channels_rgb_and_cyx(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[2, 9] = (10, 20, 30)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    out = load(tmp_path / "rgb.tif")
    assert out.shape == (3, 12, 10)
    assert out[:, 9, 2].tolist() == [10.0, 20.0, 30.0]
    cyx = np.zeros((2, 10, 12), np.float32)
    cyx[1, 4, 6] = 5.5
    tifffile.imwrite(tmp_path / "cyx.tif", cyx, metadata={"axes": "CYX"})
    out = load(tmp_path / "cyx.tif")
    assert out.shape == (2, 12, 10) and float(out[1, 6, 4]) == 5.5
    tifffile.imwrite(tmp_path / "time.tif", np.zeros((3, 10, 12), np.uint8), metadata={"axes": "TYX"})
    with pytest.raises(InputError, match="'T' dimension of size 3"):
        load(tmp_path / "time.tif")


def test_png_gray_rgb_palette_and_dpi(tmp_path):
    gray = np.zeros((20, 30), np.uint8)
    gray[3, 25] = 200
    Image.fromarray(gray).save(tmp_path / "g.png", dpi=(254, 127))
    out = load(tmp_path / "g.png")
    assert out.shape == (1, 30, 20) and float(out[0, 25, 3]) == 200.0
    np.testing.assert_allclose(out.meta["spacing"], (0.1, 0.2), rtol=1e-6)
    assert out.meta["spacing_source"] == "png_phys"
    ref = sitk.ReadImage(str(tmp_path / "g.png"))
    assert ref.GetPixel(25, 3) == 200  # same (x, y) addressing as SimpleITK

    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[1, 2] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = load(tmp_path / "c.png")
    assert out.shape == (3, 9, 8) and out[:, 2, 1].tolist() == [1.0, 2.0, 3.0]
    assert out.meta["spacing_source"] == "default"

    labels = np.zeros((8, 9), np.uint8)
    labels[4:6, 1:3] = 2
    pal = Image.fromarray(labels, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "p.png")
    as_labels = load(tmp_path / "p.png", kind="label")
    assert as_labels.dtype == torch.uint8
    np.testing.assert_array_equal(as_labels[0].numpy(), labels.T)
    as_colours = load(tmp_path / "p.png")
    assert as_colours.shape == (3, 9, 8) and as_colours[:, 1, 4].tolist() == [0.0, 255.0, 0.0]


def test_tiff_to_nifti_keeps_simpleitk_world_position(tmp_path):
    import nibabel as nib

    pic = np.zeros((16, 24), np.uint16)
    pic[11, 5] = 4000
    tifffile.imwrite(tmp_path / "cells.tif", pic, resolution=(100, 200), resolutionunit="CENTIMETER")
    save(load(tmp_path / "cells.tif"), tmp_path / "cells.nii.gz")
    nii = nib.load(tmp_path / "cells.nii.gz")
    ijk = np.argwhere(np.asarray(nii.dataobj) == 4000)[0]
    assert tuple(ijk) == (5, 11)
    ref = sitk.ReadImage(str(tmp_path / "cells.tif"))
    np.testing.assert_allclose(_world(nii.affine, (*ijk, 0))[:2],
                               np.array(ref.TransformIndexToPhysicalPoint([5, 11])) * LPS2RAS[:2], atol=1e-6)


def test_ome_tiff_physical_sizes(tmp_path):
    stack = np.zeros((3, 10, 12), np.uint16)
    stack[2, 7, 11] = 321
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, stack, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.5,
        "PhysicalSizeYUnit": "nm"})
    out = load(path)
    assert out.shape == (1, 12, 10, 3) and float(out[0, 11, 7, 2]) == 321.0
    np.testing.assert_allclose(out.meta["spacing"], (0.2e-3, 0.3e-6, 1.5e-3), rtol=1e-9)
    assert out.meta["spacing_source"] == "ome"
