"""``vertebra_levels`` postprocess: vertebrae split into instances, ordered along WORLD superior
(the affine, never an array axis) and relabelled with consecutive levels chosen by the votes.

Inputs are real label maps of the spine phantom (``medseg.data.phantoms.spine_ct``) whose levels
are scrambled or shifted as a network would get them wrong; the truth is the phantom's own label
map. Instances are checked against scikit-image's connected components.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from skimage.measure import label as sk_label

from medseg.data.phantoms import spine_ct
from medseg.errors import ConfigError
from medseg.transforms.postprocess import (
    apply_postprocess,
    validate_postprocess,
    vertebra_instances,
    vertebra_levels,
)

LEVELS = [1, 2, 3, 4, 5, 6]
OBLIQUE = np.array([[0.9659258, -0.2588190, 0.0], [0.2588190, 0.9659258, 0.0], [0.0, 0.0, 1.0]])
TILTED = OBLIQUE @ np.array([[1.0, 0.0, 0.0], [0.0, 0.9781476, -0.2079117], [0.0, 0.2079117, 0.9781476]])
SHAPE_SP = {"RAS": ((40, 40, 64), (2.0, 2.0, 2.25)), "LPS": ((40, 40, 64), (2.0, 2.0, 2.25)),
            "PIL": ((40, 64, 40), (2.0, 2.25, 2.0)), "RAI": ((40, 40, 64), (2.0, 2.0, 2.25))}


def _phantom(seed: int, orientation):
    shape, spacing = SHAPE_SP.get(orientation, ((40, 40, 64), (2.0, 2.0, 2.25))) \
        if isinstance(orientation, str) else ((40, 40, 64), (2.0, 2.0, 2.25))
    ph = spine_ct(shape, spacing, orientation, seed=seed)
    return ph, tuple(float(s) for s in np.linalg.norm(ph.affine[:3, :3], axis=0))


def _scramble(label: np.ndarray, rng: np.random.Generator, fraction: float = 0.3) -> np.ndarray:
    """A fraction of the vertebra voxels get a random level, and the lowest vertebra is named like
    the one above it (the classic miscount)."""
    noisy = label.copy()
    fg = label > 0
    flip = fg & (rng.random(label.shape) < fraction)
    noisy[flip] = rng.integers(1, 7, size=int(flip.sum()))
    lowest = int(label.max())
    noisy[label == lowest] = lowest - 1
    return noisy


@pytest.mark.parametrize("seed,orientation", [(9001, "RAS"), (9002, "LPS"), (9003, "PIL"), (3, "RAI"),
                                              (9004, "oblique"), (1, "tilted")])
def test_scrambled_levels_are_recovered_in_any_grid(seed, orientation):
    ph, spacing = _phantom(seed, {"oblique": OBLIQUE, "tilted": TILTED}.get(orientation, orientation))
    noisy = _scramble(ph.label, np.random.default_rng(seed))
    assert (noisy == ph.label).mean() < 1.0
    out = vertebra_levels(noisy, spacing, ph.affine, LEVELS, opening_mm=0.0, min_size_mm3=100.0)
    assert out.dtype == ph.label.dtype and out.shape == ph.label.shape
    np.testing.assert_array_equal(out, ph.label)


def test_order_follows_the_affine_not_the_array_axis():
    """The same label array with its k axis pointing superior (RAS) or inferior (RAI): the names
    must follow the world, so the results are mirror images of each other along k."""
    ph, spacing = _phantom(7, "RAS")
    rai = ph.affine.copy()
    rai[:3, 2] *= -1
    rai[:3, 3] = ph.affine[:3, :3] @ [0, 0, ph.label.shape[2] - 1] + ph.affine[:3, 3]
    flipped = ph.label[:, :, ::-1]  # the same anatomy on the RAI grid
    noisy = _scramble(flipped, np.random.default_rng(0))
    out = vertebra_levels(noisy, spacing, rai, LEVELS)
    np.testing.assert_array_equal(out, flipped)
    # with the affine of the other grid the order along S-I is reversed: the names come out reversed too
    wrong = vertebra_levels(noisy, spacing, ph.affine, LEVELS)
    assert not np.array_equal(wrong, flipped)


def test_shifted_names_follow_the_majority_and_stay_consecutive():
    """Two vertebrae named one level too low, the rest right: the majority wins, every vertebra
    gets a different consecutive level from superior to inferior."""
    ph, spacing = _phantom(1, "LPS")
    present = [int(v) for v in np.unique(ph.label) if v]
    assert len(present) >= 4
    noisy = ph.label.copy()
    for v in present[:2]:
        noisy[ph.label == v] = v + 1
    out = vertebra_levels(noisy, spacing, ph.affine, LEVELS)
    np.testing.assert_array_equal(out, ph.label)


def test_instances_match_skimage_components_and_drop_specks():
    ph, spacing = _phantom(9003, "PIL")
    fg = ph.label > 0
    inst = vertebra_instances(fg, spacing, opening_mm=0.0, min_size_mm3=0.0)
    ref = sk_label(fg, connectivity=1)
    assert inst.max() == ref.max() == len(ph.meta["levels"])
    # same partition (numbering may differ): a one-to-one map between the two labellings
    pairs = set(zip(inst[fg].tolist(), ref[fg].tolist(), strict=True))
    assert len(pairs) == ref.max()
    # a speck of 2 voxels (18 mm^3) far from the column is dropped with min_size_mm3=100
    speck = np.zeros_like(fg)
    speck[1, 1, 1:3] = True
    labels = ph.label.copy()
    labels[speck] = 3
    out = vertebra_levels(labels, spacing, ph.affine, LEVELS, min_size_mm3=100.0)
    assert np.all(out[speck] == 0)
    np.testing.assert_array_equal(out[~speck], ph.label[~speck])


def test_opening_cuts_a_bridge_and_trimmed_voxels_rejoin():
    ph, spacing = _phantom(5, "RAS")
    labels = ph.label.copy()
    present = [int(v) for v in np.unique(labels) if v]
    # a one-voxel-thick bridge across the disc between the two upper vertebrae (a network's leak)
    zs = [np.argwhere(labels == v)[:, 2] for v in present[:2]]
    ci, cj = np.argwhere(labels == present[0])[:, :2].mean(axis=0).astype(int)
    gap = range(zs[1].max() + 1, zs[0].min())
    assert len(gap) >= 1
    for k in gap:
        labels[ci, cj, k] = present[0]
    assert sk_label(labels > 0, connectivity=1).max() == len(present) - 1  # merged without the opening
    # the erosion must reach the bridge's 2-voxel length from both bodies: a 6 mm ball on this 2 mm grid
    out = vertebra_levels(labels, spacing, ph.affine, LEVELS, opening_mm=6.0)
    np.testing.assert_array_equal(out[ph.label > 0], ph.label[ph.label > 0])
    # the bridge voxels (trimmed by the opening) went to one of the two vertebrae it joined
    assert set(out[ci, cj, list(gap)].tolist()) <= set(present[:2])


def test_one_vertebra_takes_its_majority_level():
    ph, spacing = _phantom(9001, "RAS")
    one = np.where(ph.label == 4, ph.label, 0).astype(np.uint8)
    noisy = one.copy()
    rng = np.random.default_rng(2)
    m = one > 0
    noisy[m & (rng.random(one.shape) < 0.3)] = 5  # 30 % say L4, 70 % say L3
    out = vertebra_levels(noisy, spacing, ph.affine, LEVELS)
    np.testing.assert_array_equal(out, one)


def test_empty_and_no_level_voxels_are_unchanged():
    ph, spacing = _phantom(9001, "RAS")
    empty = np.zeros_like(ph.label)
    out = vertebra_levels(empty, spacing, ph.affine, LEVELS)
    assert out is not empty and not out.any()
    other = np.where(ph.label > 0, 9, 0).astype(np.uint8)  # a class that is not a level
    np.testing.assert_array_equal(vertebra_levels(other, spacing, ph.affine, LEVELS), other)


def test_more_instances_than_levels():
    """Five vertebrae, three levels: the best-voted consecutive run is named, the rest become 0."""
    ph5, spacing5 = _phantom(9003, "PIL")  # T12..L4: five vertebrae
    assert len(ph5.meta["levels"]) == 5
    said = np.minimum(ph5.label, 3)  # the network calls all the lower vertebrae L2 (label 3)
    out = vertebra_levels(said, spacing5, ph5.affine, [1, 2, 3])
    np.testing.assert_array_equal(out, np.where(ph5.label <= 3, ph5.label, 0))
    # a false vertebra below L5 (the sacrum taken for L5) is dropped, the real L5 keeps its name
    ph6, sp6 = _phantom(1, "LPS")
    assert ph6.meta["levels"][-1] == "L5" and "sacrum" in ph6.meta["landmarks"]
    labels = ph6.label.copy()
    lo = _world_lowest(labels == 6, ph6.affine)
    fake = np.zeros(labels.shape, bool)
    # a block of 3 x 3 x 3 voxels, 8 mm below L5's lowest point in the column's axis
    centre = np.round(np.linalg.inv(ph6.affine) @ np.r_[lo[0], lo[1], lo[2] - 8.0, 1.0])[:3].astype(int)
    sl = tuple(slice(c - 1, c + 2) for c in centre)
    fake[sl] = True
    assert not (fake & (labels > 0)).any()
    labels[fake] = 6
    out = vertebra_levels(labels, sp6, ph6.affine, LEVELS, opening_mm=0.0, min_size_mm3=50.0)
    assert np.all(out[fake] == 0)
    np.testing.assert_array_equal(out[~fake], ph6.label[~fake])


def _world_lowest(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The most inferior voxel of ``mask`` in RAS mm (nibabel)."""
    world = nib.affines.apply_affine(affine, np.argwhere(mask))
    return world[np.argmin(world[:, 2])]


def test_apply_postprocess_config_and_errors():
    ph, spacing = _phantom(9002, "LPS")
    noisy = _scramble(ph.label, np.random.default_rng(4))
    cfg = {"vertebra_levels": {"levels": LEVELS, "opening_mm": 2.0, "min_size_mm3": 500.0}}
    assert validate_postprocess(cfg) == cfg
    out = apply_postprocess(noisy, spacing, cfg, affine=ph.affine)
    np.testing.assert_array_equal(out, ph.label)
    with pytest.raises(ConfigError, match="affine"):
        apply_postprocess(noisy, spacing, cfg)
    for bad in ({"vertebra_levels": {"levels": []}}, {"vertebra_levels": {"levels": [1, 1, 2]}},
                {"vertebra_levels": {"levels": "T12"}}, {"vertebra_levels": {"levels": [1, 2], "radius": 1}},
                {"vertebra_levels": {"levels": [1, 2], "opening_mm": -1}}, {"vertebra_levels": [1, 2, 3]},
                {"vertebra_levels": {"levels": [1, 2], "min_fraction": 1.5}},
                {"vertebra_levels": {"levels": [1, 2], "min_fraction": "half"}},
                {"vertebra_levels": {"levels": [1, 2], "naming": "majority"}}):
        with pytest.raises(ConfigError, match="vertebra_levels"):
            validate_postprocess(bad)
    with pytest.raises(ConfigError, match="3D"):
        vertebra_levels(np.zeros((8, 8), np.uint8), (1.0, 1.0), np.eye(4), LEVELS)


def test_vote_naming_keeps_each_vertebra_s_majority_level_without_renumbering():
    """``naming="vote"``: a vertebra keeps the level most of its voxels have, even where the levels
    are not consecutive (a missed vertebra leaves a gap) or repeat; ``consecutive`` renames them."""
    ph, spacing = _phantom(9001, "RAS")
    levels = [int(v) for v in np.unique(ph.label) if v]
    assert len(levels) >= 4
    said = ph.label.copy()
    said[ph.label == levels[1]] = 0  # the network missed the second vertebra entirely
    said[ph.label == levels[3]] = levels[2]  # and named the fourth like the third
    rng = np.random.default_rng(5)
    noise = (said > 0) & (rng.random(said.shape) < 0.2)
    noisy = said.copy()
    noisy[noise] = levels[0]  # 20 % of every vertebra's voxels wrongly say the first level
    out = vertebra_levels(noisy, spacing, ph.affine, LEVELS, opening_mm=0.0, min_size_mm3=100.0, naming="vote")
    np.testing.assert_array_equal(out, said)
    cfg = {"vertebra_levels": {"levels": LEVELS, "opening_mm": 0.0, "min_size_mm3": 100.0, "naming": "vote"}}
    np.testing.assert_array_equal(apply_postprocess(noisy, spacing, cfg, affine=ph.affine), said)
    consecutive = vertebra_levels(noisy, spacing, ph.affine, LEVELS, opening_mm=0.0, min_size_mm3=100.0)
    assert not np.array_equal(consecutive, said)  # the gap is closed by renaming
    with pytest.raises(ConfigError, match="naming"):
        vertebra_levels(noisy, spacing, ph.affine, LEVELS, naming="majority")
