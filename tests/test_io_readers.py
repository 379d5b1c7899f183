"""The reader registry (medseg.io.readers): every input goes to one registered reader through the
one suffix table; each reader honours an option or refuses it in one line; Image / LabelMap."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from PIL import Image as PILImage

from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import abdomen_ct
from medseg.errors import InputError, UnsupportedOptionError
from medseg.io import load, read_volume
from medseg.io.readers import (
    DicomSegReader,
    DicomSeriesReader,
    ItkReader,
    NiftiReader,
    PngReader,
    TiffReader,
    read_grid,
    reader_for,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One file per reader, written from one phantom by independent writers (nibabel, SimpleITK,
    Pillow, tifffile, medseg's DICOM writer and highdicom through write_dicom_seg)."""
    import tifffile

    from medseg.io.dicom_seg import write_dicom_seg

    root = tmp_path_factory.mktemp("readers")
    ph = abdomen_ct(shape=(24, 20, 8), spacing=(2.0, 2.5, 4.0), orientation="LPS", seed=5)
    out = {}
    out["nifti"] = root / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ph.image.astype(np.float32), ph.affine), out["nifti"])
    out["nrrd"] = root / "labels.nrrd"
    img = sitk.GetImageFromArray(np.ascontiguousarray(ph.label.astype(np.uint8).T))
    img.SetSpacing((2.0, 2.5, 4.0))
    sitk.WriteImage(img, str(out["nrrd"]))
    out["tiff"] = root / "slice.tif"
    tifffile.imwrite(out["tiff"], ph.label[:, :, 3].astype(np.uint16).T)
    out["png"] = root / "slice.png"
    PILImage.fromarray(ph.label[:, :, 3].astype(np.uint8).T).save(out["png"])
    write_dicom_series(ph.image, ph.affine, root / "dicom")
    out["dicom"] = root / "dicom"
    image = load(root / "dicom")
    labels = MetaTensor(torch.from_numpy(_on_grid(ph, image))[None], affine=image.affine.clone())
    out["seg"] = write_dicom_seg(labels, image, root / "seg.dcm", label_names={1: "liver", 2: "spleen",
                                                                                   3: "kidney_right", 4: "kidney_left"})
    return out


def _on_grid(ph, image) -> np.ndarray:
    """The phantom's labels on the grid the DICOM reader gives (k flipped when it runs the other way)."""
    lab = ph.label.astype(np.uint8)
    if not np.allclose(image.affine.numpy(), ph.affine, atol=1e-4):
        lab = lab[:, :, ::-1]
    return np.ascontiguousarray(lab)


@pytest.mark.parametrize("key, cls", [("nifti", NiftiReader), ("nrrd", ItkReader), ("tiff", TiffReader),
                                      ("png", PngReader), ("dicom", DicomSeriesReader), ("seg", DicomSegReader)])
def test_each_input_goes_to_its_registered_reader(files, key, cls):
    assert type(reader_for(files[key])) is cls


REFUSED = [
    ("nifti", {"series": "modality=CT"}, "series"),
    ("nifti", {"allow_missing_slices": True}, "allow_missing_slices"),
    ("nrrd", {"series": "largest"}, "series"),
    ("nrrd", {"allow_missing_slices": True}, "allow_missing_slices"),
    ("tiff", {"series": "largest"}, "series"),
    ("png", {"allow_missing_slices": True}, "allow_missing_slices"),
    ("seg", {"series": "largest"}, "series"),
    ("seg", {"allow_missing_slices": True}, "allow_missing_slices"),
    ("seg", {"kind": "image"}, "kind"),
]


@pytest.mark.parametrize("key, option, name", REFUSED)
def test_each_reader_refuses_an_option_it_cannot_honour_in_one_line(files, key, option, name):
    for read in (load, read_volume):
        with pytest.raises(UnsupportedOptionError, match=name) as exc:
            read(files[key], **option)
        assert "\n" not in str(exc.value) and files[key].name in str(exc.value)
        assert isinstance(exc.value, InputError)  # exit code 2 on the CLI, as every input error


def test_options_a_reader_honours_are_not_refused(files):
    seg = load(files["seg"], kind="label")
    assert seg.meta["kind"] == "label" and seg.dtype in (torch.int32, torch.int64)
    np.testing.assert_array_equal(seg.numpy(), load(files["seg"], kind="auto").numpy())
    # a DICOM image series asked for a label map: its (whole-number) values become integers, not ignored
    image = load(files["dicom"])
    as_label = read_volume(files["dicom"], kind="label")
    assert as_label.meta["kind"] == "label" and as_label.array.dtype.kind in "iu"
    np.testing.assert_array_equal(as_label.array, image.numpy())
    assert load(files["dicom"], kind="auto").meta["kind"] == "image"
    nrrd = load(files["nrrd"], kind="label", allow_nonfinite=True)
    assert nrrd.dtype == torch.uint8


def test_a_dicom_series_with_fractional_values_is_not_a_label_map(tmp_path):
    ph = abdomen_ct(shape=(16, 16, 4), seed=1)
    write_dicom_series(ph.image, ph.affine, tmp_path / "ct",
                       extra_tags={"RescaleSlope": "0.5", "RescaleIntercept": "0.25"})  # x.25 / x.75 values
    with pytest.raises(InputError, match="label") as exc:
        read_volume(tmp_path / "ct", kind="label")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("key", ["nifti", "nrrd", "tiff", "png"])
def test_read_grid_is_the_grid_of_the_voxels_read(files, key):
    """Header-only where the format allows it: the same grid as a full read."""
    vol = read_volume(files[key], kind="auto")
    grid = read_grid(files[key])
    assert grid.shape == vol.shape[1:]
    np.testing.assert_allclose(grid.affine, vol.affine, atol=1e-6)


def test_nrrd_grid_matches_simpleitk_world_points(files):
    img = sitk.ReadImage(str(files["nrrd"]))
    grid = read_grid(files["nrrd"])
    for idx in [(0, 0, 0), (23, 0, 0), (5, 19, 7)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(idx))
        np.testing.assert_allclose((grid.affine @ [*idx, 1.0])[:3], lps * [-1, -1, 1], atol=1e-4)


def test_image_and_label_map_types_decide_interpolation(files):
    from medseg.io.image import Image, LabelMap, to_image

    ct = to_image(load(files["nifti"]))
    labels = to_image(load(files["nrrd"], kind="label"))
    assert type(ct) is Image and ct.interpolation == "linear"
    assert type(labels) is LabelMap and labels.interpolation == "nearest"
    assert ct.geometry.spacing == pytest.approx((2.0, 2.5, 4.0))
    assert ct.tensor is ct.data and ct.dicom is None  # the MetaTensor existing callers use, unchanged
    with pytest.raises(InputError, match="integers"):
        LabelMap.of(load(files["nifti"]))
    dicom = Image.of(load(files["dicom"]))
    assert dicom.dicom is not None and dicom.dicom.series_instance_uid == dicom.meta["series_instance_uid"]
    assert dicom.dicom.sop_instance_uids == [u for u in dicom.meta["sop_instance_uids"] if u]
    from_volume = Image.of(read_volume(files["nifti"]))
    np.testing.assert_array_equal(from_volume.tensor.numpy(), ct.numpy())
    np.testing.assert_allclose(from_volume.tensor.affine.numpy(), ct.affine)


def test_every_reader_output_carries_the_same_meta_keys(files):
    """One Volume -> MetaTensor path: the keys MONAI's writers and inverses read are always there."""
    for key in ("nifti", "nrrd", "tiff", "png", "dicom", "seg"):
        meta = load(files[key], kind="label" if key == "seg" else None).meta
        for k in ("space", "filename_or_obj", "spatial_shape", "original_affine", "original_channel_dim",
                  "format", "kind"):
            assert k in meta, (key, k)
        assert Path(meta["filename_or_obj"]) == files[key]
