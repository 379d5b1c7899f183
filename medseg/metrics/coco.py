"""COCO-style average precision on instance-id maps, and the mean IoU over classes.

* **AP@t** (COCO, Lin et al. 2014; what ``pycocotools`` computes): predictions are taken in
  descending score order; each is matched to the unmatched reference instance of highest IoU
  provided IoU >= t (a true positive), else it is a false positive. Precision is made monotone
  (each value replaced by the maximum at any higher recall) and read at the 101 recall levels
  0, 0.01, ..., 1 (0 beyond the highest recall reached); AP is their mean. ``AP50`` is t = 0.5,
  ``AP75`` t = 0.75, ``mAP`` the mean over t = 0.5, 0.55, ..., 0.95. All detections are kept (no
  ``maxDets`` cut) and there are no crowd regions or area ranges.
* Without scores every prediction scores the same and they are taken in increasing id order
  (the order ``pycocotools`` keeps for equal scores when given detections in that order).
* No reference instance: NaN (pycocotools reports -1 for "undefined").
* This is not the ``ap`` of :mod:`medseg.metrics.instance` (TP / (TP + FP + FN) at one
  threshold, the Data Science Bowl / StarDist convention); both are reported.
* **mIoU**: the mean over classes of the per-class IoU (semantic label maps), classes absent from
  both maps left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medseg.metrics._arrays import as_label_array, check_same_grid
from medseg.metrics.instance import IOU_THRESHOLDS, _iou_matrix

RECALL_LEVELS = np.linspace(0.0, 1.0, 101)
COCO_METRIC_NAMES = ("coco_ap50", "coco_ap75", "coco_map")


def _ap_at(iou: np.ndarray, order: np.ndarray, n_ref: int, t: float) -> float:
    if n_ref == 0:
        return math.nan
    if order.size == 0:
        return 0.0
    taken = np.zeros(n_ref, dtype=bool)
    tp = np.zeros(order.size, dtype=bool)
    for rank, d in enumerate(order):
        cand = np.where(~taken & (iou[d] >= min(t, 1 - 1e-10)))[0]
        if cand.size:
            g = cand[np.argmax(iou[d, cand])]
            taken[g] = True
            tp[rank] = True
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / n_ref
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_LEVELS, side="left")
    q = np.where(idx < precision.size, precision[np.minimum(idx, precision.size - 1)], 0.0)
    return float(q.mean())


def coco_ap(pred: Any, ref: Any, *, scores: Mapping[int, float] | None = None,
            thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict[str, float]:
    """``{"coco_ap50", "coco_ap75", "coco_map"}`` (and ``ap@t`` per threshold) of two instance maps.

    ``scores`` maps a predicted instance id to its confidence (default: all equal)."""
    p = as_label_array(pred, "prediction")
    r = as_label_array(ref, "reference")
    p = check_same_grid(pred, ref, p, r)
    iou, pred_ids, ref_ids = _iou_matrix(p, r)
    sc = np.array([float((scores or {}).get(int(i), 1.0)) for i in pred_ids], dtype=np.float64)
    order = np.argsort(-sc, kind="mergesort")
    per_t = {float(t): _ap_at(iou, order, int(ref_ids.size), float(t)) for t in thresholds}
    ap50 = per_t.get(0.5, _ap_at(iou, order, int(ref_ids.size), 0.5))
    ap75 = per_t.get(0.75, _ap_at(iou, order, int(ref_ids.size), 0.75))
    vals = list(per_t.values())
    out = {"coco_ap50": ap50, "coco_ap75": ap75,
           "coco_map": math.nan if any(math.isnan(v) for v in vals) else float(np.mean(vals))}
    out.update({f"ap@{t:.2f}": v for t, v in per_t.items()})
    return out


def mean_iou(pred: Any, ref: Any, labels: Sequence[int] | None = None) -> float:
    """Mean over classes of IoU (classes absent from both maps are left out; NaN if none left)."""
    p = as_label_array(pred, "prediction")
    r = as_label_array(ref, "reference")
    p = check_same_grid(pred, ref, p, r)
    labs = labels if labels is not None else sorted((set(np.unique(p)) | set(np.unique(r))) - {0})
    ious = []
    for lab in labs:
        a, b = p == lab, r == lab
        union = int((a | b).sum())
        if union:
            ious.append(int((a & b).sum()) / union)
    return float(np.mean(ious)) if ious else math.nan
