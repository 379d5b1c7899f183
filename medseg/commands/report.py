"""``medseg report OUTDIR [-o OUTDIR/report.html] [--reference DIR]``: static HTML QA report."""

from __future__ import annotations

import argparse

HELP = "static HTML QA report (overlays, volumes, metrics, flags) for a segment/batch/evaluate output folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", help="output folder of medseg segment, batch or evaluate")
    parser.add_argument("-o", "--output", default=None, help="HTML file to write (default: OUTDIR/report.html)")
    parser.add_argument("--reference", default=None,
                        help="folder of reference label maps named by case (<case>.nii.gz/.nrrd/.mha/.dcm)")


def run(args: argparse.Namespace) -> int:
    from medseg.report import build_report

    print(build_report(args.outdir, args.output, reference=args.reference))
    return 0
