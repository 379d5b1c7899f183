"""What a metric is worth when the prediction, the reference or both are empty.

Two conventions, chosen by name (``policy=`` in the API, ``--empty-policy`` on the CLI).

``"metricsreloaded"`` (the default) reproduces MetricsReloaded's ``BinaryPairwiseMeasures``
(Project-MONAI/MetricsReloaded, ``MetricsReloaded/metrics/pairwise_measures.py``, read at commit
00219d05): ``dsc()`` returns 1 when both masks are empty ("set to 1 as correct solution even if
not defined") and 0 when one is; ``intersection_over_union()`` returns NaN when both are empty and
0 when one is; ``measured_distance()`` returns 0 for HD, HD95 and ASSD when both are empty;
``normalised_surface_distance()`` divides 0 border voxels by 0 when both are empty, i.e. NaN;
``sensitivity()`` is NaN for an empty reference; ``positive_predictive_values()`` is NaN when both
are empty and 0 when only the prediction is. With exactly one mask empty MetricsReloaded computes
distances to a surface that does not exist (scipy's EDT of an image without background, an
artefact of the implementation): medseg reports NaN there (undefined) and NSD 0 (no boundary
voxel within tolerance).

``"monai"`` gives what MONAI 1.5's functions give with ``ignore_empty=True``:
``compute_dice``/``compute_iou`` are NaN whenever the reference is empty (whatever the
prediction) and 0 when only the prediction is; ``compute_average_surface_distance`` is NaN when
both are empty and **inf** when exactly one is; ``compute_hausdorff_distance(percentile=95)`` is
NaN in all three cases (its distances are all inf with one mask empty, and ``torch.quantile`` of
infs is NaN; with ``percentile=None`` it would be inf);
``compute_surface_dice`` is NaN when both are empty and 0 when one is; sensitivity / precision
(``compute_confusion_matrix_metric``) are NaN when their denominator is 0.

Tables below: value per metric for (both empty, prediction empty only, reference empty only).
Summaries skip NaN and inf (they report how many values were used and how many were skipped).
"""

from __future__ import annotations

import math

from medseg.errors import EvaluationError

NAN = math.nan
INF = math.inf

POLICIES = ("metricsreloaded", "monai")
DEFAULT_POLICY = "metricsreloaded"

# metric -> (both empty, pred empty only, ref empty only)
_TABLES: dict[str, dict[str, tuple[float, float, float]]] = {
    "metricsreloaded": {
        "dice": (1.0, 0.0, 0.0),
        "iou": (NAN, 0.0, 0.0),
        "hd95": (0.0, NAN, NAN),
        "assd": (0.0, NAN, NAN),
        "nsd": (NAN, 0.0, 0.0),
        "sensitivity": (NAN, 0.0, NAN),
        "precision": (NAN, 0.0, 0.0),
    },
    "monai": {
        "dice": (NAN, 0.0, NAN),
        "iou": (NAN, 0.0, NAN),
        "hd95": (NAN, NAN, NAN),
        "assd": (NAN, INF, INF),
        "nsd": (NAN, 0.0, 0.0),
        "sensitivity": (NAN, 0.0, NAN),
        "precision": (NAN, NAN, 0.0),
    },
}

# instance-level scores (precision, recall, F1, AP, PQ, ...) when neither map holds an instance
_INSTANCE_BOTH_EMPTY = {"metricsreloaded": 1.0, "monai": NAN}


def check_policy(policy: str) -> str:
    """Return ``policy`` if it is a known empty-mask convention, else raise EvaluationError."""
    if policy not in _TABLES:
        raise EvaluationError(f"unknown empty-mask policy {policy!r}: choose one of {', '.join(POLICIES)}")
    return policy


def empty_value(metric: str, policy: str, pred_empty: bool, ref_empty: bool) -> float:
    """Value of ``metric`` under ``policy`` when at least one of the masks is empty."""
    table = _TABLES[check_policy(policy)]
    if metric not in table:
        raise EvaluationError(f"no empty-mask convention for metric {metric!r}")
    both, pred_only, ref_only = table[metric]
    if pred_empty and ref_empty:
        return both
    if pred_empty:
        return pred_only
    if ref_empty:
        return ref_only
    raise EvaluationError("empty_value() called although neither mask is empty")


def instance_both_empty(policy: str) -> float:
    """Instance-level score when neither prediction nor reference holds an instance."""
    return _INSTANCE_BOTH_EMPTY[check_policy(policy)]


def describe_policy(policy: str) -> dict[str, dict[str, float | str]]:
    """The policy as a JSON-friendly table: metric -> {both_empty, pred_empty, ref_empty}."""
    out: dict[str, dict[str, float | str]] = {}
    for metric, (both, p, r) in _TABLES[check_policy(policy)].items():
        out[metric] = {k: (str(v) if not math.isfinite(v) else v)
                       for k, v in (("both_empty", both), ("pred_empty", p), ("ref_empty", r))}
    return out
