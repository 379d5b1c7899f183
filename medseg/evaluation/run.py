"""``evaluate``: score prediction files against reference files and write the report."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import EvaluationError, MedsegError
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
from medseg.evaluation.summary import EvaluationSummary
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
from medseg.metrics._arrays import _affine_of, align_to_reference, as_label_array, resolve_spacing
from medseg.metrics.policy import check_policy
from medseg.settings import progress_enabled

N_WORST_IN_SUMMARY = 20
#: ``resample_to`` values: refuse grids that differ beyond a reorientation, or resample the
#: prediction onto the reference grid (nearest neighbour).
RESAMPLE_CHOICES = ("none", "reference")
#: What a failing case may raise without aborting the evaluation (listed with its reason).
_CASE_ERRORS = (MedsegError, OSError, ValueError, EOFError, MemoryError)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote and found."""

    out_dir: Path
    rows: list[dict[str, Any]]
    instance_rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def _grid_check(case: str, pred: Any, ref: Any, involves_seg: bool, resample_to: str = "none"
                ) -> tuple[Any, str, bool]:
    """The prediction on the reference grid, a note ("" when nothing was done) and whether it was
    resampled: the same grid (1e-3 mm at the corners) or the same voxels in another axis order /
    direction (reoriented exactly); other grids are resampled onto the reference by nearest
    neighbour when ``resample_to == "reference"``, else refused with an EvaluationError that names
    the case and the flag."""
    p, r = as_label_array(pred, "prediction"), as_label_array(ref, "reference")
    try:
        aligned, note = align_to_reference(pred, ref, p, r)
        return (aligned if note else pred), note, False
    except EvaluationError as exc:
        a_p, a_r = _affine_of(pred), _affine_of(ref)
        if resample_to == "reference" and a_p is not None and a_r is not None and p.ndim == r.ndim == 3:
            from medseg.io.regrid import resample

            gap = float(np.abs(a_p[:3, 3] - a_r[:3, 3]).max())
            out = resample(p, a_p, a_r, r.shape, label=True)
            return out, (f"prediction resampled onto the reference grid by nearest neighbour (grid "
                         f"{'x'.join(map(str, p.shape))} -> {'x'.join(map(str, r.shape))}, origins "
                         f"{gap:.3g} mm apart): boundary voxels may move by half a voxel"), True
        hint = " (for a DICOM SEG give its source series with --ref-image)" if involves_seg else ""
        flag = ("; or score it on the reference grid with --resample-to reference (nearest neighbour)"
                if a_p is not None and a_r is not None and p.ndim == r.ndim == 3 and resample_to != "reference"
                else "")
        raise EvaluationError(f"case {case}: {exc}{hint}{flag}") from None


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
    resample_to: str = "none",
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Score one case: read each file once, check the grids, compute every label's metrics.

    Returns ``(rows, instance_row)``: rows carry ``case``, ``label`` and the metric columns;
    ``instance_row`` is None unless ``instances``. A prediction written in another axis order or
    direction than the reference (the same voxels) is reoriented exactly onto the reference grid;
    other grids are refused unless ``resample_to="reference"`` (nearest neighbour).
    """
    rows, inst, _, _ = _score_case(case, pred_path, ref_path, labels=labels, tolerance_mm=tolerance_mm,
                                   policy=policy, instances=instances, ref_image=ref_image,
                                   resample_to=resample_to)
    return rows, inst


def _score_case(case: str, pred_path: str | os.PathLike[str], ref_path: str | os.PathLike[str], *,
                labels: Sequence[int] | None, tolerance_mm: float, policy: str, instances: bool,
                ref_image: str | os.PathLike[str] | None, resample_to: str = "none",
                ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str, bool]:
    """:func:`evaluate_files` plus the grid note ("" when the grids were the same) and whether
    the prediction was resampled."""
    src = reference_image_for(ref_image, case)
    pred = read_label_map(pred_path, src)
    ref = read_label_map(ref_path, src)
    involves_seg = any(str(p).lower().endswith(".dcm") for p in (pred_path, ref_path))
    pred, note, resampled = _grid_check(case, pred, ref, involves_seg, resample_to)
    if instances:
        p, r = as_label_array(pred, "prediction"), as_label_array(ref, "reference")
        spacing = resolve_spacing(pred, ref, None, p.ndim)
        inst = instance_metrics(p, r, policy=policy)
        rows = evaluate_case((p > 0).astype(np.uint8), (r > 0).astype(np.uint8), spacing, [1], policy, tolerance_mm)
        return [{"case": case, **row} for row in rows], {"case": case, **inst}, note, resampled
    rows = evaluate_case(pred, ref, None, labels, policy, tolerance_mm)
    return [{"case": case, **row} for row in rows], None, note, resampled


def _evaluate_task(args: tuple) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str, bool, str]:
    """One case scored, or its failure: ``(rows, instance_row, note, resampled, failure)`` with
    ``failure`` the one-line reason ("" when scored). A failing case never aborts the others."""
    case, pred_path, ref_path, kwargs = args
    try:
        return (*_score_case(case, pred_path, ref_path, **kwargs), "")
    except _CASE_ERRORS as exc:
        from medseg.logsafe import scrub

        text = " ".join(scrub(str(exc)).split()) or type(exc).__name__
        if not isinstance(exc, MedsegError):
            text = f"{type(exc).__name__}: {text}"
        prefix = f"case {case}: "
        return [], None, "", False, text[len(prefix):] if text.startswith(prefix) else text


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
    resample_to: str = "none",
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
    in ``summary.json``; a case whose grids differ otherwise (shape, or affine beyond 1e-3 mm) fails,
    unless ``resample_to="reference"``: then the prediction is resampled onto the reference grid by
    nearest neighbour and the case is listed under ``resampled`` with a warning in ``warnings``.
    A case that cannot be read or scored is listed under ``failed`` (case -> reason) and left out
    of the statistics; the rest is scored (EvaluationError only when no case could be scored).
    ``workers`` > 1 scores cases in a process pool.
    """
    check_policy(policy)
    if resample_to not in RESAMPLE_CHOICES:
        raise EvaluationError(f"resample_to={resample_to!r} is not one of {', '.join(RESAMPLE_CHOICES)}")
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
              "instances": instances, "ref_image": ref_image, "resample_to": resample_to}
    tasks = [(c, str(p), str(r), kwargs) for c, p, r in match.pairs]
    results: list[tuple[list[dict[str, Any]], dict[str, Any] | None, str, bool, str]] = []
    if workers == 1 or len(tasks) == 1:
        for t in _progress(tasks, len(tasks), "evaluate"):
            results.append(_evaluate_task(t))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
            results = list(_progress(pool.map(_evaluate_task, tasks), len(tasks), "evaluate"))

    by_case = {case: res for (case, _, _), res in zip(match.pairs, results, strict=True)}
    failed = {case: res[4] for case, res in by_case.items() if res[4]}
    scored = [case for case, _, _ in match.pairs if case not in failed]
    if not scored:
        case, reason = next(iter(failed.items()))
        more = f" ({len(failed) - 1} other case(s) failed too)" if len(failed) > 1 else ""
        raise EvaluationError(f"no case could be scored: case {case}: {reason}{more}")
    rows = [row for case in scored for row in by_case[case][0]]
    instance_rows = [by_case[c][1] for c in scored if by_case[c][1] is not None]
    reoriented = {c: by_case[c][2] for c in scored if by_case[c][2] and not by_case[c][3]}
    resampled = {c: by_case[c][2] for c in scored if by_case[c][3]}
    warnings_list = [f"case {c}: {note}" for c, note in resampled.items()]
    warnings_list += [f"case {c} not scored: {reason}" for c, reason in failed.items()]
    # every case gets a row for every label of the data set (absent in both = "both empty")
    all_labels = sorted(names) if names else sorted({int(r["label"]) for r in rows})
    seen = {(r["case"], int(r["label"])) for r in rows}
    for case in scored:
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
    extra: dict[str, Any] = {}
    fields: dict[str, Any] = {
        "n_cases": len(scored),
        "cases": scored,
        "failed": failed,
        "unmatched": {"pred_only": match.pred_only, "ref_only": match.ref_only},
        "ignored_files": match.ignored,
        "reoriented": reoriented,
        "resampled": resampled,
        "warnings": warnings_list,
        "labels": {int(k): v for k, v in label_names.items()},
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
        extra["instances"] = {m: summarize([float(r[m]) for r in instance_rows], n_boot=n_boot, seed=seed)
                                for m in INSTANCE_METRIC_NAMES}
        extra["instances"]["matching"] = ("Hungarian on IoU, match if IoU > 0.5; AP = TP/(TP+FP+FN); ap75 the "
                                            "same at 0.75; coco_*: COCO AP (greedy, IoU >= t, 101-point "
                                            "interpolated precision, equal scores; medseg.metrics.coco)")
    else:  # mean over the labels of each case's IoU, then summarised over cases
        per_case = {}
        for r in rows:
            v = float(r["iou"])
            if not math.isnan(v):
                per_case.setdefault(r["case"], []).append(v)
        extra["miou"] = summarize([float(np.mean(v)) for v in per_case.values()], n_boot=n_boot, seed=seed)

    summary = EvaluationSummary(**fields, **extra).to_json()

    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(out / "metrics.csv", ("case", "label", *METRIC_NAMES), rows),
             write_csv(out / "worst_cases.csv", WORST_COLUMNS, ranked)]
    if instances:
        files.append(write_csv(out / "instance_metrics.csv", ("case", *INSTANCE_METRIC_NAMES), instance_rows))
    if plots:
        files.extend(box_plots(out, rows, label_names))
    files.append(write_json(out / "summary.json", summary))
    return EvaluationResult(out_dir=out, rows=rows, instance_rows=instance_rows, summary=summary, files=files)
