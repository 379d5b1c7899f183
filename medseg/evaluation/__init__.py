"""Evaluation runs: pair prediction and reference files, read each once, score every label with
:mod:`medseg.metrics`, and write ``metrics.csv``, ``summary.json``, ``worst_cases.csv`` and box
plots. Used by ``medseg evaluate``.

Public API::

    evaluate(pred, ref, out_dir, *, labels=None, tolerance_mm=1.0, policy="metricsreloaded",
             instances=False, ref_image=None, workers=1, seed=0, n_boot=2000) -> EvaluationResult
    evaluate_files(case, pred_path, ref_path, ...) -> (rows, instance_row)
    match_cases(pred, ref) -> CaseMatch          # pairs by file name without suffix
    read_label_map(path, reference_image=None) -> MetaTensor   # NIfTI/NRRD/MHA or DICOM SEG
"""

from __future__ import annotations

from medseg.evaluation.cases import CaseMatch, case_name, match_cases, parse_labels, read_label_map
from medseg.evaluation.run import EvaluationResult, evaluate, evaluate_files

__all__ = ["CaseMatch", "EvaluationResult", "case_name", "evaluate", "evaluate_files", "match_cases",
           "parse_labels", "read_label_map"]
