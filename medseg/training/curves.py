"""Training log (``log.csv``) and curves (``curves.png``), both written atomically."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.io.atomic import atomic_path, atomic_write_text


def log_columns(labels: dict[int, str]) -> list[str]:
    """Columns of ``log.csv``: epoch, train_loss, val_loss, val_dice_<name> per class, val_dice_mean,
    lr, seconds (wall time of the epoch incl. validation)."""
    return (["epoch", "train_loss", "val_loss"] + [f"val_dice_{n}" for n in labels.values()]
            + ["val_dice_mean", "lr", "seconds"])


def write_log_csv(rows: Sequence[dict[str, Any]], labels: dict[int, str], path: str | Path) -> Path:
    """Write the per-epoch rows to ``path`` (empty cells where validation did not run)."""
    buf = io.StringIO()
    cols = log_columns(labels)
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def plot_curves(rows: Sequence[dict[str, Any]], labels: dict[int, str], path: str | Path) -> Path:
    """Plot loss (train, val) and validation Dice per class against epoch into a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [r["epoch"] for r in rows]
    ax1.plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    val = [(r["epoch"], r["val_loss"]) for r in rows if _num(r.get("val_loss"))]
    if val:
        ax1.plot(*zip(*val, strict=True), "s-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("Dice + CE loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for name in list(labels.values()) + ["mean"]:
        pts = [(r["epoch"], r[f"val_dice_{name}"]) for r in rows if _num(r.get(f"val_dice_{name}"))]
        if pts:
            ax2.plot(*zip(*pts, strict=True), "o-" if name != "mean" else "k--", label=name)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Dice")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)
