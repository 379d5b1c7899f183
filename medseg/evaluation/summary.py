"""``summary.json`` of ``medseg evaluate``: :class:`EvaluationSummary` is the file's schema (its one
writer and reader; version :data:`SUMMARY_VERSION`, see :mod:`medseg.schema`). :func:`evaluate`
builds one and writes it; the HTML report reads the label names back through :meth:`read`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import InputError
from medseg.schema import check_version, read_record

#: files without ``schema_version`` are version 1 (see :mod:`medseg.schema`)
SUMMARY_VERSION = 1

_REQUIRED = ("n_cases", "cases", "failed", "labels", "per_label", "worst_cases")


def _str_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"'{key}' must be a list of strings")
    return list(value)


def _str_map(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise InputError(f"'{key}' must map names to strings")
    return {str(k): v for k, v in value.items()}


@dataclass(frozen=True)
class EvaluationSummary:
    """The content of ``summary.json``.

    ``cases``: the scored cases; ``failed``: case -> reason; ``labels``: label value -> name;
    ``per_label``: label value (a string) -> ``{"name", "n_cases", "metrics": {metric: statistics}}``;
    ``worst_cases``: the worst rows, worst first; ``reoriented`` / ``resampled``: case -> what was
    done to its grid; ``instances`` (instance evaluation) or ``miou`` (semantic): their statistics.
    The constructor checks the types of what readers use and raises InputError otherwise."""

    n_cases: int
    cases: list[str]
    failed: dict[str, str]
    labels: dict[int, str]
    per_label: dict[str, Any]
    worst_cases: list[dict[str, Any]]
    unmatched: dict[str, list[str]] = field(default_factory=lambda: {"pred_only": [], "ref_only": []})
    ignored_files: list[str] = field(default_factory=list)
    reoriented: dict[str, str] = field(default_factory=dict)
    resampled: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    tolerance_mm: float = 0.0
    empty_policy: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, Any] | None = None
    miou: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n_cases, int) or isinstance(self.n_cases, bool) or self.n_cases < 0:
            raise InputError("'n_cases' must be a count")
        _str_list(self.cases, "cases")
        _str_list(self.ignored_files, "ignored_files")
        _str_list(self.warnings, "warnings")
        for key in ("failed", "reoriented", "resampled"):
            _str_map(getattr(self, key), key)
        if not isinstance(self.unmatched, Mapping) or set(self.unmatched) != {"pred_only", "ref_only"}:
            raise InputError("'unmatched' must hold 'pred_only' and 'ref_only'")
        for side in ("pred_only", "ref_only"):
            _str_list(self.unmatched[side], f"unmatched.{side}")
        if not isinstance(self.labels, Mapping) or not all(
                isinstance(k, int) and isinstance(v, str) for k, v in self.labels.items()):
            raise InputError("'labels' must map label values to names")
        if not isinstance(self.per_label, Mapping) or not all(
                isinstance(v, Mapping) and isinstance(v.get("metrics"), Mapping) for v in self.per_label.values()):
            raise InputError("'per_label' must map label values to objects with 'metrics'")
        if not isinstance(self.worst_cases, list) or not all(isinstance(r, Mapping) for r in self.worst_cases):
            raise InputError("'worst_cases' must be a list of rows")
        if not isinstance(self.tolerance_mm, int | float) or isinstance(self.tolerance_mm, bool):
            raise InputError("'tolerance_mm' must be a number")

    def to_json(self) -> dict[str, Any]:
        """The JSON object (label values as strings; ``instances`` / ``miou`` only when set)."""
        out: dict[str, Any] = {
            "schema_version": SUMMARY_VERSION,
            "n_cases": self.n_cases, "cases": list(self.cases), "failed": dict(self.failed),
            "unmatched": {k: list(v) for k, v in self.unmatched.items()},
            "ignored_files": list(self.ignored_files), "reoriented": dict(self.reoriented),
            "resampled": dict(self.resampled), "warnings": list(self.warnings),
            "labels": {str(k): v for k, v in self.labels.items()},
            "tolerance_mm": float(self.tolerance_mm), "empty_policy": self.empty_policy,
            "statistics": self.statistics, "per_label": self.per_label, "worst_cases": self.worst_cases,
        }
        for key in ("instances", "miou"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "summary.json") -> EvaluationSummary:
        check_version(obj, SUMMARY_VERSION, where)
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise InputError(f"{where} lacks {', '.join(repr(k) for k in missing)}; re-run medseg evaluate")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in obj.items() if k in known}
        labels = obj["labels"]
        try:
            if not isinstance(labels, Mapping):
                raise InputError("'labels' must map label values to names")
            kwargs["labels"] = {int(k): v for k, v in labels.items()}
        except ValueError:
            raise InputError(f"{where}: 'labels' keys must be label values") from None
        try:
            return cls(**kwargs)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> EvaluationSummary:
        return read_record(cls, path, hint="re-run medseg evaluate")
