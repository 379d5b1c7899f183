"""medseg.data.synth: seeded, exact labels, intensities as documented; tissue maps from real label maps."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.synth import SynthConfig, ct_range, synthesize


def _tissue() -> tuple[np.ndarray, dict[int, str]]:
    t = np.zeros((40, 36, 12), np.int32)
    t[4:36, 4:32, :] = 9  # soft tissue (body)
    t[8:20, 8:20, 2:10] = 5  # liver
    t[24:32, 10:18, 3:9] = 1  # spleen
    t[10:14, 24:30, 4:8] = 20  # colon
    return t, {0: "outside", 9: "soft_tissue", 5: "liver", 1: "spleen", 20: "colon"}


def test_same_seed_same_image_other_seed_other_image():
    t, names = _tissue()
    a, la = synthesize(t, names, seed=3)
    b, lb = synthesize(t, names, seed=3)
    c, _ = synthesize(t, names, seed=4)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.allclose(a, c)


def test_labels_are_the_target_remap_of_the_tissue_map_without_deformation():
    t, names = _tissue()
    cfg = SynthConfig(deform_probability=0.0)
    for seed in range(5):
        _, lab = synthesize(t, names, seed=seed, target={5: 1, 1: 2}, config=cfg)
        expected = np.where(t == 5, 1, np.where(t == 1, 2, 0))
        assert np.array_equal(lab, expected)
        assert lab.dtype == np.uint8


def test_deformation_moves_labels_as_a_relabelling_of_the_deformed_tissue():
    t, names = _tissue()
    cfg = SynthConfig(deform_probability=1.0, deform_voxels=3.0)
    _, lab_all = synthesize(t, names, seed=11, config=cfg)
    _, lab = synthesize(t, names, seed=11, target={5: 1, 1: 2}, config=cfg)
    assert not np.array_equal(lab_all, t)  # it did deform
    assert np.array_equal(lab, np.where(lab_all == 5, 1, np.where(lab_all == 1, 2, 0)))
    # only values of the tissue map, organ volumes within 25 % of the original
    assert set(np.unique(lab_all)) <= set(names)
    for v in (5, 1):
        assert abs((lab_all == v).sum() / (t == v).sum() - 1) < 0.25


def test_ct_mode_draws_structure_means_inside_their_documented_ranges():
    t, names = _tissue()
    cfg = SynthConfig(ct_probability=1.0, deform_probability=0.0, texture_std=(0.0, 0.0),
                      bias_std=0.0, blur_sigma=(0.0, 0.0), thick_slice_probability=0.0,
                      noise_std=(0.0, 0.0), gas_probability=0.0)
    for seed in range(10):
        img, _ = synthesize(t, names, seed=seed, config=cfg)
        for v, n in names.items():
            lo, hi = ct_range(n)
            vals = np.unique(img[t == v])
            assert vals.size == 1 and lo <= vals[0] <= hi, (n, vals[:3], lo, hi)
    assert ct_range("liver") == (45.0, 170.0) and ct_range("kidney_cyst_left") == (-5.0, 25.0)
    assert ct_range("vertebrae_L1")[0] >= 150 and ct_range("lung_upper_lobe_left")[1] < -500


def test_recipe_ct_ranges_come_before_the_default_table():
    """``SynthConfig.ct_ranges``: a recipe's own (pattern, range) pairs win over the default table
    for the names they match; every other structure keeps its default range."""
    t, names = _tissue()
    own = (("liver", (500.0, 510.0)),)
    cfg = SynthConfig(ct_probability=1.0, deform_probability=0.0, texture_std=(0.0, 0.0), bias_std=0.0,
                      blur_sigma=(0.0, 0.0), thick_slice_probability=0.0, noise_std=(0.0, 0.0),
                      gas_probability=0.0, ct_ranges=own)
    assert ct_range("liver", own) == (500.0, 510.0) and ct_range("spleen", own) == ct_range("spleen")
    for seed in range(5):
        img, _ = synthesize(t, names, seed=seed, config=cfg)
        for v, n in names.items():
            lo, hi = ct_range(n, own)
            val = float(np.unique(img[t == v])[0])
            assert lo <= val <= hi, (n, val)
            if n == "liver":
                assert not ct_range("liver")[0] <= val <= ct_range("liver")[1]  # outside the default


def test_random_mode_varies_contrast_between_images():
    t, names = _tissue()
    cfg = SynthConfig(ct_probability=0.0, deform_probability=0.0)
    means = [float(synthesize(t, names, seed=s, config=cfg)[0][t == 5].mean()) for s in range(8)]
    assert np.std(means) > 50  # liver brightness is not fixed in random mode
    img, _ = synthesize(t, names, seed=0, config=cfg)
    assert img.dtype == np.float32 and img.min() >= -1024 and img.max() <= 3071


def test_bad_inputs_raise():
    t, names = _tissue()
    with pytest.raises(ValueError, match="without a name"):
        synthesize(t, {0: "outside"}, seed=0)
    with pytest.raises(ValueError, match="integer"):
        synthesize(t.astype(float), names, seed=0)


def test_tissue_map_of_the_real_ct_uses_label_maps_only_and_covers_the_body():
    from medseg.data.totalseg import TOTAL_V2, ct_sm_tissue

    tissue, names, affine = ct_sm_tissue()
    assert tissue.shape == (122, 101, 30) and affine.shape == (4, 4)
    assert names[5] == TOTAL_V2[5] == "liver" and names[1] == "spleen" and names[0] == "outside"
    assert set(np.unique(tissue)) <= set(names)
    # the body (everything but outside) is one connected region that holds the liver
    from scipy import ndimage

    lab, n = ndimage.label(tissue > 0)
    assert n >= 1 and np.bincount(lab.ravel())[1:].max() > 0.95 * (tissue > 0).sum()
