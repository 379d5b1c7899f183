"""``build_report``: one static HTML page for a segment, batch or evaluate output folder.

The page works offline: no CDN, no web fonts, a few lines of inline vanilla JS (table sorting
and an image-load counter); the overlay pictures are PNG files copied into ``<stem>_files/``
next to the HTML and referenced by relative paths. Everything on the page comes from case
names (file stems or ``series-<UID>``), model names, label names and numbers: no patient name,
ID or birth date is ever read. Every file is written atomically.

Folder kinds (:func:`detect_kind`):

* ``segment``: ``DIR/<case>/{seg.nii.gz, overlay.png, provenance.json}`` (``medseg segment``),
  or a single case folder itself;
* ``batch``: the same plus ``DIR/manifest.jsonl`` (failed cases are listed with their reason);
* ``evaluate``: ``DIR/metrics.csv`` + ``summary.json`` (``medseg evaluate``).

Low Dice: wherever per-label Dice is known (an evaluate folder, ``--reference``, or an evaluate
folder given with ``evaluation=`` / found as the one sub-folder of a segment/batch folder holding
``metrics.csv`` + ``summary.json``), every case and label under ``min_dice`` (default 0.7) is
flagged, listed in a warning section at the top of the page and its rows highlighted.
"""

from __future__ import annotations

import csv
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError, MedsegError
from medseg.io.jsonfile import read_json_object
from medseg.report.plausible import NOTE as PLAUSIBLE_NOTE
from medseg.report.plausible import plausible_range
from medseg.settings import progress_enabled

#: Flag a case when its TTA passes disagree on more than this fraction of voxels.
TTA_DISAGREEMENT_THRESHOLD = 0.05

#: Flag a case and label whose Dice is below this (``medseg report --min-dice``).
DEFAULT_MIN_DICE = 0.7

KINDS = ("segment", "batch", "evaluate")


def effective_dice(row: Mapping[str, Any]) -> float | None:
    """Dice of one metrics row for QA: NaN with exactly one mask empty counts as 0; None when both
    masks are empty (nothing to judge)."""
    d = _num(row.get("dice", math.nan))
    if not math.isnan(d):
        return d
    one_empty = (_num(row.get("volume_pred_ml", 0)) == 0) != (_num(row.get("volume_ref_ml", 0)) == 0)
    return 0.0 if one_empty else None


@dataclass(frozen=True)
class LowDice:
    """One case and label under the Dice threshold (``dice`` as :func:`effective_dice`)."""

    case: str
    label: int
    name: str
    dice: float


@dataclass
class CaseReport:
    """Everything the report shows for one case (no patient identifiers)."""

    case: str
    status: str = "done"  # done | failed | no-output
    reason: str = ""
    model: str = ""
    task: str = "semantic"
    labels: dict[int, str] = field(default_factory=dict)
    ndim: int = 3
    #: label -> mL (3D) or mm^2 (2D); for instance tasks a single entry 0 = all instances
    sizes: dict[int, float] = field(default_factory=dict)
    n_instances: int | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    instance_metrics: dict[str, Any] | None = None
    tta_disagreement: float | None = None
    flags: list[str] = field(default_factory=list)
    image: str | None = None  # path relative to the HTML file
    image_note: str = ""
    low_dice: list[LowDice] = field(default_factory=list)
    #: what a person reads: series description and number (DICOM) or the file name; UIDs go to
    #: ``details`` only
    display: str = ""
    details: str = ""
    #: sizes counted in pixels: a 2D picture without a known pixel size (1.0 was a default)
    pixel_units: bool = False
    reference_file: Path | None = None
    compare_image: str | None = None  # prediction vs reference montage, relative to the HTML file
    compare_note: str = ""

    @property
    def title(self) -> str:
        """The readable case name (the folder name when nothing better is known)."""
        return self.display or self.case

    def worst_dice(self) -> float | None:
        """The lowest Dice over labels (NaN when one side is empty counts as 0), None without metrics."""
        vals = [effective_dice(row) for row in self.metrics]
        return min(1.0 if d is None else d for d in vals) if vals else None

    def label_name(self, label: int) -> str:
        """The label's name (its number when unknown; "foreground" for instance tasks)."""
        return self.labels.get(int(label), "foreground" if self.task == "instance" else str(label))

    def worst_hd95(self) -> float | None:
        vals = [float(r["hd95"]) for r in self.metrics if "hd95" in r and not math.isnan(float(r["hd95"]))]
        return max(vals) if vals else None


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


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, error=InputError, hint="re-run the command that wrote it")


def label_sizes(seg_path: str | os.PathLike[str], *, instances: bool = False) -> tuple[dict[int, float], int, int | None]:
    """Per-label size of a label map file: mL for 3D (voxel volume from the affine, mm^3 / 1000),
    mm^2 for 2D. Returns ``(sizes, ndim, n_instances)``; with ``instances`` the sizes hold one entry
    ``0`` (all instances together) and ``n_instances`` counts the distinct non-zero ids."""
    import nibabel as nib

    try:
        img = nib.load(str(seg_path))
        arr = np.asarray(img.dataobj)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{Path(seg_path).parent.name}/{Path(seg_path).name} cannot be read as NIfTI "
                         f"({type(exc).__name__}); re-run the segmentation") from None
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    ndim = arr.ndim
    cols = np.asarray(img.affine, dtype=np.float64)[:3, :ndim]
    lengths = np.linalg.norm(cols, axis=0)
    unit = float(np.prod(lengths)) / (1000.0 if ndim == 3 else 1.0)
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


def _names_from_provenance(rep: CaseReport, prov: Mapping[str, Any]) -> None:
    """``display`` (series description and number for DICOM, else the case folder = file name) and
    ``details`` (the UIDs and folder name); no patient name or ID is ever in a provenance file."""
    inp = prov.get("input") or {}
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
    prov: dict[str, Any] = {}
    if prov_path.is_file():
        prov = _read_json(prov_path)
        _names_from_provenance(rep, prov)
        model = prov.get("model", {}) or {}
        rep.model = str(model.get("name", ""))
        rep.task = str(model.get("task", "semantic"))
        rep.labels = {int(k): str(v) for k, v in (model.get("labels") or {}).items()}
        tta = prov.get("tta_disagreement")
        rep.tta_disagreement = float(tta) if isinstance(tta, int | float) else None
        rep.flags.extend(f"outside the model's domain: {f}" for f in prov.get("domain_flags") or [])
    seg = case_dir / "seg.nii.gz"
    if not seg.is_file():
        rep.status = "no-output"
        rep.flags.append("no seg.nii.gz in the case folder")
        return rep
    rep.sizes, rep.ndim, rep.n_instances = label_sizes(seg, instances=rep.task == "instance")
    rep.pixel_units = rep.ndim == 2 and (prov.get("input") or {}).get("spacing_source") == "default"
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


def _flag(rep: CaseReport) -> None:
    """Add the QA flags: failed, empty, implausible adult volume, TTA disagreement."""
    if rep.status == "failed":
        rep.flags.insert(0, f"failed: {rep.reason}")
        return
    if rep.status != "done":
        return
    empty = not rep.sizes or all(v == 0 for v in rep.sizes.values())
    if empty:
        rep.flags.append("empty segmentation")
    if rep.ndim == 3 and rep.task != "instance" and not empty:
        for lab, name in sorted(rep.labels.items()):
            rng = plausible_range(name)
            if rng is None:
                continue
            ml = rep.sizes.get(lab, 0.0)
            if not rng[0] <= ml <= rng[1]:
                rep.flags.append(f"implausible volume: {name} {ml:.0f} mL (adult range {rng[0]:.0f}-{rng[1]:.0f} mL)")
    if rep.tta_disagreement is not None and rep.tta_disagreement > TTA_DISAGREEMENT_THRESHOLD:
        rep.flags.append(f"TTA passes disagree on {100 * rep.tta_disagreement:.1f}% of voxels "
                         f"(threshold {100 * TTA_DISAGREEMENT_THRESHOLD:.0f}%)")


def _flag_low_dice(rep: CaseReport, min_dice: float) -> None:
    """Flag every label of ``rep`` whose Dice is below ``min_dice``."""
    for row in rep.metrics:
        d = effective_dice(row)
        if d is None or d >= min_dice:
            continue
        low = LowDice(rep.case, int(row["label"]), rep.label_name(int(row["label"])), d)
        rep.low_dice.append(low)
        rep.flags.append(f"low Dice: {low.name} {d:.3f} (below {min_dice:.2f})")


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


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
    summary = _read_json(folder / "summary.json")
    names = {int(k): str(v) for k, v in (summary.get("labels") or {}).items()}
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


def _safe_name(case: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case)[:120].strip("._") or "case"


def _render_overlay(seg: Path, out_png: Path, label_names: Mapping[int, str]) -> None:
    """Montage of the label map alone (the source image is not kept in a segment output)."""
    import numpy as np

    from medseg.io.overlay import save_overlay_montage
    from medseg.io.read import read_volume  # numpy: a report needs neither torch nor MONAI
    from medseg.io.volume import Volume

    lab = read_volume(seg, kind="label")
    image = Volume(lab.array.astype(np.float32), lab.affine, lab.meta)
    save_overlay_montage(image, lab, out_png, label_names=dict(label_names) or None)


def _attach_image(rep: CaseReport, case_dir: Path | None, files_dir: Path, html_dir: Path, idx: int) -> None:
    from medseg.io.atomic import atomic_write_bytes

    if case_dir is None or rep.status != "done":
        return
    target = files_dir / f"{idx:04d}_{_safe_name(rep.case)}.png"
    src = case_dir / "overlay.png"
    if src.is_file():
        atomic_write_bytes(target, src.read_bytes())
    elif (case_dir / "seg.nii.gz").is_file():
        try:
            _render_overlay(case_dir / "seg.nii.gz", target, rep.labels)
        except MedsegError as exc:
            rep.image_note = f"no overlay: {exc}"
            return
        rep.image_note = "label map only (the source image is not part of the output folder)"
    else:
        return
    rep.image = target.relative_to(html_dir).as_posix()
    if rep.reference_file is not None and rep.ndim == 3 and (case_dir / "seg.nii.gz").is_file():
        compare = files_dir / f"{idx:04d}_{_safe_name(rep.case)}_reference.png"
        try:
            _render_comparison(case_dir / "seg.nii.gz", rep.reference_file, compare, rep.labels)
        except MedsegError as exc:
            rep.compare_note = f"reference not drawn: {exc}"
        else:
            rep.compare_image = compare.relative_to(html_dir).as_posix()
            rep.compare_note = ("prediction filled, reference outlined in white, on slices through either "
                                "(the source image is not part of the output folder)")


def _render_comparison(seg: Path, reference: Path, out_png: Path, label_names: Mapping[int, str]) -> None:
    """The prediction and its reference in one montage (:mod:`medseg.report.compare`); the
    reference is put on the prediction's grid exactly (same grid or another axis order) or not
    drawn (GeometryError: no resampling in a QA picture)."""
    from medseg.evaluation.cases import read_label_map
    from medseg.io.read import read_volume
    from medseg.metrics._arrays import align_to_reference, as_label_array
    from medseg.report.compare import save_comparison_montage

    pred = read_volume(seg, kind="label")
    ref = read_label_map(reference)
    p, r = as_label_array(pred, "prediction"), as_label_array(ref, "reference")
    if p.ndim != 3:
        raise InputError("the comparison montage is drawn for 3D label maps only")
    on_pred, _ = align_to_reference(ref, pred, r, p)  # the reference onto the prediction's grid
    save_comparison_montage(p, on_pred, np.asarray(pred.affine, dtype=np.float64), out_png,
                            label_names=dict(label_names))


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


def _check_min_dice(min_dice: float) -> None:
    if not (isinstance(min_dice, int | float) and 0.0 <= float(min_dice) <= 1.0):
        raise ConfigError(f"--min-dice must be a number from 0 to 1, not {min_dice!r}")


def _sort_key(rep: CaseReport) -> tuple[int, float, str]:
    """Failed cases first, then the worst Dice, then the most flags, then by name."""
    if rep.status != "done":
        return (0, 0.0, rep.case)
    wd = rep.worst_dice()
    return (1, wd if wd is not None else 2.0 - 0.01 * len(rep.flags), rep.case)


# ------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:0.5em 0} th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th.sortable{cursor:pointer;background:#eef} th.sortable:hover{background:#dde}
td.num{text-align:right;font-variant-numeric:tabular-nums} .flag{color:#a00} .ok{color:#070}
.note{color:#555;font-size:0.9em} img.montage{max-width:100%;border:1px solid #999}
tr.failed td{background:#fee} td.case{word-break:break-all;max-width:24em}
tr.lowdice td{background:#fff1c2} section.warning{border:2px solid #c60;background:#fff8e6;padding:0.3em 1em}
section.warning h2{margin-top:0.5em;border:none;color:#a40}
"""

_JS = """
function cellKey(row, col) {
  var c = row.cells[col]; var v = c.getAttribute('data-v');
  if (v !== null) { if (v === '') return null; var n = parseFloat(v); if (!isNaN(n)) return n; }
  return c.textContent.trim().toLowerCase();
}
function sortTable(id, col, dir) {
  var t = document.getElementById(id); var body = t.tBodies[0];
  var th = t.tHead.rows[0].cells[col];
  if (!dir) { dir = th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc'; }
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = cellKey(a, col), y = cellKey(b, col);
    if (x === null && y === null) return 0; if (x === null) return 1; if (y === null) return -1;
    if (typeof x !== typeof y) { x = String(x); y = String(y); }
    var r = x < y ? -1 : (x > y ? 1 : 0); return dir === 'asc' ? r : -r;
  });
  rows.forEach(function (r) { body.appendChild(r); });
  var heads = t.tHead.rows[0].cells;
  for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute('data-dir'); }
  th.setAttribute('data-dir', dir); t.setAttribute('data-sorted-by', col + ':' + dir);
}
window.addEventListener('load', function () {
  var imgs = document.images; var ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
  var m = /sort=(\\d+):(asc|desc)/.exec(window.location.hash);
  if (m) { sortTable('cases', parseInt(m[1], 10), m[2]); }
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, digits: int = 3) -> str:
    f = _num(v)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "inf"
    return f"{f:.{digits}f}"


def _dv(v: Any) -> str:
    f = _num(v)
    return "" if math.isnan(f) else ("1e308" if math.isinf(f) and f > 0 else repr(f))


def _size_text(rep: CaseReport) -> str:
    unit = "mL" if rep.ndim == 3 else ("pixels" if rep.pixel_units else "mm²")
    if rep.task == "instance" and rep.n_instances is not None:
        return f"{rep.n_instances} instances, {rep.sizes.get(0, 0.0):.{0 if rep.pixel_units else 1}f} {unit} in all"
    if not rep.sizes:
        return "none"
    digits = 0 if rep.pixel_units else 1  # pixels are counted
    return "; ".join(f"{rep.labels.get(k, str(k))}: {v:.{digits}f} {unit}" for k, v in sorted(rep.sizes.items()))


def _overview(cases: Sequence[CaseReport], has_metrics: bool) -> str:
    heads = ["#", "Case", "Status", "Model", "Sizes", "Flags"]
    has_details = any(c.details for c in cases)
    has_inst = any(c.instance_metrics for c in cases)
    if has_details:
        heads.append("Details")
    if has_metrics:
        heads += ["Worst Dice", "Worst HD95 (mm)"] + (["Instance F1"] if has_inst else [])
    th = "".join(f'<th class="sortable" onclick="sortTable(\'cases\', {i})">{_e(h)}</th>' for i, h in enumerate(heads))
    rows = []
    for i, c in enumerate(cases, 1):
        flags = "<br>".join(f'<span class="flag">{_e(f)}</span>' for f in c.flags) or '<span class="ok">none</span>'
        total = sum(c.sizes.values()) if c.sizes else 0.0
        cells = [f'<td class="num" data-v="{i}">{i}</td>',
                 f'<td class="case"><a href="#case-{i}">{_e(c.title)}</a></td>',
                 f"<td>{_e(c.status)}</td>", f"<td>{_e(c.model)}</td>",
                 f'<td data-v="{total!r}">{_e(_size_text(c))}</td>',
                 f'<td data-v="{len(c.flags)}">{flags}</td>']
        if has_details:
            cells.append(f'<td class="details">{_e(c.details)}</td>')
        if has_metrics:
            wd, wh = c.worst_dice(), c.worst_hd95()
            f1 = c.instance_metrics.get("f1") if c.instance_metrics else None
            cells += [f'<td class="num" data-v="{_dv(wd)}">{_fmt(wd)}</td>',
                      f'<td class="num" data-v="{_dv(wh)}">{_fmt(wh, 1)}</td>']
            if has_inst:
                cells.append(f'<td class="num" data-v="{_dv(f1)}">{_fmt(f1)}</td>')
        cls = ' class="failed"' if c.status != "done" else (' class="lowdice"' if c.low_dice else "")
        rows.append(f'<tr{cls} data-case="{_e(c.case)}">{"".join(cells)}</tr>')
    return (f'<table id="cases"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


_METRIC_COLS = (("dice", "Dice", 3), ("iou", "IoU", 3), ("hd95", "HD95 mm", 1), ("assd", "ASSD mm", 2),
                ("nsd", "NSD", 3), ("volume_pred_ml", "pred mL", 2), ("volume_ref_ml", "ref mL", 2))
_INSTANCE_COLS = (("n_pred", "pred", 0), ("n_ref", "ref", 0), ("tp", "TP", 0), ("fp", "FP", 0), ("fn", "FN", 0),
                  ("precision", "precision", 3), ("recall", "recall", 3), ("f1", "F1@0.5", 3),
                  ("mean_ap", "mean AP", 3), ("pq", "PQ", 3))


def _case_section(i: int, c: CaseReport) -> str:
    parts = [f'<h2 id="case-{i}">{i}. {_e(c.title)}</h2>']
    if c.details:
        parts.append(f'<p class="note details">details: {_e(c.details)}</p>')
    meta = [f"status: {c.status}"]
    if c.model:
        meta.append(f"model: {c.model} ({c.task})")
    if c.tta_disagreement is not None:
        meta.append(f"TTA disagreement: {100 * c.tta_disagreement:.2f}%")
    parts.append(f"<p>{_e(' | '.join(meta))}</p>")
    if c.reason:
        parts.append(f'<p class="flag">reason: {_e(c.reason)}</p>')
    parts.append(f"<p>sizes: {_e(_size_text(c))}</p>")
    if c.flags:
        parts.append("<ul>" + "".join(f'<li class="flag">{_e(f)}</li>' for f in c.flags) + "</ul>")
    if c.metrics:
        names = [m[1] for m in _METRIC_COLS]
        if c.ndim == 2:  # medseg.metrics: 2D "volume" = area x a notional 1 mm, mm^2 / 1000
            names = [n.replace("mL", "pixels/1000" if c.pixel_units else "mm²/1000") for n in names]
        head = "".join(f"<th>{_e(h)}</th>" for h in ("label", *names))
        low = {ld.label for ld in c.low_dice}
        body = "".join(
            ('<tr class="lowdice"><td>' if int(r["label"]) in low else "<tr><td>") + _e(c.label_name(int(r["label"])))
            + "</td>" + "".join(f'<td class="num">{_fmt(r.get(k), d)}</td>' for k, _, d in _METRIC_COLS) + "</tr>"
            for r in c.metrics)
        parts.append(f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    if c.instance_metrics:
        head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in _INSTANCE_COLS)
        body = "".join(f'<td class="num">{_fmt(c.instance_metrics.get(k), d)}</td>' for k, _, d in _INSTANCE_COLS)
        parts.append(f'<p>instances (matched at IoU &gt; 0.5):</p><table class="instances"><thead><tr>{head}</tr>'
                     f"</thead><tbody><tr>{body}</tr></tbody></table>")
    if c.image:
        parts.append(f'<p><img class="montage" src="{_e(c.image)}" alt="overlay of {_e(c.title)}"></p>')
    if c.image_note:
        parts.append(f'<p class="note">{_e(c.image_note)}</p>')
    if c.compare_image:
        parts.append(f'<p><img class="montage compare" src="{_e(c.compare_image)}" '
                     f'alt="prediction and reference of {_e(c.title)}"></p>')
    if c.compare_note:
        parts.append(f'<p class="note">{_e(c.compare_note)}</p>')
    return "\n".join(parts)


def _low_dice_section(cases: Sequence[CaseReport], min_dice: float) -> str:
    """The warning box at the top: every case and label under ``min_dice``, lowest first."""
    index = {c.case: i for i, c in enumerate(cases, 1)}
    titles = {c.case: c.title for c in cases}
    lows = sorted((ld for c in cases for ld in c.low_dice), key=lambda ld: (ld.dice, ld.case, ld.label))
    if not lows:
        return (f'<p class="ok" id="low-dice">Dice check: no case/label below {min_dice:.2f}.</p>')
    n_cases = len({ld.case for ld in lows})
    rows = "".join(f'<tr class="lowdice" data-case="{_e(ld.case)}" data-label="{ld.label}">'
                   f'<td class="case"><a href="#case-{index[ld.case]}">{_e(titles[ld.case])}</a></td>'
                   f"<td>{_e(ld.name)} ({ld.label})</td><td class=\"num\">{ld.dice:.3f}</td></tr>" for ld in lows)
    return (f'<section class="warning" id="low-dice"><h2>Warning: {len(lows)} case/label pair(s) in {n_cases} '
            f"case(s) have Dice below {min_dice:.2f}</h2>"
            '<table id="low-dice-table"><thead><tr><th>Case</th><th>Label</th><th>Dice</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            '<p class="note">An empty prediction against a non-empty reference counts as Dice 0.</p></section>')


def render_html(kind: str, source_name: str, cases: Sequence[CaseReport], *, title: str = "medseg QA report",
                extra_notes: Sequence[str] = (), min_dice: float = DEFAULT_MIN_DICE) -> str:
    """The HTML page (a string) for already collected and ordered ``cases``; the low-Dice warning
    (cases' :attr:`CaseReport.low_dice`, threshold ``min_dice``) is shown when any Dice is known."""
    import medseg

    has_metrics = any(c.metrics or c.instance_metrics for c in cases)
    has_dice = any(c.metrics for c in cases)
    n_failed = sum(c.status != "done" for c in cases)
    n_flagged = sum(bool(c.flags) for c in cases)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017
    order = ("worst cases first (lowest Dice over labels; failed cases on top)" if has_metrics
             else "failed and flagged cases first")
    notes = [f"Source: {kind} output folder {source_name!r}. {len(cases)} case(s), {n_failed} failed, "
             f"{n_flagged} flagged. Order: {order}; click a column header to sort.",
             "Sizes are per label: mL for 3D label maps (voxel volume from the affine), mm² for 2D images "
             "with a known pixel size, pixels for pictures without one. Cases are named by series "
             "description and number (DICOM) or file name; UIDs are in the details column.",
             PLAUSIBLE_NOTE,
             f"TTA flag: test-time-augmentation passes disagreeing on more than "
             f"{100 * TTA_DISAGREEMENT_THRESHOLD:.0f}% of voxels.",
             *extra_notes]
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="note">medseg {_e(medseg.__version__)}, written {_e(when)}</p>',
            *((_low_dice_section(cases, min_dice),) if has_dice else ()),
            *(f'<p class="note">{_e(n)}</p>' for n in notes),
            _overview(cases, has_metrics),
            *(_case_section(i, c) for i, c in enumerate(cases, 1))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style><script>{_JS}</script></head>\n"
            f"<body data-kind=\"{_e(kind)}\" data-cases=\"{len(cases)}\">\n" + "\n".join(body) + "\n</body></html>\n")


@dataclass
class ReportResult:
    """What :func:`write_report` wrote and found."""

    html: Path
    kind: str
    n_cases: int
    min_dice: float
    dice_checked: bool  # some per-label Dice was known (evaluate folder, --reference or --evaluation)
    low_dice: list[LowDice] = field(default_factory=list)
    evaluation: Path | None = None  # the evaluate folder merged in (given or found)

    def summary_line(self) -> str:
        """One line for the terminal: how many case/label pairs were flagged for low Dice."""
        if not self.dice_checked:
            return "low Dice: not checked (no evaluation results: give --reference or --evaluation DIR)"
        n_cases = len({ld.case for ld in self.low_dice})
        return (f"low Dice: {len(self.low_dice)} case/label pair(s) in {n_cases} case(s) below "
                f"{self.min_dice:.2f} flagged (of {self.n_cases} case(s))")


def write_report(folder: str | os.PathLike[str], out_html: str | os.PathLike[str] | None = None, *,
                 reference: str | os.PathLike[str] | None = None, evaluation: str | os.PathLike[str] | None = None,
                 min_dice: float = DEFAULT_MIN_DICE, title: str = "medseg QA report",
                 notes: Sequence[str] = (), progress: bool = True) -> ReportResult:
    """Write a static HTML QA report for a segment, batch or evaluate output ``folder``.

    Args:
        folder: output of ``medseg segment`` / ``batch`` / ``evaluate`` (detected, see module doc).
        out_html: the page to write (default ``folder/report.html``); overlay PNGs go into
            ``<stem>_files/`` beside it.
        reference: folder of reference label maps named by case (``<case>.nii.gz``, ``.nrrd``,
            ``.mha`` or a DICOM SEG ``.dcm``); metrics are computed with :mod:`medseg.evaluation`
            on the segmentation grid (no resampling: a grid mismatch is reported as a flag).
        evaluation: a ``medseg evaluate`` output folder whose metrics belong to the cases of
            ``folder`` (matched by case name). Without it and without ``reference``, the one
            sub-folder of ``folder`` holding ``metrics.csv`` + ``summary.json`` is used if there is one.
        min_dice: flag every case and label with Dice below this (0..1; an empty prediction
            against a non-empty reference counts as 0).
        notes: extra lines shown under the title (no patient identifiers).

    Per case: overlay montage, size per label (mL in 3D, mm² in 2D), metrics when known, and
    flags (failed with reason, empty, implausible adult volume, TTA disagreement, low Dice).
    Raises ConfigError for a folder that is no medseg output or a bad option.
    """
    from tqdm.auto import tqdm

    from medseg.io.atomic import atomic_write_text, check_writable_file

    src = Path(folder)
    check_writable_file(Path(out_html) if out_html is not None else src / "report.html", "-o")
    kind = detect_kind(src)
    extra_notes = list(notes)
    if evaluation is None and reference is None and kind != "evaluate" and not _is_case_dir(src):
        evaluation = find_evaluation(src)
        if evaluation is not None:
            extra_notes.append(f"Metrics from the evaluate output found in {evaluation.name}/.")
    elif evaluation is not None:
        extra_notes.append(f"Metrics from the evaluate output {Path(evaluation).name}.")
    unmatched: list[str] = []
    kind, cases = collect(src, reference=reference, kind=kind, min_dice=min_dice, evaluation=evaluation,
                          unmatched=unmatched)
    if unmatched:
        more = f" (+{len(unmatched) - 10} more)" if len(unmatched) > 10 else ""
        extra_notes.append(f"Evaluated cases without a case folder here: {', '.join(unmatched[:10])}{more}.")
    out = Path(out_html) if out_html is not None else src / "report.html"
    if out.exists() and out.is_dir():
        raise ConfigError(f"-o {out.name} is a folder; give the path of the .html file to write")
    cases.sort(key=_sort_key)
    files_dir = out.parent / f"{out.stem}_files"
    case_root = src if not _is_case_dir(src) else src.parent
    show = progress_enabled(progress)
    if kind != "evaluate":
        for i, c in enumerate(tqdm(cases, desc="report", unit="case", disable=not show), 1):
            _attach_image(c, case_root / c.case, files_dir, out.parent, i)
    atomic_write_text(out, render_html(kind, src.name, cases, title=title, extra_notes=extra_notes,
                                       min_dice=min_dice))
    return ReportResult(html=out, kind=kind, n_cases=len(cases), min_dice=float(min_dice),
                        dice_checked=any(c.metrics for c in cases),
                        low_dice=[ld for c in cases for ld in c.low_dice],
                        evaluation=Path(evaluation) if evaluation is not None else None)


def build_report(folder: str | os.PathLike[str], out_html: str | os.PathLike[str] | None = None, *,
                 reference: str | os.PathLike[str] | None = None, title: str = "medseg QA report",
                 notes: Sequence[str] = (), progress: bool = True, min_dice: float = DEFAULT_MIN_DICE,
                 evaluation: str | os.PathLike[str] | None = None) -> Path:
    """:func:`write_report`, returning only the HTML path."""
    return write_report(folder, out_html, reference=reference, evaluation=evaluation, min_dice=min_dice,
                        title=title, notes=notes, progress=progress).html
