"""Static HTML QA reports for segment, batch and evaluate output folders (``medseg report``).

Public API::

    build_report(folder, out_html=None, *, reference=None, evaluation=None, min_dice=0.7, ...) -> Path
    write_report(...same...) -> ReportResult   # .html, .low_dice (case, label, name, Dice), .summary_line()
    find_evaluation(folder) -> Path | None     # the one evaluate sub-folder of a segment/batch folder
    collect(folder, *, reference=None) -> (kind, list[CaseReport])
    detect_kind(folder) -> "segment" | "batch" | "evaluate"
    label_sizes(seg_path, *, instances=False) -> (sizes mL or mm^2, ndim, n_instances)
    PLAUSIBLE_ML                       # adult organ volume ranges (mL) used for the flags
"""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "build_report": "medseg.report.builder",
    "write_report": "medseg.report.builder",
    "ReportResult": "medseg.report.builder",
    "find_evaluation": "medseg.report.folders",
    "collect": "medseg.report.folders",
    "detect_kind": "medseg.report.folders",
    "label_sizes": "medseg.report.folders",
    "effective_dice": "medseg.report.cases",
    "LowDice": "medseg.report.cases",
    "CaseReport": "medseg.report.cases",
    "DEFAULT_MIN_DICE": "medseg.report.qa",
    "TTA_DISAGREEMENT_THRESHOLD": "medseg.report.qa",
    "render_html": "medseg.report.html",
    "PLAUSIBLE_ML": "medseg.report.plausible",
    "plausible_range": "medseg.report.plausible",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
