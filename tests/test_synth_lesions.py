"""medseg.data.synth_lesions: lung mask, seeded lesion insertion, thick slices.

Background: medseg's chest CT phantom (lungs at about -850 HU with their own labels, a nodule
label of its own). References: the phantom's lung labels (lung mask), the requested lesion size
(sphere volume), world coordinates through the affine (thick slices)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.data.phantoms import lung_ct
from medseg.data.synth_lesions import LesionConfig, insert_lesions, lung_mask, thicken_slices
from medseg.metrics import dice


@pytest.fixture(scope="module")
def chest():
    ph = lung_ct(seed=11, orientation="LPS", shape=(96, 96, 64), spacing=(1.5, 1.5, 2.5))
    lungs = lung_ct(seed=11, orientation="LPS", shape=(96, 96, 64), spacing=(1.5, 1.5, 2.5), lung_labels=True)
    return ph, lungs


def test_lung_mask_matches_the_phantom_lungs(chest):
    ph, lungs = chest
    mask = lung_mask(ph.image, ph.affine)
    assert dice(mask, lungs.label > 0) > 0.9


def test_lung_mask_leaves_out_pure_gas():
    # a body with a lung-density region and a pure-gas (bowel-like) pocket of the same size
    img = np.full((80, 80, 40), -1000.0, np.float32)
    img[10:70, 10:70, :] = 40.0
    rng = np.random.default_rng(0)
    img[15:35, 20:60, 5:35] = -850.0 + 20 * rng.standard_normal((20, 40, 30))
    img[45:65, 20:60, 5:35] = -1000.0 + 5 * rng.standard_normal((20, 40, 30))
    mask = lung_mask(img, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert mask[15:35, 20:60, 5:35].mean() > 0.95
    assert not mask[45:65, 20:60, 5:35].any()


def test_insertion_is_seeded_and_labels_are_exact(chest):
    ph, lungs = chest
    lung = lungs.label > 0
    cfg = LesionConfig(diameter_mm=(4.0, 14.0))  # every shape, small boxes (a short test)
    a = insert_lesions(ph.image, ph.affine, seed=5, n=4, label=ph.label, lung=lung, config=cfg)
    b = insert_lesions(ph.image, ph.affine, seed=5, n=4, label=ph.label, lung=lung, config=cfg)
    c = insert_lesions(ph.image, ph.affine, seed=6, n=4, label=ph.label, lung=lung, config=cfg)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    img, lab, lesions = a
    assert lesions, "no lesion inserted"
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1}
    # the phantom's own nodules are kept, and new lesions never touch them
    assert (lab[ph.label > 0] == 1).all()
    new = (lab > 0) & ~(ph.label > 0)
    assert new.sum() == sum(d["voxels"] for d in lesions)
    touching = ndimage.binary_dilation(ph.label > 0, iterations=1) & new
    assert not touching.any()
    # new lesions lie inside the lung (cut at wall_mm = 1.5 mm, one voxel here)
    assert not (new & ~ndimage.binary_dilation(lung, iterations=1)).any()
    # the image only changes near the new lesions (their boxes), and the input is not modified
    sp = np.linalg.norm(ph.affine[:3, :3], axis=0)
    far = ndimage.distance_transform_edt(~new, sampling=sp) > np.sqrt(3) * (2.4 * 7 + 2) + 4  # box corners
    assert np.array_equal(img[far], ph.image[far])
    assert not np.shares_memory(img, ph.image)


def test_round_lesion_has_the_requested_size_and_density(chest):
    ph, lungs = chest
    d = 12.0
    cfg = LesionConfig(diameter_mm=(d, d), shape_weights=(1, 0, 0, 0, 0), axis_ratio=(1.0, 1.0),
                       juxtapleural_probability=0.0, solid_hu=(30.0, 30.0), texture_std=(5.0, 5.0),
                       calcification_probability=0.0, noise_std=(5.0, 5.0))
    img, lab, lesions = insert_lesions(ph.image, ph.affine, seed=1, n=1, lung=lungs.label > 0, config=cfg)
    assert len(lesions) == 1 and lesions[0]["shape"] == "round"
    vox_ml = float(np.prod(np.linalg.norm(ph.affine[:3, :3], axis=0))) / 1000
    assert lab.sum() * vox_ml == pytest.approx(np.pi / 6 * d ** 3 / 1000, rel=0.25)
    core = ndimage.binary_erosion(lab > 0, iterations=1)
    assert abs(float(img[core].mean()) - 30.0) < 40.0


def test_thick_slices_keep_world_positions():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 10, (8, 6, 12)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[2:4, 2:4, 3:6] = 1  # one full block of three slices (offset 0: slices 3-5)
    aff = np.array([[-1.5, 0, 0, 10], [0, -1.5, 0, 20], [0, 0, 1.5, -30], [0, 0, 0, 1.0]])
    new_img, new_lab, new_aff = thicken_slices(img, lab, aff, 3)
    assert new_img.shape == (8, 6, 4)
    np.testing.assert_allclose(new_img[..., 1], img[..., 3:6].mean(-1), rtol=1e-6)
    assert new_lab[2:4, 2:4, 1].all() and new_lab.sum() == 4
    # the thick voxel's centre is the mean of the three thin centres, in world mm
    thin = [aff @ np.array([2, 2, k, 1.0]) for k in (3, 4, 5)]
    np.testing.assert_allclose(new_aff @ np.array([2, 2, 1, 1.0]), np.mean(thin, axis=0))
    assert np.linalg.norm(new_aff[:3, 2]) == pytest.approx(4.5)
