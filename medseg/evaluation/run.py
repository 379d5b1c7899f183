"""``evaluate``: score prediction files against reference files and write the report."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import EvaluationError
from medseg.evaluation.cases import (
    match_cases,
    parse_labels,
    read_label_map,
    reference_image_for,
)
from medseg.evaluation.report import (
    WORST_COLUMNS,
    box_plots,
    worst_cases,
    write_csv,
    write_json,
)
from medseg.io.atomic import check_writable_dir
from medseg.metrics import (
    DEFAULT_POLICY,
    INSTANCE_METRIC_NAMES,
    METRIC_NAMES,
    describe_policy,
    empty_row,
    evaluate_case,
    instance_metrics,
    summarize,
)
from medseg.metrics._arrays import align_to_reference, as_label_array, resolve_spacing
from medseg.metrics.policy import check_policy
from medseg.settings import progress_enabled

N_WORST_IN_SUMMARY = 20


@dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote and found."""

    out_dir: Path
    rows: list[dict[str, Any]]
    instance_rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def _grid_check(case: str, pred: Any, ref: Any, involves_seg: bool) -> tuple[Any, str]:
    """The prediction on the reference grid and a note ("" when nothing was done): the same grid
    (1e-3 mm at the corners) or the same voxels in another axis order / direction (reoriented
    exactly); anything else raises an EvaluationError that names the case."""
    try:
        aligned, note = align_to_reference(pred, ref, as_label_array(pred, "prediction"),
                                           as_label_array(ref, "reference"))
        return (aligned if note else pred), note
    except EvaluationError as exc:
        hint = " (for a DICOM SEG give its source series with --ref-image)" if involves_seg else ""
        raise EvaluationError(f"case {case}: {exc}{hint}") from None


def evaluate_files(
    case: str,
    pred_path: str | os.PathLike[str],
    ref_path: str | os.PathLike[str],
    *,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
    policy: str = DEFAULT_POLICY,
    instances: bool = False,
    ref_image: str | os.PathLike[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Score one case: read each file once, check the grids, compute every label's metrics.

    Returns ``(rows, instance_row)``: rows carry ``case``, ``label`` and the metric columns;
    ``instance_row`` is None unless ``instances``. A prediction written in another axis order or
    direction than the reference (the same voxels) is reoriented exactly onto the reference grid.
    """
    rows, inst, _ = _score_case(case, pred_path, ref_path, labels=labels, tolerance_mm=tolerance_mm, policy=policy,
                                instances=instances, ref_image=ref_image)
    return rows, inst


def _score_case(case: str, pred_path: str | os.PathLike[str], ref_path: str | os.PathLike[str], *,
                labels: Sequence[int] | None, tolerance_mm: float, policy: str, instances: bool,
                ref_image: str | os.PathLike[str] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str]:
    """:func:`evaluate_files` plus the grid note ("" when the grids were the same)."""
    src = reference_image_for(ref_image, case)
    pred = read_label_map(pred_path, src)
    ref = read_label_map(ref_path, src)
    involves_seg = any(str(p).lower().endswith(".dcm") for p in (pred_path, ref_path))
    pred, note = _grid_check(case, pred, ref, involves_seg)
    if instances:
        p, r = as_label_array(pred, "prediction"), as_label_array(ref, "reference")
        spacing = resolve_spacing(pred, ref, None, p.ndim)
        inst = instance_metrics(p, r, policy=policy)
        rows = evaluate_case((p > 0).astype(np.uint8), (r > 0).astype(np.uint8), spacing, [1], policy, tolerance_mm)
        return [{"case": case, **row} for row in rows], {"case": case, **inst}, note
    rows = evaluate_case(pred, ref, None, labels, policy, tolerance_mm)
    return [{"case": case, **row} for row in rows], None, note


def _evaluate_task(args: tuple) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str]:
    case, pred_path, ref_path, kwargs = args
    return _score_case(case, pred_path, ref_path, **kwargs)


def _empty_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    both = sum(1 for r in rows if r["volume_pred_ml"] == 0 and r["volume_ref_ml"] == 0)
    pred_only = sum(1 for r in rows if r["volume_pred_ml"] == 0 and r["volume_ref_ml"] > 0)
    ref_only = sum(1 for r in rows if r["volume_pred_ml"] > 0 and r["volume_ref_ml"] == 0)
    return {"both_empty": both, "pred_empty_only": pred_only, "ref_empty_only": ref_only}


def _progress(iterable, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="case",
                disable=not progress_enabled())


def evaluate(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    labels: Mapping[int, str] | Sequence[int | str] | None = None,
    tolerance_mm: float = 1.0,
    policy: str = DEFAULT_POLICY,
    instances: bool = False,
    ref_image: str | os.PathLike[str] | None = None,
    workers: int = 1,
    seed: int = 0,
    n_boot: int = 2000,
    plots: bool = True,
) -> EvaluationResult:
    """Compare prediction and reference label maps (folders or single files); write a report.

    Writes ``out_dir/metrics.csv`` (``case``, ``label`` + :data:`medseg.metrics.METRIC_NAMES`;
    distances in mm, volumes in ml), ``summary.json`` (per label: mean, median, std and a seeded
    bootstrap 95% interval of the mean over finite values, empty-case counts, the empty-mask
    policy, unmatched cases, worst cases first), ``worst_cases.csv``, ``boxplot_<metric>.png``
    and, with ``instances``, ``instance_metrics.csv``. Cases are paired by file name without
    suffix; cases present on one side only are listed, never dropped silently. A prediction that
    holds the reference's voxels in another axis order or direction (dcm2niix's LAS against
    medseg's LPS) is reoriented exactly onto the reference grid and listed under ``reoriented``
    in ``summary.json``; grids that differ otherwise (shape, or affine beyond 1e-3 mm) raise
    :class:`~medseg.errors.EvaluationError`: nothing is resampled. ``workers`` > 1 scores cases in a process pool.
    """
    check_policy(policy)
    names = parse_labels(labels)
    if workers < 1:
        raise EvaluationError(f"workers={workers} is invalid: give 1 or more")
    out = check_writable_dir(out_dir, "-o")
    match = match_cases(pred, ref)
    if not match.pairs:
        raise EvaluationError(
            f"no case is present in both inputs ({len(match.pred_only)} prediction-only, "
            f"{len(match.ref_only)} reference-only): file names (without suffix) must match"
        )
    kwargs = {"labels": sorted(names) if names else None, "tolerance_mm": tolerance_mm, "policy": policy,
              "instances": instances, "ref_image": ref_image}
    tasks = [(c, str(p), str(r), kwargs) for c, p, r in match.pairs]
    results: list[tuple[list[dict[str, Any]], dict[str, Any] | None, str]] = []
    if workers == 1 or len(tasks) == 1:
        for t in _progress(tasks, len(tasks), "evaluate"):
            results.append(_evaluate_task(t))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
            results = list(_progress(pool.map(_evaluate_task, tasks), len(tasks), "evaluate"))

    rows = [row for case_rows, _, _ in results for row in case_rows]
    instance_rows = [inst for _, inst, _ in results if inst is not None]
    reoriented = {case: note for (case, _, _), (_, _, note) in zip(match.pairs, results, strict=True) if note}
    # every case gets a row for every label of the data set (absent in both = "both empty")
    all_labels = sorted(names) if names else sorted({int(r["label"]) for r in rows})
    seen = {(r["case"], int(r["label"])) for r in rows}
    for case, _, _ in match.pairs:
        for lab in all_labels:
            if (case, lab) not in seen:
                rows.append({"case": case, **empty_row(lab, policy)})
    rows.sort(key=lambda r: (r["case"], int(r["label"])))
    label_names = {lab: (names or {}).get(lab, "foreground" if instances else str(lab)) for lab in all_labels}

    per_label: dict[str, Any] = {}
    for lab in all_labels:
        lab_rows = [r for r in rows if int(r["label"]) == lab]
        per_label[str(lab)] = {
            "name": label_names[lab],
            "n_cases": len(lab_rows),
            "empty_cases": _empty_counts(lab_rows),
            "metrics": {m: summarize([float(r[m]) for r in lab_rows], n_boot=n_boot, seed=seed)
                        for m in METRIC_NAMES},
        }
    ranked = worst_cases(rows)
    summary: dict[str, Any] = {
        "n_cases": len(match.pairs),
        "cases": [c for c, _, _ in match.pairs],
        "unmatched": {"pred_only": match.pred_only, "ref_only": match.ref_only},
        "ignored_files": match.ignored,
        "reoriented": reoriented,
        "labels": {str(k): v for k, v in label_names.items()},
        "tolerance_mm": float(tolerance_mm),
        "empty_policy": {
            "name": policy,
            "values": describe_policy(policy),
            "counting": "empty cases are scored with the policy's values and included in the statistics "
                        "when finite; NaN and inf values are left out of mean/median/std/ci95 and counted "
                        "in n_nan / n_inf (n = values used)",
        },
        "statistics": {"ci95": "percentile bootstrap of the mean over cases", "n_boot": n_boot, "seed": seed,
                       "std": "sample standard deviation (ddof=1)"},
        "per_label": per_label,
        "worst_cases": ranked[:N_WORST_IN_SUMMARY],
    }
    if instances:
        summary["instances"] = {m: summarize([float(r[m]) for r in instance_rows], n_boot=n_boot, seed=seed)
                                for m in INSTANCE_METRIC_NAMES}
        summary["instances"]["matching"] = "Hungarian on IoU, match if IoU > 0.5; AP = TP/(TP+FP+FN)"

    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(out / "metrics.csv", ("case", "label", *METRIC_NAMES), rows),
             write_csv(out / "worst_cases.csv", WORST_COLUMNS, ranked)]
    if instances:
        files.append(write_csv(out / "instance_metrics.csv", ("case", *INSTANCE_METRIC_NAMES), instance_rows))
    if plots:
        files.extend(box_plots(out, rows, label_names))
    files.append(write_json(out / "summary.json", summary))
    return EvaluationResult(out_dir=out, rows=rows, instance_rows=instance_rows, summary=summary, files=files)
