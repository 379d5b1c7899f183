"""Random flips respect anatomy: no left-right flip when a label has a side, no superior-inferior
flip when labels are ordered vertebral levels, every axis for unsided tasks; overridable from the
API and ``medseg train --flip-axes``, and recorded in the run folder.

The world-coordinate checks read the phantom files back with nibabel (independent of medseg) and
compare where each structure lies (RAS mm) with where it lies in the augmented patch that the
network is fed, interpreted on the preprocessed grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import RandFlipd

from medseg.cli import main
from medseg.data.phantoms import nuclei_2d, write_decathlon_dataset
from medseg.errors import ConfigError
from medseg.labels import LABELS
from medseg.training.pipeline import base_transforms, flip_plan, training_transforms
from medseg.transforms.augment import (
    AugmentationConfig,
    label_is_ordered,
    label_is_sided,
    parse_flip_axes,
    resolve_flip_axes,
    seed_augmentation,
    training_augmentation,
)

ABDOMEN = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}
#: only flips, always applied: any flip the policy lets through shows up in every patch
ALWAYS_FLIP = AugmentationConfig(p_affine=0.0, p_flip=1.0, p_intensity=0.0, p_gamma=0.0, p_noise=0.0,
                                 bias_field=False)


def _flipped_axes(chain) -> set[int]:
    axes = set()
    for t in chain.transforms:
        if isinstance(t, RandFlipd):
            axes.update(int(a) for a in np.atleast_1d(t.flipper.spatial_axis))
    return axes


# ------------------------------------------------------------------------- the policy itself


def test_registry_laterality_is_sided_and_levels_are_ordered():
    for name, d in LABELS.items():
        if d.property_modifier is not None:  # SNOMED Left / Right in DICOM SEG
            assert label_is_sided(name), name
        assert label_is_ordered(name) == name.startswith("vertebra_"), name
    for name in ("Left-Hippocampus", "ctx-rh-insula", "kidneyR", "rib_left_3", "Right Lung"):
        assert label_is_sided(name), name
    for name in ("lesion", "lung_nodule", "nucleus", "brain", "foreground", "tumour core", "lung"):
        assert not label_is_sided(name) and not label_is_ordered(name), name
    for name in ("T12", "disc_L4_L5", "rib_left_3", "vertebrae_C7"):
        assert label_is_ordered(name), name


@pytest.mark.parametrize("names, axcodes, dims, expected", [
    (list(ABDOMEN.values()), "RAS", 3, (1, 2)),          # sided: no L-R flip
    (["vertebra_L1", "vertebra_L2"], "RAS", 3, (0, 1)),  # ordered: no S-I flip
    (["vertebra_L1", "kidney_left"], "RAS", 3, (1,)),
    (["kidney_left"], "ASR", 3, (0, 1)),                 # L-R is the third voxel axis here
    (["vertebra_L1"], "SPL", 3, (1, 2)),                 # S-I is the first voxel axis here
    (["brain"], "RAS", 3, (0, 1, 2)),                    # unsided task keeps every flip
    (["nucleus"], None, 2, (0, 1)),
    (["lung_left", "lung_right"], None, 2, ()),          # radiograph: side axis unknown -> none
])
def test_auto_axes(names, axcodes, dims, expected):
    plan = resolve_flip_axes("auto", names, spatial_dims=dims, axcodes=axcodes)
    assert plan.mode == "auto" and plan.axes == expected, plan.reason


def test_explicit_none_unknown_and_bad_values():
    assert resolve_flip_axes((0, 1, 2), ["kidney_left"], spatial_dims=3, axcodes="RAS").axes == (0, 1, 2)
    assert resolve_flip_axes((0, 2), ["nucleus"], spatial_dims=2, axcodes=None).axes == (0,)
    assert resolve_flip_axes("none", ["brain"], spatial_dims=3, axcodes="RAS").axes == ()
    assert resolve_flip_axes((), ["brain"], spatial_dims=3, axcodes="RAS").mode == "none"
    unknown = resolve_flip_axes("auto", None, spatial_dims=3, axcodes="RAS")
    assert unknown.axes == () and "unknown" in unknown.reason
    assert parse_flip_axes(" Auto ") == "auto" and parse_flip_axes("0,2") == (0, 2)
    for bad in ("0,3", "x", "0,0", "", "-1"):
        with pytest.raises(ConfigError, match="flip axes"):
            parse_flip_axes(bad)


# ------------------------------------------------------------------- the chain that is built


def test_built_chains_flip_only_allowed_axes():
    # default config: auto, resolved from the labels and the preset's orientation code
    assert _flipped_axes(training_transforms("ct_abdomen", ABDOMEN, (16, 16, 16), modality="CT",
                                             num_samples=1)) == {1, 2}
    assert _flipped_axes(training_transforms("mr_brain", {1: "brain"}, (16, 16, 16), modality="MR",
                                             num_samples=1)) == {0, 1, 2}
    assert _flipped_axes(training_transforms("fluo_nuclei", {1: "nucleus"}, (32, 32), modality="microscopy",
                                             num_samples=1)) == {0, 1}
    # classes=["liver"] -> the liver alone is still on one side; a lesion alone is not
    assert flip_plan("ct_abdomen", {1: "liver", 2: "lesion"}, (16, 16, 16), remap={2: 1}).axes == (0, 1, 2)
    assert flip_plan("ct_abdomen", {1: "liver", 2: "lesion"}, (16, 16, 16), remap={1: 1}).axes == (1, 2)
    # explicit axes are honoured (the old behaviour, now opt-in)
    old = AugmentationConfig(flip_axes=(0, 1, 2))
    assert _flipped_axes(training_transforms("ct_abdomen", ABDOMEN, (16, 16, 16), modality="CT",
                                             num_samples=1, augmentation=old)) == {0, 1, 2}
    # a bare augmentation chain without label names flips nothing under auto
    assert _flipped_axes(training_augmentation((16, 16, 16))) == set()


def _world_centroids_nibabel(label_path, values) -> dict[int, np.ndarray]:
    img = nib.load(str(label_path))
    arr = np.asarray(img.dataobj)
    out = {}
    for v in values:
        ijk = np.argwhere(arr == v).mean(axis=0)
        out[v] = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
    return out


def _patch_world(patch_label: np.ndarray, affine: np.ndarray, values) -> dict[int, np.ndarray]:
    """Centroids of a patch's labels, read on the preprocessed grid (the network's view)."""
    out = {}
    for v in values:
        ijk = np.argwhere(patch_label == v).mean(axis=0)
        out[v] = affine[:3, :3] @ ijk + affine[:3, 3]
    return out


def _augment_whole_volume(ds, preset, labels, config, overrides=None):
    """Preprocess case 0, then run the training chain with a patch as large as the preprocessed
    volume (the crop keeps everything). Returns (preprocessed affine, augmented label patches)."""
    case = {"image": [str(next((ds / "imagesTr").iterdir()))], "label": str(next((ds / "labelsTr").iterdir()))}
    base = base_transforms(preset, labels, preset_overrides=overrides)(dict(case))
    affine = np.asarray(base["label"].affine, dtype=float)
    patch = tuple(base["label"].shape[1:])
    chain = seed_augmentation(training_transforms(preset, labels, patch, modality="CT", num_samples=2,
                                                  augmentation=config, preset_overrides=overrides), 3)
    return affine, [np.asarray(s["label"])[0] for s in chain(dict(case))]


@pytest.fixture(scope="module")
def abdomen_ds(tmp_path_factory):
    # stored in LPS voxel order, so the preset's Orientation(RAS) really reorders the axes
    return write_decathlon_dataset(tmp_path_factory.mktemp("abd") / "ds", task="abdomen", n_train=1, n_test=0,
                                   shape=(40, 40, 24), seed=1, orientation="LPS")


def test_left_kidney_stays_on_patients_left_after_augmentation(abdomen_ds):
    truth = _world_centroids_nibabel(next((abdomen_ds / "labelsTr").iterdir()), ABDOMEN)
    # independent facts of the phantom (nibabel, RAS mm: +x is the patient's right)
    assert truth[4][0] < truth[3][0] and truth[2][0] < truth[1][0]
    affine, patches = _augment_whole_volume(abdomen_ds, "ct_abdomen", ABDOMEN, ALWAYS_FLIP)
    assert len(patches) == 2
    for lab in patches:
        seen = _patch_world(lab, affine, ABDOMEN)
        for v in ABDOMEN:  # same side, same left-right position (within 2 voxels of 1.5 mm)
            assert seen[v][0] == pytest.approx(truth[v][0], abs=3.0), (ABDOMEN[v], seen[v], truth[v])
        assert seen[4][0] < seen[3][0]  # kidney_left left of kidney_right
        assert seen[2][0] < seen[1][0]  # spleen left of liver
        # the allowed flips did happen (p=1): superior-inferior is mirrored about the volume centre
        assert np.sign(seen[1][2] - seen[3][2]) != np.sign(truth[1][2] - truth[3][2])

    # control: the old default (flip every axis) puts the left kidney on the patient's right
    _, patches = _augment_whole_volume(abdomen_ds, "ct_abdomen", ABDOMEN, AugmentationConfig(
        flip_axes=(0, 1, 2), p_affine=0.0, p_flip=1.0, p_intensity=0.0, p_gamma=0.0, p_noise=0.0))
    seen = _patch_world(patches[0], affine, ABDOMEN)
    assert seen[4][0] > seen[3][0]


def test_vertebral_order_kept_along_superior_inferior(tmp_path):
    ds = write_decathlon_dataset(tmp_path / "spine", task="spine", n_train=1, n_test=0, shape=(32, 32, 48),
                                 seed=2, orientation="LPS")
    labels = {int(k): v for k, v in json.loads((ds / "dataset.json").read_text())["labels"].items() if k != "0"}
    lab_path = next((ds / "labelsTr").iterdir())
    present = sorted(int(v) for v in np.unique(np.asarray(nib.load(str(lab_path)).dataobj)) if v)
    assert len(present) >= 3
    truth = _world_centroids_nibabel(lab_path, present)
    # the phantom's levels run from superior (low value, e.g. T12) to inferior (L5) in world z
    zs = [truth[v][2] for v in present]
    assert zs == sorted(zs, reverse=True)
    overrides = {"target_spacing": [2.0, 2.0, 2.0]}
    affine, patches = _augment_whole_volume(ds, "ct_spine", labels, ALWAYS_FLIP, overrides)
    for lab in patches:
        seen = _patch_world(lab, affine, present)
        assert [seen[v][2] for v in present] == pytest.approx(zs, abs=3.0)
    _, patches = _augment_whole_volume(ds, "ct_spine", labels, AugmentationConfig(
        flip_axes=(2,), p_affine=0.0, p_flip=1.0, p_intensity=0.0, p_gamma=0.0, p_noise=0.0), overrides)
    seen = _patch_world(patches[0], affine, present)
    assert [seen[v][2] for v in present] == sorted(seen[v][2] for v in present)  # order reversed


def test_unsided_nuclei_keep_their_flips():
    ph = nuclei_2d(shape=(48, 40), n=8, seed=4)
    import torch
    from monai.data import MetaTensor

    img = MetaTensor(torch.from_numpy(ph.image.astype(np.float32))[None])
    lab = MetaTensor(torch.from_numpy(ph.label.astype(np.int64))[None])
    chain = seed_augmentation(training_augmentation((48, 40), num_samples=1, config=ALWAYS_FLIP,
                                                    label_names=["nucleus"], axcodes=None, modality="microscopy"), 0)
    (out,) = chain({"image": img, "label": lab})
    np.testing.assert_array_equal(np.asarray(out["label"])[0], ph.label[::-1, ::-1])


# ------------------------------------------------------------------------------ the CLI


def _train_cli(ds, out, *extra) -> int:
    return main(["train", str(ds), "--preset", "ct_abdomen", "--network",
                 json.dumps({"arch": "unet", "channels": [4, 8], "num_res_units": 0}), "--output", str(out),
                 "--epochs", "1", "--patch", "16,16,8", "--num-workers", "0", "--device", "cpu",
                 "--val-fraction", "0", *extra])


def test_cli_flip_axes_default_override_and_record(tmp_path, capsys):
    from test_training_loop import make_sphere_msd

    ds = make_sphere_msd(tmp_path / "ds", n=1, shape=(16, 16, 12))  # one label: "liver"
    assert _train_cli(ds, tmp_path / "auto") == 0
    err = capsys.readouterr().err
    assert "medseg train: augmentation flips voxel axes [1, 2] (auto): sided labels (liver)" in err
    plan = json.loads((tmp_path / "auto/train_config.json").read_text())["flip_plan"]
    assert plan["mode"] == "auto" and plan["axes"] == [1, 2] and "L-R (axis 0)" in plan["reason"]

    assert _train_cli(ds, tmp_path / "all", "--flip-axes", "0,1,2") == 0
    plan = json.loads((tmp_path / "all/train_config.json").read_text())["flip_plan"]
    assert plan["mode"] == "explicit" and plan["axes"] == [0, 1, 2]
    assert json.loads((tmp_path / "all/train_config.json").read_text())["augmentation"]["flip_axes"] == [0, 1, 2]
    capsys.readouterr()

    assert _train_cli(ds, tmp_path / "bad", "--flip-axes", "0,5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medseg: error: flip axes '0,5' are invalid")
    assert not (tmp_path / "bad").exists()


def test_resume_refuses_a_different_flip_plan(tmp_path, capsys):
    from test_training_loop import make_sphere_msd

    ds = make_sphere_msd(tmp_path / "ds", n=1, shape=(16, 16, 12))
    assert _train_cli(ds, tmp_path / "run", "--flip-axes", "none") == 0
    capsys.readouterr()
    rc = main(["train", str(ds), "--preset", "ct_abdomen", "--network",
               json.dumps({"arch": "unet", "channels": [4, 8], "num_res_units": 0}), "--output",
               str(tmp_path / "run"), "--epochs", "2", "--patch", "16,16,8", "--num-workers", "0",
               "--device", "cpu", "--val-fraction", "0", "--resume"])  # default auto: axes [1, 2]
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["medseg: error: --resume: the interrupted run flipped axes [], this one would flip [1, 2]; "
                   "pass --flip-axes none to continue it"]
    assert _train_cli(ds, tmp_path / "run", "--flip-axes", "none", "--resume", "--epochs", "2") == 0
    assert json.loads((tmp_path / "run/metrics.json").read_text())["epochs_completed"] == 2
