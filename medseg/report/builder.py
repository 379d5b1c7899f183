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

The parts, by what they do: :mod:`medseg.report.folders` reads an output folder into
:class:`~medseg.report.cases.CaseReport` s (provenance through ``Provenance.read``, label maps
through medseg's reader), :mod:`medseg.report.qa` holds the flagging rules and the order,
:mod:`medseg.report.images` the pictures, :mod:`medseg.report.html` the page (its CSS and JS
are package data in ``report/static/``); this module writes the page.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import ConfigError
from medseg.report.cases import CaseReport, LowDice, effective_dice
from medseg.report.folders import KINDS, _is_case_dir, collect, detect_kind, find_evaluation, label_sizes
from medseg.report.html import render_html
from medseg.report.images import _attach_image
from medseg.report.qa import DEFAULT_MIN_DICE, TTA_DISAGREEMENT_THRESHOLD, _sort_key
from medseg.settings import progress_enabled

__all__ = ["DEFAULT_MIN_DICE", "KINDS", "TTA_DISAGREEMENT_THRESHOLD", "CaseReport", "LowDice", "ReportResult",
           "build_report", "collect", "detect_kind", "effective_dice", "find_evaluation", "label_sizes",
           "render_html", "write_report"]


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
