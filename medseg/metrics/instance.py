"""Instance and lesion metrics on label maps whose values are instance ids (0 = background).

* **Matching**: one-to-one, optimal on IoU (Hungarian, ``scipy.optimize.linear_sum_assignment``
  maximising the summed IoU); a pair counts as a match only if its IoU is **strictly greater**
  than the threshold. For thresholds >= 0.5 a match is unique anyway (two objects cannot both
  overlap a third by more than half), so this equals every greedy scheme.
* COCO-style AP (``coco_ap50``, ``coco_ap75``, ``coco_map``: area under the interpolated
  precision-recall curve, equal scores, see :mod:`medseg.metrics.coco`) is reported next to it.
* Per threshold: TP, FP = n_pred - TP, FN = n_ref - TP; precision TP/(TP+FP); recall
  TP/(TP+FN); F1 = 2TP/(2TP+FP+FN); **AP** = TP/(TP+FP+FN), the "average precision" of the 2018
  Data Science Bowl and the StarDist papers (not the area under a PR curve). ``mean_ap`` and
  ``mean_f1`` average over IoU thresholds 0.5, 0.55, ..., 0.95.
* **Panoptic quality** at 0.5 (Kirillov et al. 2019): SQ = mean IoU of matched pairs; RQ =
  TP/(TP + FP/2 + FN/2); PQ = SQ x RQ. SQ is NaN when nothing matches (PQ is then 0).
* **Lesion-wise**: connected components of the foreground (value > 0) with full connectivity
  (26-neighbourhood in 3D, 8 in 2D); a reference lesion is detected when any predicted
  foreground voxel touches it; a predicted component touching no reference voxel is a false
  positive. ``lesion_sensitivity`` = detected / reference lesions.
* The IoU matrix comes from one joint histogram (``np.bincount`` of pred_index * n_ref +
  ref_index), never from loops over pairs.
* When neither map holds an instance the scores follow the empty-mask policy (1 for
  "metricsreloaded", NaN for "monai"); counts are always reported.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from medseg.metrics._arrays import as_label_array, check_same_grid
from medseg.metrics.policy import DEFAULT_POLICY, check_policy, instance_both_empty

#: IoU thresholds 0.5:0.05:0.95 used for ``mean_ap`` / ``mean_f1``.
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

#: Column names of one instance row (after ``case``).
INSTANCE_METRIC_NAMES = (
    "n_pred", "n_ref", "tp", "fp", "fn", "precision", "recall", "f1", "ap", "ap75",
    "mean_ap", "mean_f1", "coco_ap50", "coco_ap75", "coco_map", "sq", "rq", "pq", "n_ref_lesions", "n_pred_lesions",
    "lesion_sensitivity", "lesion_false_positives",
)


def _compact(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel ids to 0..n (0 stays background); return (relabelled, original ids of 1..n)."""
    ids, inverse = np.unique(arr, return_inverse=True)
    inverse = inverse.reshape(arr.shape)
    if ids.size and ids[0] == 0:
        return inverse, ids[1:]
    return inverse + 1, ids


def iou_matrix(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every (predicted, reference) instance pair from one joint histogram.

    Returns ``(iou, pred_ids, ref_ids)``: ``iou[a, b]`` is the IoU of instance ``pred_ids[a]``
    with ``ref_ids[b]``.
    """
    p = as_label_array(pred, "prediction")
    r = as_label_array(ref, "reference")
    p = check_same_grid(pred, ref, p, r)
    return _iou_matrix(p, r)


def _iou_matrix(p: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pc, pred_ids = _compact(p)
    rc, ref_ids = _compact(r)
    n_p, n_r = pred_ids.size, ref_ids.size
    joint = np.bincount((pc.astype(np.int64) * (n_r + 1) + rc).ravel(), minlength=(n_p + 1) * (n_r + 1))
    joint = joint.reshape(n_p + 1, n_r + 1)
    inter = joint[1:, 1:].astype(np.float64)
    area_p = joint[1:, :].sum(axis=1).astype(np.float64)
    area_r = joint[:, 1:].sum(axis=0).astype(np.float64)
    union = area_p[:, None] + area_r[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return iou, pred_ids, ref_ids


def match_instances(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching on ``iou``; keep pairs with IoU > ``threshold``.

    Returns index arrays ``(pred_index, ref_index)`` into the rows / columns of ``iou``.
    """
    if iou.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] > threshold
    return rows[keep], cols[keep]


def _scores(tp: int, n_pred: int, n_ref: int, both_empty_value: float) -> dict[str, float]:
    fp, fn = n_pred - tp, n_ref - tp
    if n_pred == 0 and n_ref == 0:
        v = both_empty_value
        return {"precision": v, "recall": v, "f1": v, "ap": v}
    return {
        "precision": tp / n_pred if n_pred else math.nan,
        "recall": tp / n_ref if n_ref else math.nan,
        "f1": 2 * tp / (2 * tp + fp + fn),
        "ap": tp / (tp + fp + fn),
    }


def lesion_metrics(pred: Any, ref: Any, *, policy: str = DEFAULT_POLICY) -> dict[str, float | int]:
    """Lesion-wise detection on foreground connected components (26/8-connectivity)."""
    p = as_label_array(pred, "prediction") > 0
    r = as_label_array(ref, "reference") > 0
    p = check_same_grid(pred, ref, p, r)
    return _lesion_metrics(p, r, policy)


def _lesion_metrics(p: np.ndarray, r: np.ndarray, policy: str) -> dict[str, float | int]:
    structure = ndimage.generate_binary_structure(p.ndim, p.ndim)
    ref_cc, n_ref = ndimage.label(r, structure=structure)
    pred_cc, n_pred = ndimage.label(p, structure=structure)
    hit_ref = np.bincount(ref_cc[p], minlength=n_ref + 1)[1:] > 0
    hit_pred = np.bincount(pred_cc[r], minlength=n_pred + 1)[1:] > 0
    detected = int(hit_ref.sum())
    if n_ref == 0:
        sens = instance_both_empty(policy) if n_pred == 0 else math.nan
    else:
        sens = detected / n_ref
    return {
        "n_ref_lesions": int(n_ref),
        "n_pred_lesions": int(n_pred),
        "lesion_sensitivity": sens,
        "lesion_false_positives": int(n_pred - hit_pred.sum()),
    }


def instance_metrics(
    pred: Any,
    ref: Any,
    *,
    threshold: float = 0.5,
    thresholds: tuple[float, ...] = IOU_THRESHOLDS,
    policy: str = DEFAULT_POLICY,
) -> dict[str, float | int]:
    """Detection and panoptic scores of two instance-id maps (see module docstring).

    Returns the keys of :data:`INSTANCE_METRIC_NAMES`; ``tp``/``fp``/``fn``, precision, recall,
    F1, AP, SQ, RQ and PQ are at ``threshold``; ``mean_ap``/``mean_f1`` over ``thresholds``.
    """
    check_policy(policy)
    p = as_label_array(pred, "prediction")
    r = as_label_array(ref, "reference")
    p = check_same_grid(pred, ref, p, r)
    iou, pred_ids, ref_ids = _iou_matrix(p, r)
    n_pred, n_ref = int(pred_ids.size), int(ref_ids.size)
    both = instance_both_empty(policy)
    rows, cols = linear_sum_assignment(iou, maximize=True) if iou.size else (np.zeros(0, int),) * 2
    matched_iou = iou[rows, cols] if iou.size else np.zeros(0)

    aps, f1s = [], []
    for thr in thresholds:
        tp_t = int(np.count_nonzero(matched_iou > thr))
        s = _scores(tp_t, n_pred, n_ref, both)
        aps.append(s["ap"])
        f1s.append(s["f1"])
    good = matched_iou[matched_iou > threshold]
    tp = int(good.size)
    out: dict[str, float | int] = {"n_pred": n_pred, "n_ref": n_ref, "tp": tp,
                                   "fp": n_pred - tp, "fn": n_ref - tp}
    out.update(_scores(tp, n_pred, n_ref, both))
    out["ap75"] = _scores(int(np.count_nonzero(matched_iou > 0.75)), n_pred, n_ref, both)["ap"]
    out["mean_ap"] = float(np.mean(aps))
    out["mean_f1"] = float(np.mean(f1s))
    if n_pred == 0 and n_ref == 0:
        out["sq"] = out["rq"] = out["pq"] = both
    else:
        sq = float(good.mean()) if tp else math.nan
        rq = tp / (tp + 0.5 * (n_pred - tp) + 0.5 * (n_ref - tp))
        out["sq"] = sq
        out["rq"] = rq
        out["pq"] = sq * rq if tp else 0.0
    from medseg.metrics.coco import COCO_METRIC_NAMES, coco_ap

    coco = coco_ap(p, r)
    out.update({k: (both if n_pred == 0 and n_ref == 0 else coco[k]) for k in COCO_METRIC_NAMES})
    out.update(_lesion_metrics(p > 0, r > 0, policy))
    return out
