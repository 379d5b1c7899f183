"""``medseg info PATH``: format, grid, spacing, orientation and value range of an input."""

from __future__ import annotations

import argparse

HELP = "describe an image, label map or DICOM folder (never shows patient identifiers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="file or folder (DICOM, NIfTI, NRRD, MHA, TIFF, PNG)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--series", default=None,
                        help="DICOM series: a SeriesInstanceUID or a rule (modality=CT, description~REGEX, largest)")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def format_table(info: dict) -> str:
    """Human-readable lines for :func:`medseg.io.read.describe`'s dict."""
    lines = []
    if info.get("selected", "") is None:
        lines.append("several series found: choose one with --series (UID, modality=CT, largest, ...)")
    for key, value in info.items():
        if key in ("series", "warnings", "affine_ras") or value in (None, ""):
            continue
        lines.append(f"{key:<18} {_fmt(value)}")
    if "affine_ras" in info:
        lines.append("affine (RAS mm)")
        lines.extend("    " + "  ".join(f"{v:>11.5f}" for v in row) for row in info["affine_ras"])
    if info.get("series"):
        lines.append(f"series ({len(info['series'])})")
        for s in info["series"]:
            lines.append(
                f"    {s.get('modality', '?'):<4} {s.get('n_instances', '?'):>5} inst  "
                f"{s.get('series_instance_uid', '?')}  {s.get('series_description', '')}"
            )
    for w in info.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from medseg.io.read import describe

    info = describe(args.path, series=args.series)
    print(json.dumps(_json_safe(info), indent=2, default=str, allow_nan=False) if args.json else format_table(info))
    return 0


def _json_safe(value: object) -> object:
    """NaN/inf (not valid JSON) become null, so `info --json` always prints valid JSON."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
