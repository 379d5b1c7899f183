"""The QA rules of the report: which cases are flagged (failed, empty, implausible adult volume,
TTA disagreement, low Dice) and the order cases are shown in (worst first)."""

from __future__ import annotations

from medseg.errors import ConfigError
from medseg.report.cases import CaseReport, LowDice, effective_dice
from medseg.report.plausible import plausible_range

#: Flag a case when its TTA passes disagree on more than this fraction of voxels.
TTA_DISAGREEMENT_THRESHOLD = 0.05

#: Flag a case and label whose Dice is below this (``medseg report --min-dice``).
DEFAULT_MIN_DICE = 0.7


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


def _check_min_dice(min_dice: float) -> None:
    if not (isinstance(min_dice, int | float) and 0.0 <= float(min_dice) <= 1.0):
        raise ConfigError(f"--min-dice must be a number from 0 to 1, not {min_dice!r}")


def _sort_key(rep: CaseReport) -> tuple[int, float, str]:
    """Failed cases first, then the worst Dice, then the most flags, then by name."""
    if rep.status != "done":
        return (0, 0.0, rep.case)
    wd = rep.worst_dice()
    return (1, wd if wd is not None else 2.0 - 0.01 * len(rep.flags), rep.case)
