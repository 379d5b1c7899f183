"""The report's record of one case (:class:`CaseReport`) and of a low Dice (:class:`LowDice`):
what the page shows, never a patient identifier."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
