"""``medseg demo --output DIR [--quick]``: the main job on real sample data (``make demo``)."""

from __future__ import annotations

import argparse

HELP = "segment real sample data (CT as DICOM, microscopy) with the shipped bundles, evaluate, write a QA report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="output folder (a previous demo output there is replaced)")
    parser.add_argument("--quick", action="store_true", help="crop the inputs (same steps, less data; for tests)")


def run(args: argparse.Namespace) -> int:
    from medseg.demo import run_demo

    res = run_demo(args.output, quick=args.quick)
    if res.missing_bundles:
        print(f"missing bundles (not shipped, skipped): {', '.join(res.missing_bundles)}")
    print(res.table())
    print(f"results: {res.output}/segment/<case>/ (seg.nii.gz, seg.dcm, overlay.png, provenance.json), "
          f"metrics: {res.output}/evaluation/<task>/, QA report: {res.report}")
    print(f"total {res.seconds:.0f} s")
    return 0
