"""medseg.data.spine_synth: real vertebra label maps in a drawn torso; seeded, exact level labels,
unnamed bone, fields of view and axis orders that keep the world (checked with nibabel's affine)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medseg.data.spine_synth import LEVELS, base_map, sm_offset, spine_case, spine_tissue
from medseg.data.synth import SynthConfig, ct_range, synthesize


def _world_centroid(labels: np.ndarray, value: int, affine: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, np.argwhere(labels == value)).mean(0)


def _load(name):
    from medseg.data import sample

    return np.asarray(nib.load(str(sample(name))).dataobj)


def test_ts_ct_sm_sits_on_the_slices_where_its_vertebrae_match_ts_ct():
    vert, sm = _load("ts_ct_vertebrae"), _load("ts_ct_sm_seg")
    off = sm_offset(vert, sm)
    both = np.isin(sm, [30, 31, 32]) | np.isin(vert[..., off:off + sm.shape[-1]], [30, 31, 32])
    agree = (sm == vert[..., off:off + sm.shape[-1]])[both].mean()
    assert agree > 0.9  # two runs of TotalSegmentator on the same slices
    tissue, names, _, o = base_map()
    assert o == off
    # the real vertebrae are kept verbatim on the whole grid
    assert np.array_equal(tissue[vert > 0], vert[vert > 0])


@pytest.mark.slow
def test_same_seed_same_map_and_bones_that_must_not_be_named_are_there():
    a, names, aff, zc = spine_tissue(3)
    b, names_b, _, _ = spine_tissue(3)
    assert np.array_equal(a, b) and names == names_b
    present = {names[int(v)] for v in np.unique(a)}
    for bone in ("sacrum", "hip_left", "hip_right", "femur_left", "femur_right", "vertebrae_T10", "rib_left_10"):
        assert bone in present
    # the drawn femoral heads lie below S1 and the drawn thoracic vertebrae above T12 (world S axis)
    s1 = _world_centroid(a, [v for v, n in names.items() if n == "vertebrae_S1"][0], aff)
    t12 = _world_centroid(a, [v for v, n in names.items() if n == "vertebrae_T12"][0], aff)
    t10 = _world_centroid(a, [v for v, n in names.items() if n == "vertebrae_T10"][0], aff)
    head = _world_centroid(a, [v for v, n in names.items() if n == "femur_right"][0], aff)
    assert head[2] < s1[2] < t12[2] < t10[2]


@pytest.mark.parametrize("seed", [1, pytest.param(0, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(4, marks=pytest.mark.slow)])
def test_axis_order_changes_keep_every_level_in_its_world_place(seed):
    t, names, aff, target, kind = spine_case(seed)
    t0, names0, aff0, target0, kind0 = spine_case(seed, reorient=False)
    assert kind == kind0 and target == target0
    lut = np.zeros(max(names) + 1, np.uint8)
    for k, v in target.items():
        lut[k] = v
    lab, lab0 = lut[t], lut[t0]
    levels = sorted(set(np.unique(lab0).tolist()) - {0})
    assert levels and levels == sorted(set(np.unique(lab).tolist()) - {0})
    for v in levels:
        np.testing.assert_allclose(_world_centroid(lab, v, aff), _world_centroid(lab0, v, aff0), atol=1e-6)
    # T12 (1) ... L5 (6) run from superior to inferior in the world, whatever the storage
    sup = [_world_centroid(lab, v, aff)[2] for v in levels]
    assert sup == sorted(sup, reverse=True)


def test_target_names_only_t12_to_l5_and_the_synthetic_labels_are_exact():
    t, names, aff, target, _ = spine_case(5)
    named = {names[k].split("_cortex")[0] for k in target if k in names}
    assert named <= set(LEVELS)
    assert all(names[k].split("_cortex")[0] in LEVELS for k in target if k in names)
    assert not any(n.startswith(("sacrum", "hip", "femur", "rib", "vertebrae_S1", "vertebrae_T1"))
                   and not n.startswith("vertebrae_T12") for k, n in names.items() if k in target)
    img, lab = synthesize(t, names, seed=1, target=target, config=SynthConfig(deform_probability=0.0))
    lut = np.zeros(max(names) + 1, np.uint8)
    for k, v in target.items():
        lut[k] = v
    assert np.array_equal(lab, lut[t])
    # cortical shells are drawn from their own, brighter CT range
    assert ct_range("vertebrae_L1_cortex")[0] > ct_range("vertebrae_L1")[0]
