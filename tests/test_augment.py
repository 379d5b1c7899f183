"""Augmentation chains: labels stay integer (nearest only) and aligned with the image, seeds
reproduce, foreground-balanced sampling, composition with the preprocessing preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.errors import ConfigError
from medseg.transforms.augment import (
    NO_AUGMENTATION,
    AugmentationConfig,
    seed_augmentation,
    training_augmentation,
)

STRONG = AugmentationConfig(rotate_deg=30, scale=0.2, p_affine=1.0, flip_axes=(0, 1, 2), p_flip=0.5, elastic=True,
                            p_elastic=1.0, p_intensity=1.0, p_gamma=1.0, p_noise=1.0, bias_field=True,
                            p_bias=1.0)


def _case(shape=(40, 36, 28)):
    """A label with three blobs (values 1, 2, 3) and an image that is a known function of it."""
    lab = np.zeros(shape, np.int64)
    lab[5:18, 6:20, 4:14] = 1
    lab[22:34, 10:26, 12:24] = 2
    lab[8:14, 24:32, 18:26] = 3
    img = (lab * 100.0).astype(np.float32)
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    return {"image": MetaTensor(torch.from_numpy(img)[None], affine=aff),
            "label": MetaTensor(torch.from_numpy(lab)[None], affine=aff)}


def test_label_nearest_and_aligned_with_image():
    tf = seed_augmentation(training_augmentation((24, 24, 16), num_samples=4, config=STRONG), 0)
    n_checked = 0
    for _rep in range(2):
        for s in tf(_case()):
            img, lab = s["image"].numpy()[0], s["label"].numpy()[0]
            assert img.shape == lab.shape == (24, 24, 16)
            # nearest only: every label value is one of the original integers
            assert set(np.unique(lab)).issubset({0, 1, 2, 3}), np.unique(lab)
            # alignment: the image was label*100 before augmentation, so where the label is 2 or 3
            # the (interpolated, intensity-jittered) image must be clearly brighter than at label 0
            fg, bg = lab >= 2, lab == 0
            if fg.sum() > 50 and bg.sum() > 50:
                assert np.median(img[fg]) > np.median(img[bg]) + 0.5 * (img.max() - img.min()) / 4
                n_checked += 1
    assert n_checked >= 3


def test_seeded_runs_reproduce_and_seeds_differ():
    outs = []
    for seed in (5, 5, 6):
        tf = seed_augmentation(training_augmentation((24, 24, 16), num_samples=2, config=STRONG), seed)
        outs.append(tf(_case()))
    for a, b in zip(outs[0], outs[1], strict=True):
        assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))
        assert torch.equal(torch.as_tensor(a["label"]), torch.as_tensor(b["label"]))
    assert not torch.equal(torch.as_tensor(outs[0][0]["image"]), torch.as_tensor(outs[2][0]["image"]))


def test_positive_sampling_centres_on_foreground():
    tf = seed_augmentation(training_augmentation((8, 8, 8), num_samples=8, pos=1, neg=0,
                                                 config=NO_AUGMENTATION), 1)
    for s in tf(_case()):
        lab = s["label"].numpy()[0]
        assert lab[4, 4, 4] > 0 or lab[3:5, 3:5, 3:5].any()  # centre voxel (even size: 3 or 4)


def _mass_and_nodule():
    """A 16x16x16 'mass' (4096 voxels) and a 3x3x3 'nodule' (27 voxels) 40 voxels apart; the image
    is 1000 * label + the voxel's index along axis 0, so a patch tells where it was cut."""
    lab = np.zeros((64, 32, 32), np.int64)
    lab[4:20, 8:24, 8:24] = 1
    lab[54:57, 14:17, 14:17] = 1
    aff = np.diag([1.5, 1.5, 1.5, 1.0])
    img = (1000 * lab + np.arange(64)[:, None, None]).astype(np.float32)
    return {"image": MetaTensor(torch.from_numpy(img)[None], affine=aff),
            "label": MetaTensor(torch.from_numpy(lab)[None], affine=aff)}


def _nodule_share(balanced: bool) -> float:
    """Share of 200 patches (16^3, pos:neg 3:1) that hold the nodule."""
    cfg = AugmentationConfig(p_affine=0.0, flip_axes=(), p_intensity=0.0, p_gamma=0.0, p_noise=0.0,
                             bias_field=False, balance_components=balanced)
    tf = seed_augmentation(training_augmentation((16, 16, 16), num_samples=20, pos=3, neg=1, config=cfg), 3)
    hits = n = 0
    for _ in range(10):
        for patch in tf(_mass_and_nodule()):
            lab, img = patch["label"].numpy()[0], patch["image"].numpy()[0]
            assert lab.shape == (16, 16, 16) and "crop_weight" not in patch
            assert np.array_equal(img >= 1000, lab > 0)  # image and label cut at the same place
            hits += bool(lab.sum() and (img % 1000).min() > 30)  # foreground beyond index 30: the nodule
            n += 1
    return hits / n


def test_component_balanced_sampling_finds_the_small_nodule():
    # Plain sampling picks foreground VOXELS: the nodule (27 of 4123) is a positive centre about
    # 0.75 * 27 / 4123 = 0.5 % of the time, plus background centres that happen to land near it
    # (about 7 % here). Balanced sampling picks a component first: 0.75 / 2 = 37.5 % more.
    plain, balanced = _nodule_share(False), _nodule_share(True)
    assert plain < 0.12, plain
    assert balanced > plain + 0.25, (plain, balanced)


def test_component_weights_split_foreground_equally():
    from medseg.transforms.augment import ComponentCropWeightd

    w = ComponentCropWeightd(pos=3, neg=1)(_mass_and_nodule())["crop_weight"][0]
    lab = _mass_and_nodule()["label"].numpy()[0] > 0
    assert w[:30][lab[:30]].sum() == pytest.approx(0.375, rel=1e-5)  # the mass
    assert w[30:][lab[30:]].sum() == pytest.approx(0.375, rel=1e-5)  # the nodule
    assert w[~lab].sum() == pytest.approx(0.25, rel=1e-5)
    with pytest.raises(ConfigError):
        ComponentCropWeightd(pos=0, neg=0)


def test_small_volume_is_padded_2d():
    img = MetaTensor(torch.rand(1, 20, 12))
    lab = MetaTensor((torch.rand(1, 20, 12) > 0.7).long())
    out = training_augmentation((32, 32), num_samples=2)({"image": img, "label": lab})
    assert [tuple(o["image"].shape) for o in out] == [(1, 32, 32), (1, 32, 32)]
    assert set(torch.unique(torch.as_tensor(out[0]["label"])).tolist()) <= {0, 1}


def test_bad_patch_is_config_error():
    with pytest.raises(ConfigError, match="patch size"):
        training_augmentation((32,))
    with pytest.raises(ConfigError, match="num_samples"):
        training_augmentation((8, 8), num_samples=0)


def test_composes_with_preset_and_keeps_world_geometry():
    """Preset + augmentation: patch label values come from the preset-resampled label only."""
    from monai.transforms import Compose

    from medseg.data.phantoms import as_metatensors, brain_mr
    from medseg.transforms.presets import preprocessing

    ph = brain_mr(shape=(32, 36, 30), seed=2)
    image, label = as_metatensors(ph)
    pre = preprocessing("mr_brain", keys=("image",), label_key="label")
    base = pre({"image": image, "label": label})
    # preset resampled the label with nearest: still only the phantom's label values
    assert set(torch.unique(base["label"]).tolist()) <= {0, *ph.labels}
    chain = Compose([pre, training_augmentation((16, 16, 16), modality="MR", num_samples=3)]).flatten()
    seed_augmentation(chain, 0)
    for s in chain({"image": image, "label": label}):
        assert tuple(s["image"].shape) == (1, 16, 16, 16)
        assert set(torch.unique(torch.as_tensor(s["label"])).tolist()) <= {0, *ph.labels}
