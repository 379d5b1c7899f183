"""medseg.metrics against MONAI's own metric functions (the independent reference), on seeded
random blobs with anisotropic spacing, 2D and 3D, plus the empty-mask policies."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
)
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix
from scipy import ndimage

from medseg import metrics
from medseg.errors import EvaluationError


def _blobs(shape, rng, n_labels=3, smooth=2.5, touch_border=False):
    """Seeded random label map: smooth noise thresholded into n_labels blobby regions."""
    field = ndimage.gaussian_filter(rng.random(shape), smooth)
    out = np.zeros(shape, np.uint8)
    qs = np.quantile(field, np.linspace(0.55, 0.95, n_labels + 1))
    for lab in range(n_labels):
        out[(field > qs[lab]) & (field <= qs[lab + 1])] = lab + 1
    if touch_border:
        out[0, : shape[1] // 2] = 1  # a structure cut by the array border
    return out


def _perturb(lab, rng):
    """A plausible prediction: each label dilated or eroded, some voxels flipped to background."""
    out = np.zeros_like(lab)
    for v in np.unique(lab[lab > 0]):
        m = lab == v
        m = ndimage.binary_dilation(m) if rng.random() < 0.5 else ndimage.binary_erosion(m)
        out[m] = v
    out[rng.random(lab.shape) < 0.02] = 0
    return out


def _monai_all(p, r, spacing, tol):
    """Every metric from MONAI for binary masks p, r (numpy), one-hot batch of one."""
    P = torch.from_numpy(p.astype(np.float32))[None, None]
    R = torch.from_numpy(r.astype(np.float32))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = get_confusion_matrix(P, R, include_background=True)
        return {
            "dice": compute_dice(P, R, ignore_empty=True).item(),
            "iou": compute_iou(P, R, ignore_empty=True).item(),
            "hd95": compute_hausdorff_distance(P, R, percentile=95, spacing=list(spacing)).item(),
            "assd": compute_average_surface_distance(P, R, symmetric=True, spacing=list(spacing)).item(),
            "nsd": compute_surface_dice(P, R, class_thresholds=[tol], spacing=list(spacing)).item(),
            "sensitivity": compute_confusion_matrix_metric("sensitivity", cm).item(),
            "precision": compute_confusion_matrix_metric("precision", cm).item(),
        }


def _close(a, b, tol):
    if math.isnan(b):
        return math.isnan(a)
    if math.isinf(b):
        return a == b
    return abs(a - b) <= tol


CASES = [
    ((36, 44, 20), (0.7, 1.1, 3.0), 0, False),
    ((40, 30, 24), (2.0, 0.5, 1.25), 1, True),
    ((64, 48), (0.3, 0.9), 2, False),
    ((50, 50), (1.5, 0.6), 3, True),
]


@pytest.mark.parametrize("shape,spacing,seed,border", CASES)
def test_evaluate_case_matches_monai(shape, spacing, seed, border):
    rng = np.random.default_rng(seed)
    ref = _blobs(shape, rng, touch_border=border)
    pred = _perturb(ref, rng)
    tol = 1.5
    rows = metrics.evaluate_case(pred, ref, spacing, policy="monai", tolerance_mm=tol)
    assert [r["label"] for r in rows] == [1, 2, 3]
    for row in rows:
        lab = row["label"]
        expect = _monai_all(pred == lab, ref == lab, spacing, tol)
        for name in ("dice", "iou", "sensitivity", "precision"):
            assert _close(row[name], expect[name], 1e-4), (lab, name, row[name], expect[name])
        for name in ("hd95", "assd"):
            assert _close(row[name], expect[name], 0.05), (lab, name, row[name], expect[name])
        assert _close(row["nsd"], expect["nsd"], 1e-4), (lab, row["nsd"], expect["nsd"])
        voxel_ml = float(np.prod(spacing)) / 1000
        assert row["volume_pred_ml"] == pytest.approx(np.count_nonzero(pred == lab) * voxel_ml)
        assert row["volume_ref_ml"] == pytest.approx(np.count_nonzero(ref == lab) * voxel_ml)


def test_single_metric_functions_match_monai_and_share_one_pass():
    rng = np.random.default_rng(7)
    spacing = (0.8, 1.7, 2.9)
    ref = _blobs((30, 34, 22), rng, n_labels=1) > 0
    pred = _perturb(ref.astype(np.uint8), rng) > 0
    expect = _monai_all(pred, ref, spacing, 2.0)
    assert metrics.dice(pred, ref) == pytest.approx(expect["dice"], abs=1e-6)
    assert metrics.iou(pred, ref) == pytest.approx(expect["iou"], abs=1e-6)
    assert metrics.hd95(pred, ref, spacing) == pytest.approx(expect["hd95"], abs=1e-3)
    assert metrics.assd(pred, ref, spacing) == pytest.approx(expect["assd"], abs=1e-3)
    assert metrics.nsd(pred, ref, spacing, 2.0) == pytest.approx(expect["nsd"], abs=1e-6)
    sm = metrics.surface_metrics(pred, ref, spacing, 2.0)
    assert (sm.hd95, sm.assd, sm.nsd) == (
        metrics.hd95(pred, ref, spacing), metrics.assd(pred, ref, spacing), metrics.nsd(pred, ref, spacing, 2.0))
    # torch inputs give the same numbers
    assert metrics.hd95(torch.from_numpy(pred), torch.from_numpy(ref), spacing) == sm.hd95


def test_spacing_is_taken_per_axis_not_swapped():
    """A shift of one voxel along each axis gives exactly that axis' spacing as distance."""
    spacing = (0.5, 2.0, 3.0)
    ref = np.zeros((20, 20, 20), bool)
    ref[5:12, 5:12, 5:12] = True
    for axis, mm in enumerate(spacing):
        pred = np.roll(ref, 1, axis=axis)
        sm = metrics.surface_metrics(pred, ref, spacing, tolerance_mm=mm)
        assert sm.hd95 == pytest.approx(mm)
        assert sm.nsd == 1.0  # every surface voxel within one step along that axis
        assert metrics.nsd(pred, ref, spacing, tolerance_mm=mm * 0.99) < 1.0


def test_metatensor_spacing_comes_from_the_affine_any_orientation():
    rng = np.random.default_rng(3)
    ref = _blobs((24, 28, 16), rng)
    pred = _perturb(ref, rng)
    spacing = (0.9, 1.4, 2.2)
    direction = np.diag([-1.0, -1.0, 1.0])  # LPS-like voxel axes
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ direction @ np.diag(spacing)
    aff[:3, 3] = (12.0, -40.0, 7.5)
    P = MetaTensor(torch.from_numpy(pred)[None], affine=torch.from_numpy(aff))
    R = MetaTensor(torch.from_numpy(ref)[None], affine=torch.from_numpy(aff))
    from_meta = metrics.evaluate_case(P, R)
    from_arrays = metrics.evaluate_case(pred, ref, spacing)
    for a, b in zip(from_meta, from_arrays, strict=True):
        for k in metrics.METRIC_NAMES:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9)


def test_2d_metatensor_channel_first_uses_in_plane_spacing():
    rng = np.random.default_rng(4)
    ref = _blobs((1, 40, 30), rng, n_labels=2)[0][None]  # (1, i, j): one channel, 2D
    pred = _perturb(ref[0], rng)[None]
    aff = np.diag([0.4, 1.6, 5.0, 1.0])  # the k column is the slice normal only
    P = MetaTensor(torch.from_numpy(pred), affine=torch.from_numpy(aff))
    R = MetaTensor(torch.from_numpy(ref), affine=torch.from_numpy(aff))
    rows = metrics.evaluate_case(P, R, tolerance_mm=1.0, policy="monai")
    for row in rows:
        lab = row["label"]
        expect = _monai_all(pred[0] == lab, ref[0] == lab, (0.4, 1.6), 1.0)
        assert row["hd95"] == pytest.approx(expect["hd95"], abs=0.05)
        assert row["nsd"] == pytest.approx(expect["nsd"], abs=1e-4)
        assert row["volume_ref_ml"] == pytest.approx(np.count_nonzero(ref == lab) * 0.4 * 1.6 / 1000)


def test_missing_spacing_and_mismatched_grids_are_refused():
    a = np.zeros((10, 10, 10), np.uint8)
    a[2:5, 2:5, 2:5] = 1
    with pytest.raises(EvaluationError, match="spacing is missing"):
        metrics.evaluate_case(a, a)
    with pytest.raises(EvaluationError, match="spacing has 2 values"):
        metrics.hd95(a, a, (1.0, 1.0))
    with pytest.raises(EvaluationError, match="grid"):
        metrics.dice(a, a[:, :, :9])
    aff = np.eye(4)
    shifted = aff.copy()
    shifted[0, 3] = 0.01  # 10 micrometres: beyond the 1e-3 mm tolerance
    A = MetaTensor(torch.from_numpy(a)[None], affine=torch.from_numpy(aff))
    B = MetaTensor(torch.from_numpy(a)[None], affine=torch.from_numpy(shifted))
    with pytest.raises(EvaluationError, match="affines differ"):
        metrics.evaluate_case(A, B)
    sheared = aff.copy()
    sheared[0, 1] = 0.3
    C = MetaTensor(torch.from_numpy(a)[None], affine=torch.from_numpy(sheared))
    with pytest.raises(EvaluationError, match="sheared"):
        metrics.evaluate_case(C, C)
    with pytest.raises(EvaluationError, match="probabilities"):
        metrics.dice(a * 0.5, a)


# ---- empty masks -------------------------------------------------------------------------------

def _empty_pair(kind):
    full = np.zeros((16, 18, 12), np.uint8)
    full[4:10, 5:12, 3:8] = 1
    none = np.zeros_like(full)
    return {"both": (none, none), "pred": (none, full), "ref": (full, none)}[kind]


@pytest.mark.parametrize("kind", ["both", "pred", "ref"])
def test_monai_policy_equals_monai_functions(kind):
    pred, ref = _empty_pair(kind)
    spacing = (0.6, 1.0, 2.5)
    row = metrics.evaluate_case(pred, ref, spacing, labels=[1], policy="monai", tolerance_mm=1.0)[0]
    expect = _monai_all(pred > 0, ref > 0, spacing, 1.0)
    for name, value in expect.items():
        assert _close(row[name], value, 1e-6), (kind, name, row[name], value)


# MetricsReloaded's BinaryPairwiseMeasures values (see medseg/metrics/policy.py for the citation)
MR_EXPECTED = {
    "both": {"dice": 1.0, "iou": math.nan, "hd95": 0.0, "assd": 0.0, "nsd": math.nan,
             "sensitivity": math.nan, "precision": math.nan},
    "pred": {"dice": 0.0, "iou": 0.0, "hd95": math.nan, "assd": math.nan, "nsd": 0.0,
             "sensitivity": 0.0, "precision": 0.0},
    "ref": {"dice": 0.0, "iou": 0.0, "hd95": math.nan, "assd": math.nan, "nsd": 0.0,
            "sensitivity": math.nan, "precision": 0.0},
}


@pytest.mark.parametrize("kind", ["both", "pred", "ref"])
def test_metricsreloaded_policy(kind):
    pred, ref = _empty_pair(kind)
    row = metrics.evaluate_case(pred, ref, (1.0, 1.0, 2.0), labels=[1])[0]  # default policy
    for name, value in MR_EXPECTED[kind].items():
        assert _close(row[name], value, 0.0), (kind, name, row[name], value)
    assert row["volume_pred_ml"] == pytest.approx(np.count_nonzero(pred) * 2.0 / 1000)
    assert metrics.DEFAULT_POLICY == "metricsreloaded"


def test_unknown_policy_and_bad_tolerance():
    a = np.ones((4, 4), np.uint8)
    with pytest.raises(EvaluationError, match="empty-mask policy"):
        metrics.dice(a, a, policy="optimistic")
    with pytest.raises(EvaluationError, match="tolerance"):
        metrics.nsd(a, a, (1.0, 1.0), tolerance_mm=-1)


def test_summary_skips_nan_and_inf_and_reports_counts():
    s = metrics.summarize([0.5, math.nan, 0.7, math.inf, 0.9], seed=1)
    assert (s["n"], s["n_nan"], s["n_inf"]) == (3, 1, 1)
    assert s["mean"] == pytest.approx(0.7)
    assert s["median"] == pytest.approx(0.7)
    assert s["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    lo, hi = s["ci95"]
    assert 0.5 <= lo <= 0.7 <= hi <= 0.9
    assert metrics.summarize([0.5, 0.7, 0.9], seed=1)["ci95"] == s["ci95"]  # seeded
    empty = metrics.summarize([math.nan, math.inf])
    assert empty["mean"] is None and empty["n"] == 0
    # the bootstrap interval is the percentile interval of resampled means
    rng = np.random.default_rng(5)
    vals = rng.normal(0.8, 0.05, size=40)
    lo, hi = metrics.bootstrap_ci(vals, n_boot=4000, seed=2)
    sem = vals.std(ddof=1) / np.sqrt(vals.size)
    assert lo == pytest.approx(vals.mean() - 1.96 * sem, abs=0.25 * sem)
    assert hi == pytest.approx(vals.mean() + 1.96 * sem, abs=0.25 * sem)


@pytest.mark.network
def test_real_lung_nodule_label_against_monai_and_simpleitk_spacing():
    """Real CT label (pyradiomics lung1, 5 mm slices) read through medseg.io vs SimpleITK."""
    import SimpleITK as sitk

    from medseg.data import sample
    from medseg.io import load

    path = sample("lung1_label")
    ref = load(path, kind="label")
    itk = sitk.ReadImage(str(path))
    ref_np = ref.numpy()[0]
    assert ref_np.sum() > 0
    pred_np = ndimage.binary_dilation(ref_np > 0, iterations=1).astype(np.uint8)
    pred_np[:, :, ref_np.any(axis=(0, 1)).nonzero()[0][0]] = 0  # miss the first lesion slice
    pred = MetaTensor(torch.from_numpy(pred_np)[None], affine=ref.affine)
    row = metrics.evaluate_case(pred, ref, labels=[1], tolerance_mm=2.0)[0]
    spacing = itk.GetSpacing()  # SimpleITK's (x, y, z) voxel size == medseg's (i, j, k) axes
    assert spacing[2] > 2 * spacing[0]  # anisotropic: the test means something
    expect = _monai_all(pred_np > 0, ref_np > 0, spacing, 2.0)
    for name in ("dice", "iou", "nsd"):
        assert row[name] == pytest.approx(expect[name], abs=1e-4)
    for name in ("hd95", "assd"):
        assert row[name] == pytest.approx(expect[name], abs=0.05)
    assert row["volume_ref_ml"] == pytest.approx(ref_np.sum() * np.prod(spacing) / 1000, rel=1e-5)
