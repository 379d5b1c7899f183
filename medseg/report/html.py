"""The report page: HTML written with escaped values only (:func:`_e`); the style sheet and the
few lines of table-sorting JS are package data (``report/static/report.{css,js}``), inlined
so that the page works offline."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cache
from importlib.resources import files
from typing import Any

from medseg.report.cases import CaseReport, _num
from medseg.report.plausible import NOTE as PLAUSIBLE_NOTE
from medseg.report.qa import DEFAULT_MIN_DICE, TTA_DISAGREEMENT_THRESHOLD


@cache
def _static(name: str) -> str:
    """``report/static/<name>`` (the page's CSS and JS)."""
    return files("medseg.report").joinpath("static", name).read_text(encoding="utf-8")


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
            f"<title>{_e(title)}</title><style>{_static('report.css')}</style><script>{_static('report.js')}</script></head>\n"
            f"<body data-kind=\"{_e(kind)}\" data-cases=\"{len(cases)}\">\n" + "\n".join(body) + "\n</body></html>\n")
