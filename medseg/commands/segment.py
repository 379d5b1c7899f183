"""``medseg segment INPUT --bundle NAME_OR_DIR --output DIR``: segment one study."""

from __future__ import annotations

import argparse

HELP = "segment one image/DICOM series with a bundle or training run; writes DIR/<case>/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="NIfTI/NRRD/MHA/TIFF/PNG file, or DICOM file/folder/archive")
    parser.add_argument("--bundle", required=True,
                        help="bundle name or folder (bundles/<name>), or a training run folder (model_spec.json)")
    parser.add_argument("--output", required=True, help="output folder; the case goes into DIR/<case>/")
    parser.add_argument("--format", default=None,
                        help="comma-separated: nifti, dicom-seg (DICOM inputs), png (default: all three)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="float32 throughout (default: bfloat16 on CPUs with native bf16, float16 on CUDA)")
    parser.add_argument("--series", default=None,
                        help="DICOM series: a SeriesInstanceUID or a rule (modality=CT, description~REGEX, largest)")
    parser.add_argument("--trust-bundle", action="store_true",
                        help="allow a bundle whose configs run code outside the allow-list")


def run(args: argparse.Namespace) -> int:
    from medseg._lean_imports import import_monai_for_inference

    import_monai_for_inference()
    from medseg.bundle import load_bundle
    from medseg.inference.pipeline import segment_file

    case_dir = segment_file(args.input, args.bundle, args.output, formats=args.format or "nifti,dicom-seg,png",
                            device=args.device, tta=args.tta, series=args.series, trust_bundle=args.trust_bundle,
                            model_loader=load_bundle, amp=args.amp)
    print(case_dir)
    _warn_skipped(case_dir, explicit=args.format is not None)
    return 0


def _warn_skipped(case_dir, *, explicit: bool) -> None:
    """One line on stderr when a DICOM SEG was asked for (or the input is DICOM) but not written."""
    import json
    import sys

    try:
        prov = json.loads((case_dir / "provenance.json").read_text())
    except (OSError, ValueError):
        return
    reason = (prov.get("output", {}).get("skipped") or {}).get("dicom-seg")
    if reason and (explicit or prov.get("input", {}).get("format") == "dicom"):
        print(f"medseg: warning: no DICOM SEG written: {reason}", file=sys.stderr)
