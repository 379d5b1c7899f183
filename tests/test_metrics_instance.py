"""Instance metrics against an independent brute-force computation (loops over instance pairs)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from medseg import metrics


def _instances(shape, n, rng, max_r=6):
    """Random instance map: n discs/balls with random ids (gaps in the id range on purpose)."""
    out = np.zeros(shape, np.int32)
    grid = np.indices(shape)
    ids = rng.choice(np.arange(1, 10 * n + 1), size=n, replace=False)
    for i in ids:
        c = [rng.integers(0, s) for s in shape]
        r = rng.integers(2, max_r)
        out[sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True)) <= r * r] = i
    return out


def _perturb_instances(ref, rng):
    out = np.zeros_like(ref)
    for i in np.unique(ref[ref > 0]):
        if rng.random() < 0.15:
            continue  # missed instance
        m = ref == i
        shift = tuple(int(v) for v in rng.integers(-2, 3, size=ref.ndim))
        m = np.roll(m, shift, axis=tuple(range(ref.ndim)))
        out[m] = i + 1000
    extra = _instances(ref.shape, 3, rng, max_r=4)  # false positives
    out[(extra > 0) & (out == 0)] = extra[(extra > 0) & (out == 0)] + 5000
    return out


def _brute_iou(pred, ref):
    pids = [int(v) for v in np.unique(pred) if v]
    rids = [int(v) for v in np.unique(ref) if v]
    pvox = {p: np.flatnonzero(pred == p) for p in pids}  # voxel index sets, one per instance
    rvox = {r: np.flatnonzero(ref == r) for r in rids}
    m = np.zeros((len(pids), len(rids)))
    for a, p in enumerate(pids):
        for b, r in enumerate(rids):
            inter = np.intersect1d(pvox[p], rvox[r], assume_unique=True).size
            m[a, b] = inter / (pvox[p].size + rvox[r].size - inter)
    return m, pids, rids


def _brute_scores(iou, thr):
    """Matches above thr >= 0.5 are unique: count every pair above thr, checking uniqueness."""
    pairs = [(a, b) for a in range(iou.shape[0]) for b in range(iou.shape[1]) if iou[a, b] > thr]
    assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})
    tp = len(pairs)
    n_p, n_r = iou.shape
    fp, fn = n_p - tp, n_r - tp
    sq = float(np.mean([iou[a, b] for a, b in pairs])) if pairs else math.nan
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / n_p, "recall": tp / n_r,
            "f1": 2 * tp / (2 * tp + fp + fn), "ap": tp / (tp + fp + fn), "sq": sq,
            "rq": tp / (tp + fp / 2 + fn / 2)}


@pytest.mark.parametrize("shape,seed", [((96, 96), 0), ((128, 80), 1), ((32, 36, 28), 2)])
def test_instance_metrics_equal_brute_force(shape, seed):
    rng = np.random.default_rng(seed)
    ref = _instances(shape, 14, rng)
    pred = _perturb_instances(ref, rng)
    iou, pids, rids = metrics.iou_matrix(pred, ref)
    biou, bp, br = _brute_iou(pred, ref)
    assert list(pids) == bp and list(rids) == br
    np.testing.assert_allclose(iou, biou, rtol=0, atol=1e-12)

    out = metrics.instance_metrics(pred, ref)
    b = _brute_scores(biou, 0.5)
    for k in ("tp", "fp", "fn"):
        assert out[k] == b[k]
    for k in ("precision", "recall", "f1", "ap", "rq"):
        assert out[k] == pytest.approx(b[k])
    assert out["sq"] == pytest.approx(b["sq"])
    assert out["pq"] == pytest.approx(b["sq"] * b["rq"])
    thr = [0.5 + 0.05 * i for i in range(10)]
    assert out["mean_ap"] == pytest.approx(np.mean([_brute_scores(biou, t)["ap"] for t in thr]))
    assert out["mean_f1"] == pytest.approx(np.mean([_brute_scores(biou, t)["f1"] for t in thr]))
    assert out["tp"] > 0 and out["fp"] > 0  # the data exercise both


def test_hungarian_matching_is_optimal_against_enumeration():
    rng = np.random.default_rng(11)
    for _ in range(20):
        iou = rng.random((4, 5)) * (rng.random((4, 5)) < 0.6)
        rows, cols = metrics.match_instances(iou, 0.0)
        best = max(sum(iou[a, b] for a, b in zip(range(4), perm, strict=False) if iou[a, b] > 0)
                   for perm in itertools.permutations(range(5), 4))
        assert iou[rows, cols].sum() == pytest.approx(best)
        assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert np.all(iou[rows, cols] > 0.0)


def _brute_lesions(pred, ref):
    s = np.ones((3,) * ref.ndim)
    ref_cc, n_ref = ndimage.label(ref > 0, structure=s)
    pred_cc, n_pred = ndimage.label(pred > 0, structure=s)
    detected = sum(1 for i in range(1, n_ref + 1) if np.any((ref_cc == i) & (pred > 0)))
    fps = sum(1 for i in range(1, n_pred + 1) if not np.any((pred_cc == i) & (ref > 0)))
    return n_ref, n_pred, detected, fps


@pytest.mark.parametrize("seed", [3, 4])
def test_lesion_metrics_equal_brute_force_26_connectivity(seed):
    rng = np.random.default_rng(seed)
    ref = _instances((30, 30, 30), 8, rng, max_r=4)
    pred = _perturb_instances(ref, rng)
    # two voxels touching only at a corner are ONE lesion with 26-connectivity
    ref[0, 0, 0] = ref[1, 1, 1] = 99
    out = metrics.lesion_metrics(pred, ref)
    n_ref, n_pred, detected, fps = _brute_lesions(pred, ref)
    assert out["n_ref_lesions"] == n_ref
    assert out["n_pred_lesions"] == n_pred
    assert out["lesion_sensitivity"] == pytest.approx(detected / n_ref)
    assert out["lesion_false_positives"] == fps
    assert ndimage.label(ref > 0)[1] > n_ref  # face connectivity would split the corner pair


@pytest.mark.parametrize("policy,value", [("metricsreloaded", 1.0), ("monai", math.nan)])
def test_instance_metrics_with_no_instances(policy, value):
    none = np.zeros((20, 20), np.int32)
    some = none.copy()
    some[3:8, 3:8] = 4
    out = metrics.instance_metrics(none, none, policy=policy)
    for k in ("precision", "recall", "f1", "ap", "pq", "mean_ap"):
        assert (math.isnan(out[k]) and math.isnan(value)) or out[k] == value
    assert (out["n_pred"], out["n_ref"], out["tp"]) == (0, 0, 0)
    miss = metrics.instance_metrics(none, some, policy=policy)
    assert (miss["tp"], miss["fn"], miss["recall"], miss["f1"], miss["pq"]) == (0, 1, 0.0, 0.0, 0.0)
    assert math.isnan(miss["precision"]) and math.isnan(miss["sq"])
    false_alarm = metrics.instance_metrics(some, none, policy=policy)
    assert (false_alarm["fp"], false_alarm["precision"], false_alarm["lesion_false_positives"]) == (1, 0.0, 1)


@pytest.mark.network
def test_real_nuclei_mask_dsb():
    """StarDist's DSB 2018 nuclei mask (real, 125 instances) vs an eroded copy."""
    import tifffile

    from medseg.data import sample

    ref = tifffile.imread(sample("nuclei_mask")).astype(np.int32)
    rng = np.random.default_rng(0)
    pred = np.zeros_like(ref)
    ids = [int(v) for v in np.unique(ref) if v]
    for i in ids:
        m = ref == i
        pred[ndimage.binary_erosion(m, iterations=int(rng.integers(0, 4)))] = i
    out = metrics.instance_metrics(pred, ref)
    biou, _, _ = _brute_iou(pred, ref)
    b = _brute_scores(biou, 0.5)
    assert out["n_ref"] == len(ids) >= 100
    for k in ("tp", "fp", "fn"):
        assert out[k] == b[k]
    assert out["pq"] == pytest.approx(b["sq"] * b["rq"])
    thr = [0.5 + 0.05 * i for i in range(10)]
    assert out["mean_ap"] == pytest.approx(np.mean([_brute_scores(biou, t)["ap"] for t in thr]))
