"""Postprocessing: largest component, hole filling, minimum size in mm^3, instance labelling.
References are analytic (known sizes) or scikit-image's connected components."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as sk_label

from medseg.errors import ConfigError
from medseg.transforms.postprocess import (
    apply_postprocess,
    fill_holes,
    keep_largest_component,
    label_instances,
    remove_small_components,
)


def _ball(shape, centre, radius):
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2


def test_keep_largest_component_per_class_matches_skimage():
    lab = np.zeros((30, 30, 20), np.uint8)
    lab[_ball(lab.shape, (8, 8, 8), 5)] = 1
    lab[_ball(lab.shape, (22, 22, 10), 3)] = 1
    lab[_ball(lab.shape, (8, 22, 10), 4)] = 2
    lab[_ball(lab.shape, (22, 8, 10), 2)] = 2
    out = keep_largest_component(lab, [1])
    comps = sk_label(lab == 1, connectivity=1)
    largest = np.argmax(np.bincount(comps.ravel())[1:]) + 1
    assert np.array_equal(out == 1, comps == largest)
    assert np.array_equal(out == 2, lab == 2)  # class 2 not selected: untouched


def test_fill_holes_only_fills_background():
    lab = np.zeros((24, 24, 24), np.uint8)
    shell = _ball(lab.shape, (12, 12, 12), 9) & ~_ball(lab.shape, (12, 12, 12), 5)
    lab[shell] = 1
    lab[12, 12, 12] = 3  # another class inside the cavity must survive
    out = fill_holes(lab, [1])
    assert np.all(out[_ball(lab.shape, (12, 12, 12), 9) & (lab != 3)] == 1)
    assert out[12, 12, 12] == 3
    assert np.array_equal(out == 0, ~_ball(lab.shape, (12, 12, 12), 9))


def test_min_component_size_uses_mm3_with_anisotropic_spacing():
    lab = np.zeros((40, 40, 10), np.uint8)
    lab[2:6, 2:6, 2:4] = 1  # 32 voxels
    lab[20:30, 20:30, 2:6] = 1  # 400 voxels
    spacing = (0.5, 0.5, 3.0)  # 0.75 mm^3 per voxel: 24 mm^3 and 300 mm^3
    out = remove_small_components(lab, spacing, 100.0, [1])
    assert out[3, 3, 3] == 0 and out[25, 25, 3] == 1
    out = remove_small_components(lab, spacing, {1: 20.0})
    assert out[3, 3, 3] == 1


def test_instances_split_touching_discs_2d():
    shape = (60, 40)
    a = _ball(shape, (20, 20), 10)
    b = _ball(shape, (36, 20), 9)
    lab = (a | b).astype(np.uint8)
    assert sk_label(lab, connectivity=1).max() == 1  # touching: one connected component
    inst = label_instances(lab, (1.0, 1.0), min_distance_mm=6.0)
    assert set(np.unique(inst)) == {0, 1, 2}
    ia, ib = inst[20, 20], inst[36, 20]
    assert ia != ib
    # each instance mostly covers its own disc
    for disc, iid in ((a & ~b, ia), (b & ~a, ib)):
        assert (inst[disc] == iid).mean() > 0.9


def test_instances_boundary_class_is_absorbed():
    lab = np.zeros((40, 40), np.uint8)
    lab[5:15, 5:15] = 1
    lab[5:15, 17:27] = 1
    lab[4:16, 15:17] = 2  # a predicted boundary between the two cells
    inst = label_instances(lab, (1.0, 1.0), boundary_class=2, split="none")
    assert inst[10, 10] != inst[10, 20] and inst[10, 10] > 0 and inst[10, 20] > 0
    assert np.all(inst[5:15, 15:17] > 0)


def test_apply_postprocess_and_bad_config():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:8, 2:8, 2:8] = 1
    lab[12:14, 12:14, 12:14] = 1
    out = apply_postprocess(lab, (1.0, 1.0, 1.0), {"keep_largest_component": True})
    assert out[13, 13, 13] == 0 and out[4, 4, 4] == 1
    with pytest.raises(ConfigError, match="unknown key"):
        apply_postprocess(lab, (1.0, 1.0, 1.0), {"keep_largest": True})
    with pytest.raises(ConfigError, match="split"):
        label_instances(lab, (1.0, 1.0, 1.0), split="magic")


def _touching_nuclei(shape=(80, 64)):
    """Hand-built instances: two touching discs (radius 11 px, centres 20 px apart) and a separate
    smaller one; returns the instance map and its interior (1) / inner-rim boundary (2) semantic map."""
    from skimage.segmentation import find_boundaries

    inst = np.zeros(shape, np.int32)
    inst[_ball(shape, (22, 22), 11)] = 1
    inst[_ball(shape, (42, 22), 11) & (inst == 0)] = 2
    inst[_ball(shape, (60, 50), 7)] = 3
    sem = (inst > 0).astype(np.uint8)
    sem[find_boundaries(inst, mode="inner") & (inst > 0)] = 2
    return inst, sem


def _iou_best(pred, ref):
    """For each reference instance the best IoU over predicted instances (brute force)."""
    out = {}
    for r in np.unique(ref[ref > 0]):
        rm = ref == r
        out[int(r)] = max(((pred == p) & rm).sum() / ((pred == p) | rm).sum() for p in np.unique(pred[rm]) if p)
    return out


def test_instances_boundary_cut_recovers_touching_nuclei():
    """The fluo_nuclei_2d mode (seeds on the interior, boundary rim as separator, rim given back):
    the same partition as the hand-built discs; the interior's connected components (skimage) are
    the independent count."""
    inst, sem = _touching_nuclei()
    assert sk_label(sem > 0, connectivity=1).max() == 2  # the two discs touch: one blob without the rim
    n_ref = sk_label(sem == 1, connectivity=1).max()
    assert n_ref == 3
    out = label_instances(sem, (1.0, 1.0), foreground=[1], boundary_class=2, split="watershed",
                          min_distance_mm=10.0, min_size_mm3=12.0)
    assert out.dtype == np.int32 and out.max() == n_ref
    assert set(np.unique(out[inst == 0]).tolist()) == {0}  # nothing outside the nuclei
    assert np.all(out[inst > 0] > 0)  # the rim is given back: every nucleus pixel labelled
    assert min(_iou_best(out, inst).values()) > 0.95
    # merged foreground with seeds too close: the two touching discs become one instance
    merged = label_instances(sem, (1.0, 1.0), foreground=[1, 2], min_distance_mm=30.0)
    assert merged.max() == 2 and merged[22, 22] == merged[42, 22]


def test_instance_seed_distance_and_min_size_are_in_mm():
    """Same voxels, spacing 0.5 mm: seed distance and minimum area scale with the spacing."""
    inst, sem = _touching_nuclei()
    fine = (0.5, 0.5)
    # centres are 20 px = 10 mm apart at 0.5 mm: 5 mm seeds split them, 12 mm seeds cannot
    split = label_instances(sem, fine, foreground=[1, 2], min_distance_mm=5.0)
    assert split[22, 22] != split[42, 22]
    joined = label_instances(sem, fine, foreground=[1, 2], min_distance_mm=12.0)
    assert joined[22, 22] == joined[42, 22]
    # the small disc: pixel count from the hand-built map, area = count * 0.25 mm^2
    area = float((inst == 3).sum()) * 0.25
    kept = label_instances(sem, fine, foreground=[1], boundary_class=2, min_distance_mm=5.0,
                           min_size_mm3=area * 0.5)
    dropped = label_instances(sem, fine, foreground=[1], boundary_class=2, min_distance_mm=5.0,
                              min_size_mm3=area * 2.0)
    assert kept[60, 50] > 0 and dropped[60, 50] == 0
    assert dropped.max() == 2 and kept.max() == 3


def test_shipped_nuclei_postprocess_splits_touching_nuclei():
    """The postprocess in the shipped fluo_nuclei_2d medseg.json (keys unchanged) applied through
    apply_postprocess on the hand-built map gives the three nuclei."""
    import json
    from pathlib import Path

    cfg = json.loads((Path(__file__).resolve().parents[1] / "bundles" / "fluo_nuclei_2d" / "configs"
                      / "medseg.json").read_text())["postprocess"]
    assert set(cfg["instance"]) <= {"foreground", "boundary_class", "split", "min_distance_mm", "min_size_mm3"}
    inst, sem = _touching_nuclei()
    out = apply_postprocess(sem, (1.0, 1.0), cfg, task="instance")
    assert out.max() == 3
    assert min(_iou_best(out, inst).values()) > 0.8
