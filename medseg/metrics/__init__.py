"""Segmentation metrics on arrays with spacing in mm: pure functions, no file reading.

Overlap (``dice``, ``iou``), surface distances (``hd95``, ``assd``, ``nsd`` or all three from
one distance-transform pass with ``surface_metrics``), a whole case (``evaluate_case``), instance
matching / panoptic quality / lesion detection (``instance_metrics``), and summaries that skip
NaN and inf (``summarize``). Empty masks follow an explicit policy: see
:mod:`medseg.metrics.policy` ("metricsreloaded" by default, or "monai").
"""

from __future__ import annotations

from medseg.metrics.instance import (
    INSTANCE_METRIC_NAMES,
    IOU_THRESHOLDS,
    instance_metrics,
    iou_matrix,
    lesion_metrics,
    match_instances,
)
from medseg.metrics.policy import DEFAULT_POLICY, POLICIES, describe_policy, empty_value
from medseg.metrics.segmentation import (
    METRIC_NAMES,
    SurfaceMetrics,
    assd,
    dice,
    empty_row,
    evaluate_case,
    hd95,
    iou,
    nsd,
    present_labels,
    surface_metrics,
)
from medseg.metrics.stats import bootstrap_ci, summarize

__all__ = [
    "DEFAULT_POLICY", "INSTANCE_METRIC_NAMES", "IOU_THRESHOLDS", "METRIC_NAMES", "POLICIES",
    "SurfaceMetrics", "assd", "bootstrap_ci", "describe_policy", "dice", "empty_row", "empty_value",
    "evaluate_case", "hd95", "instance_metrics", "iou", "iou_matrix", "lesion_metrics",
    "match_instances", "nsd", "present_labels", "summarize", "surface_metrics",
]
