"""Reading a ``medseg segment`` / ``batch`` / ``evaluate`` output folder into
:class:`~medseg.report.cases.CaseReport` s: which kind of folder it is, each case's
``provenance.json`` (:meth:`medseg.inference.result.Provenance.read`), its label sizes (through
medseg's own reader), metrics against a reference folder or an evaluate folder's CSV, and the
batch manifest's failures."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError, MedsegError
from medseg.inference.result import Provenance
from medseg.report.cases import CaseReport, _num
from medseg.report.qa import DEFAULT_MIN_DICE, _check_min_dice, _flag, _flag_low_dice

KINDS = ("segment", "batch", "evaluate")


def detect_kind(folder: str | os.PathLike[str]) -> str:
    """``"evaluate"``, ``"batch"`` or ``"segment"`` for an output folder (ConfigError otherwise)."""
    d = Path(folder)
    if not d.is_dir():
        raise ConfigError(f"{d.name}: not a folder; give a segment, batch or evaluate output folder")
    if (d / "metrics.csv").is_file() and (d / "summary.json").is_file():
        return "evaluate"
    if (d / "manifest.jsonl").is_file():
        return "batch"
    if _is_case_dir(d) or _case_dirs(d):
        return "segment"
    raise ConfigError(f"{d.name}: holds no segment output (<case>/seg.nii.gz), batch manifest.jsonl or "
                      "evaluate metrics.csv + summary.json; give an output folder of medseg segment/batch/evaluate")


def _is_case_dir(d: Path) -> bool:
    return (d / "seg.nii.gz").is_file() or (d / "provenance.json").is_file()


def _case_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_case_dir(p))


def label_sizes(seg_path: str | os.PathLike[str], *, instances: bool = False) -> tuple[dict[int, float], int, int | None]:
    """Per-label size of a label map file: mL for 3D (voxel volume from the affine, mm^3 / 1000),
    mm^2 for 2D. Returns ``(sizes, ndim, n_instances)``; with ``instances`` the sizes hold one entry
    ``0`` (all instances together) and ``n_instances`` counts the distinct non-zero ids. The file
    is read with medseg's reader (numpy only: a report needs neither torch nor MONAI)."""
    from medseg.geometry import spacing_of
    from medseg.io.read import read_volume

    vol = read_volume(seg_path, kind="label", progress=False)
    arr = np.asarray(vol.array)
    arr = arr[0] if arr.shape[0] == 1 else arr  # the channel axis
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    ndim = arr.ndim
    unit = float(np.prod(spacing_of(vol.affine, ndim))) / (1000.0 if ndim == 3 else 1.0)
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise InputError(f"{Path(seg_path).name} holds negative labels; it is not a medseg label map")
    if instances:
        ids = np.unique(arr)
        n = int(np.count_nonzero(ids))
        return {0: float(np.count_nonzero(arr)) * unit}, ndim, n
    counts = np.bincount(arr.ravel())
    return {int(v): float(c) * unit for v, c in enumerate(counts) if v != 0 and c > 0}, ndim, None


def _find_reference(reference: Path, case: str) -> Path | None:
    from medseg.evaluation.cases import case_name

    for entry in sorted(reference.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if case_name(entry) == case:
            return entry
    return None


def _names_from_provenance(rep: CaseReport, prov: Provenance) -> None:
    """``display`` (series description and number for DICOM, else the case folder = file name) and
    ``details`` (the UIDs and folder name); no patient name or ID is ever in a provenance file."""
    inp = prov.input
    desc = "".join(ch for ch in str(inp.get("series_description") or "") if ch.isprintable()).strip()[:64]
    number = inp.get("series_number")
    if inp.get("format") == "dicom":
        parts = [desc] if desc else []
        if isinstance(number, int):
            parts.append(f"(series {number})" if desc else f"series {number}")
        modality = str(inp.get("modality") or "").strip()
        rep.display = " ".join(parts) or (f"{modality} series" if modality and modality != "unknown" else "")
        uid = str(inp.get("series_instance_uid") or "")
        rep.details = f"SeriesInstanceUID {uid}; folder {rep.case}" if uid else f"folder {rep.case}"
    else:
        rep.details = f"folder {rep.case}" + (f"; {inp.get('format')} input" if inp.get("format") else "")


def _segment_case(case_dir: Path, reference: Path | None) -> CaseReport:
    rep = CaseReport(case=case_dir.name)
    prov_path = case_dir / "provenance.json"
    prov = Provenance.read(prov_path) if prov_path.is_file() else None
    if prov is not None:
        _names_from_provenance(rep, prov)
        rep.model = prov.model_name
        rep.task = prov.task
        rep.labels = prov.label_names
        tta = prov.tta_disagreement
        rep.tta_disagreement = float(tta) if isinstance(tta, int | float) else None
        rep.flags.extend(f"outside the model's domain: {f}" for f in prov.domain_flags)
    seg = case_dir / "seg.nii.gz"
    if not seg.is_file():
        rep.status = "no-output"
        rep.flags.append("no seg.nii.gz in the case folder")
        return rep
    rep.sizes, rep.ndim, rep.n_instances = label_sizes(seg, instances=rep.task == "instance")
    rep.pixel_units = rep.ndim == 2 and prov is not None and prov.input.get("spacing_source") == "default"
    if reference is not None:
        ref = _find_reference(reference, rep.case)
        if ref is None:
            rep.flags.append("no reference for this case")
        else:
            rep.reference_file = ref
            from medseg.evaluation import evaluate_files

            labels = None if rep.task == "instance" else (sorted(rep.labels) or None)
            try:
                rows, inst = evaluate_files(rep.case, seg, ref, labels=labels, instances=rep.task == "instance")
            except MedsegError as exc:  # one bad reference must not sink the whole report
                rep.flags.append(f"metrics not computed: {exc}")
            else:
                rep.metrics = [{k: v for k, v in r.items() if k != "case"} for r in rows]
                rep.instance_metrics = {k: v for k, v in inst.items() if k != "case"} if inst else None
    return rep


def find_evaluation(folder: str | os.PathLike[str]) -> Path | None:
    """The one sub-folder of ``folder`` holding ``medseg evaluate`` output (metrics.csv +
    summary.json), None when there is none; ConfigError when there are several."""
    d = Path(folder)
    found = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and (p / "metrics.csv").is_file() and (p / "summary.json").is_file())
    if len(found) > 1:
        raise ConfigError(f"{d.name} holds several evaluate outputs ({', '.join(p.name for p in found[:5])}); "
                          "choose one with --evaluation DIR")
    return found[0] if found else None


def _merge_evaluation(cases: Sequence[CaseReport], evaluation: Path) -> list[str]:
    """Copy the metrics of an evaluate folder into the cases of the same name; returns the
    evaluated case names that have no case here (listed on the page, never dropped silently)."""
    evaluated = {c.case: c for c in _evaluate_cases(evaluation)}
    for rep in cases:
        ev = evaluated.pop(rep.case, None)
        if ev is None or rep.status != "done":
            continue
        rep.metrics, rep.instance_metrics = ev.metrics, ev.instance_metrics
        if ev.instance_metrics:
            rep.task = "instance"
        for lab, name in ev.labels.items():
            rep.labels.setdefault(lab, name)
    return sorted(evaluated)


def _evaluate_cases(folder: Path) -> list[CaseReport]:
    for name in ("metrics.csv", "summary.json"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder.name} has no {name}; give the output folder of medseg evaluate")
    from medseg.evaluation.summary import EvaluationSummary

    names = dict(EvaluationSummary.read(folder / "summary.json").labels)
    by_case: dict[str, CaseReport] = {}
    with open(folder / "metrics.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            case = row.get("case", "")
            rep = by_case.setdefault(case, CaseReport(case=case, labels=dict(names), image_note=(
                "evaluate output holds no images; run the report on the segment/batch folder with "
                "--reference to see overlays")))
            rep.metrics.append({k: (int(v) if k == "label" else _num(v)) for k, v in row.items() if k != "case"})
    inst_path = folder / "instance_metrics.csv"
    if inst_path.is_file():
        with open(inst_path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("case") in by_case:
                    by_case[row["case"]].instance_metrics = {k: _num(v) for k, v in row.items() if k != "case"}
                    by_case[row["case"]].task = "instance"
    for rep in by_case.values():
        rep.sizes = {int(r["label"]): float(r["volume_pred_ml"]) for r in rep.metrics
                     if not math.isnan(float(r["volume_pred_ml"])) and float(r["volume_pred_ml"]) > 0}
    return list(by_case.values())


def _batch_failures(folder: Path, done: set[str]) -> list[CaseReport]:
    from medseg.batch.manifest import Manifest

    latest: dict[str, Any] = {}
    for rec in Manifest(folder / "manifest.jsonl").records():
        latest[rec.case] = rec
    out = []
    for case, rec in sorted(latest.items()):
        if rec.status == "failed" and case not in done:
            out.append(CaseReport(case=case, status="failed", reason=rec.reason))
    return out


def collect(folder: str | os.PathLike[str], *, reference: str | os.PathLike[str] | None = None,
            kind: str | None = None, min_dice: float = DEFAULT_MIN_DICE,
            evaluation: str | os.PathLike[str] | None = None,
            unmatched: list[str] | None = None) -> tuple[str, list[CaseReport]]:
    """Read an output folder into :class:`CaseReport` s (no images yet); returns ``(kind, cases)``.

    ``evaluation``: a ``medseg evaluate`` folder whose metrics are shown for the cases of the same
    name (segment/batch folders only); evaluated cases without a case folder are appended to
    ``unmatched`` when given. Cases and labels with Dice below ``min_dice`` are flagged.
    """
    d = Path(folder)
    kind = kind or detect_kind(d)
    if kind not in KINDS:
        raise ConfigError(f"unknown report kind {kind!r}; choose from {', '.join(KINDS)}")
    _check_min_dice(min_dice)
    if evaluation is not None and (reference is not None or kind == "evaluate"):
        raise ConfigError("--evaluation applies to segment/batch folders without --reference: give one source "
                          "of metrics")
    ref = None
    if reference is not None:
        ref = Path(reference)
        if not ref.is_dir():
            raise ConfigError(f"--reference {ref.name}: not a folder; give a folder of label maps named by case")
    if kind == "evaluate":
        if ref is not None:
            raise ConfigError("--reference applies to segment/batch folders; an evaluate folder already "
                              "holds its metrics: drop --reference")
        cases = _evaluate_cases(d)
    else:
        dirs = [d] if _is_case_dir(d) else _case_dirs(d)
        cases = [_segment_case(c, ref) for c in dirs]
        if kind == "batch":
            cases += _batch_failures(d, {c.case for c in cases})
        if evaluation is not None:
            ev = Path(evaluation)
            if not ev.is_dir():
                raise ConfigError(f"--evaluation {ev.name}: not a folder; give the output folder of medseg evaluate")
            missing = _merge_evaluation(cases, ev)
            if unmatched is not None:
                unmatched.extend(missing)
    for c in cases:
        _flag(c)
        _flag_low_dice(c, min_dice)
    return kind, cases
