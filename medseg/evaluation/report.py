"""Writing evaluation results: metrics.csv, instance_metrics.csv, worst_cases.csv, summary.json,
box plots. Every file goes through :mod:`medseg.io.atomic` (temporary file + rename)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.metrics import INSTANCE_METRIC_NAMES, METRIC_NAMES

#: Metrics drawn as box plots.
PLOTTED = ("dice", "iou", "hd95", "assd", "nsd")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` with exactly ``columns`` (floats in full precision, ``nan``/``inf`` spelled out)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row[c]) for c in columns])
    atomic_write_text(path, buf.getvalue())
    return path


def json_safe(obj: Any) -> Any:
    """Replace NaN by None and +-inf by the strings "inf"/"-inf" so the JSON is strict."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write strict JSON (no NaN tokens), indented, atomically."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    return path


def failure_key(row: Mapping[str, Any]) -> tuple[float, float]:
    """Sort key, worst first: low Dice, then large HD95.

    A NaN Dice counts as 0 when exactly one mask is empty (a miss or a false alarm) and as 1 when
    both are; inf HD95 sorts before any finite one.
    """
    d = float(row["dice"])
    if math.isnan(d):
        one_empty = (row["volume_pred_ml"] == 0) != (row["volume_ref_ml"] == 0)
        d = 0.0 if one_empty else 1.0
    h = float(row["hd95"])
    h = 0.0 if math.isnan(h) else h
    return (d, -h)


WORST_COLUMNS = ("rank", "case", "label", "dice", "hd95", "nsd", "volume_pred_ml", "volume_ref_ml")


def worst_cases(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """All (case, label) rows ranked worst first (see :func:`failure_key`)."""
    ranked = sorted(rows, key=failure_key)
    return [{"rank": i + 1, **{c: r[c] for c in WORST_COLUMNS[1:]}} for i, r in enumerate(ranked)]


def box_plots(out_dir: Path, rows: Sequence[Mapping[str, Any]], label_names: Mapping[int, str],
              metrics: Sequence[str] = PLOTTED) -> list[Path]:
    """One PNG per metric with one box per label (finite values only; n under each box)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    labels = sorted(label_names)
    for metric in metrics:
        data, ticks = [], []
        for lab in labels:
            vals = [float(r[metric]) for r in rows if r["label"] == lab and math.isfinite(float(r[metric]))]
            data.append(vals)
            ticks.append(f"{label_names[lab]}\nn={len(vals)}")
        fig = Figure(figsize=(max(4.0, 1.2 * len(labels) + 2), 4.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        if any(data):
            ax.boxplot([d if d else [math.nan] for d in data], showmeans=True)
            ax.set_xticks(range(1, len(labels) + 1))
            ax.set_xticklabels(ticks)
        unit = " (mm)" if metric in ("hd95", "assd") else ""
        ax.set_ylabel(metric + unit)
        ax.set_title(f"{metric} per label")
        fig.tight_layout()
        final = out_dir / f"boxplot_{metric}.png"
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        written.append(final)
    return written


__all__ = ["METRIC_NAMES", "INSTANCE_METRIC_NAMES", "box_plots", "worst_cases", "write_csv", "write_json"]
