"""Training dataset readers: MSD, nnU-Net raw v2, images/+labels/ folders, CSV; grid validation;
deterministic splits. Data: medseg's abdomen phantoms and NIfTI/NRRD files written here."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import ConfigError, InputError
from medseg.training.datasets import (
    detect_format,
    load_dataset,
    read_grid,
    split_cases,
    validate_dataset,
)

AFF = np.array([[-1.5, 0, 0, 30.0], [0, -1.5, 0, 20.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])


def _nii(path, array, affine=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _pair(root, stem, shape=(12, 10, 8), label_affine=AFF, label_shape=None, sub=("images", "labels")):
    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    lab = np.zeros(label_shape or shape, np.uint8)
    lab[2:5, 2:5, 2:5] = 1
    _nii(root / sub[0] / f"{stem}.nii.gz", img)
    _nii(root / sub[1] / f"{stem}.nii.gz", lab, label_affine)


@pytest.fixture(scope="module")
def msd_root(tmp_path_factory):
    from medseg.data.phantoms import write_decathlon_dataset

    return write_decathlon_dataset(tmp_path_factory.mktemp("msd") / "Task01", task="abdomen", n_train=5,
                                   n_test=1, shape=(24, 24, 16), seed=3)


def test_msd_reader(msd_root):
    ds = load_dataset(msd_root)
    meta = json.loads((msd_root / "dataset.json").read_text())
    assert ds.format == "msd" and detect_format(msd_root) == "msd"
    assert ds.labels == {int(k): v for k, v in meta["labels"].items() if k != "0"}
    assert ds.labels[1] == "liver"
    assert ds.modality == "CT" and ds.channel_names == ["CT"]
    train = ds.training_cases()
    assert len(train) == meta["numTraining"] == 5
    assert sorted(c["id"] for c in ds.cases if c["split"] == "test") == ["abdomen_005"]
    for c in train:
        assert c["image"][0].is_file() and c["label"].is_file()
        assert c["label"].name == c["image"][0].name


def test_nnunet_reader_channels(tmp_path):
    from medseg.data.phantoms import write_decathlon_dataset

    root = write_decathlon_dataset(tmp_path / "Dataset001", task="abdomen", n_train=3, n_test=1,
                                   shape=(20, 20, 12), seed=1, layout="nnunet")
    ds = load_dataset(root)
    assert ds.format == "nnunet"
    assert ds.labels == {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}
    assert [c["id"] for c in ds.training_cases()] == ["abdomen_000", "abdomen_001", "abdomen_002"]
    assert all(c["image"][0].name.endswith("_0000.nii.gz") for c in ds.cases)
    assert [c["id"] for c in ds.cases if c["split"] == "test"] == ["abdomen_003"]
    # a second channel declared but not on disk is a missing file, named by case
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "PET"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"case 'abdomen_000'.*abdomen_000_0001\.nii\.gz.*missing"):
        load_dataset(root)
    # provide the second channel: two channel paths per case
    for c in range(3):
        src = root / "imagesTr" / f"abdomen_{c:03d}_0000.nii.gz"
        (root / "imagesTr" / f"abdomen_{c:03d}_0001.nii.gz").write_bytes(src.read_bytes())
    (root / "imagesTs" / "abdomen_003_0001.nii.gz").write_bytes(
        (root / "imagesTs" / "abdomen_003_0000.nii.gz").read_bytes())
    ds2 = load_dataset(root)
    assert ds2.n_channels == 2 and all(len(c["image"]) == 2 for c in ds2.cases)


def test_folder_and_csv_readers(tmp_path):
    root = tmp_path / "pairs"
    for s in ("b_case", "a_case", "c_case"):
        _pair(root, s)
    (root / "labels.json").write_text(json.dumps({"labels": {"0": "background", "1": "tumour"}}))
    ds = load_dataset(root)
    assert ds.format == "folder" and [c["id"] for c in ds.cases] == ["a_case", "b_case", "c_case"]
    assert ds.labels == {1: "tumour"}
    # labels scanned from the files when nothing declares them
    (root / "labels.json").unlink()
    assert load_dataset(root).labels == {1: "label_1"}

    csv = tmp_path / "list.csv"
    csv.write_text("image,label,split\n"
                   "pairs/images/a_case.nii.gz,pairs/labels/a_case.nii.gz,train\n"
                   "pairs/images/b_case.nii.gz,pairs/labels/b_case.nii.gz,val\n"
                   "pairs/images/c_case.nii.gz,pairs/labels/c_case.nii.gz,train\n")
    ds = load_dataset(csv, labels={1: "tumour"})
    assert ds.format == "csv" and detect_format(csv) == "csv"
    train, val = split_cases(ds, seed=123)
    assert [c["id"] for c in val] == ["b_case"] and [c["id"] for c in train] == ["a_case", "c_case"]
    csv.write_text("image,label,split\npairs/images/a_case.nii.gz,pairs/labels/a_case.nii.gz,holdout\n")
    with pytest.raises(InputError, match="line 2: split 'holdout'"):
        load_dataset(csv)


def test_folder_unpaired_image_is_named(tmp_path):
    _pair(tmp_path, "case1")
    _nii(tmp_path / "images" / "case2.nii.gz", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(InputError, match="case 'case2': image has no label"):
        load_dataset(tmp_path)


def test_grid_mismatch_names_the_case(tmp_path):
    _pair(tmp_path, "good")
    _pair(tmp_path, "shifted", label_affine=AFF + np.array([[0, 0, 0, 0.01]] * 3 + [[0, 0, 0, 0]]))
    with pytest.raises(InputError, match=r"case 'shifted'.*affine differs.*0\.01 mm"):
        load_dataset(tmp_path, labels={1: "x"})
    # within 1e-3 mm is the same grid
    _pair(tmp_path, "shifted", label_affine=AFF + np.array([[0, 0, 0, 4e-4]] * 3 + [[0, 0, 0, 0]]))
    load_dataset(tmp_path, labels={1: "x"})
    _pair(tmp_path, "small", label_shape=(12, 10, 7))
    with pytest.raises(InputError, match=r"case 'small'.*shape \(12, 10, 7\) differs"):
        load_dataset(tmp_path, labels={1: "x"})


def test_msd_missing_file(msd_root, tmp_path):
    meta = json.loads((msd_root / "dataset.json").read_text())
    meta["training"][1]["label"] = "./labelsTr/nowhere.nii.gz"
    meta["training"] = [{k: str((msd_root / v).resolve()) for k, v in e.items()} for e in meta["training"]]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="case 'abdomen_001': file 'nowhere.nii.gz' is missing"):
        load_dataset(tmp_path)


def test_unknown_dataset_and_format(tmp_path):
    with pytest.raises(InputError, match="not a recognised dataset"):
        load_dataset(tmp_path)
    with pytest.raises(ConfigError, match="format 'zarr' unknown"):
        load_dataset(tmp_path, format="zarr")


def test_split_is_deterministic_and_disjoint(msd_root):
    ds = load_dataset(msd_root, validate=False)
    a = split_cases(ds, val_fraction=0.4, seed=7)
    b = split_cases(ds, val_fraction=0.4, seed=7)
    assert [c["id"] for c in a[1]] == [c["id"] for c in b[1]]
    assert len(a[1]) == 2 and len(a[0]) == 3
    assert not {c["id"] for c in a[0]} & {c["id"] for c in a[1]}
    splits = {tuple(sorted(c["id"] for c in split_cases(ds, val_fraction=0.4, seed=s)[1]))
              for s in range(12)}
    assert len(splits) > 1  # the seed matters


def test_read_grid_matches_simpleitk_world_coordinates(tmp_path):
    """NRRD header geometry -> RAS affine agrees with SimpleITK's own index->LPS point mapping."""
    img = sitk.GetImageFromArray(np.zeros((6, 7, 8), np.int16))  # sitk array is (k, j, i)
    img.SetSpacing((0.8, 1.1, 3.0))
    img.SetOrigin((12.0, -40.0, 7.5))
    th = np.deg2rad(20)
    img.SetDirection((np.cos(th), -np.sin(th), 0, np.sin(th), np.cos(th), 0, 0, 0, 1))
    path = tmp_path / "x.nrrd"
    sitk.WriteImage(img, str(path))
    shape, affine = read_grid(path)
    assert shape == (8, 7, 6)
    for idx in [(0, 0, 0), (7, 0, 0), (3, 6, 5), (1, 2, 3)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(idx))
        ras = affine @ np.array([*idx, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)


def test_validate_counts_channels(msd_root):
    ds = load_dataset(msd_root, validate=False)
    ds.channel_names = ["CT", "PET"]
    with pytest.raises(InputError, match="1 image channel"):
        validate_dataset(ds)
