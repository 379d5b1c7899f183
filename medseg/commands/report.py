"""``medseg report OUTDIR [-o OUTDIR/report.html] [--reference DIR | --evaluation DIR] [--min-dice 0.7]``:
static HTML QA report. Prints the page's path and one line saying how many case/label pairs were
flagged for low Dice."""

from __future__ import annotations

import argparse

HELP = "static HTML QA report (overlays, volumes, metrics, flags) for a segment/batch/evaluate output folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", help="output folder of medseg segment, batch or evaluate")
    parser.add_argument("-o", "--output", default=None, help="HTML file to write (default: OUTDIR/report.html)")
    parser.add_argument("--reference", default=None,
                        help="folder of reference label maps named by case (<case>.nii.gz/.nrrd/.mha/.dcm)")
    parser.add_argument("--evaluation", default=None, metavar="DIR",
                        help="output folder of medseg evaluate for these cases (default: the one sub-folder of "
                             "OUTDIR holding metrics.csv + summary.json, if any)")
    parser.add_argument("--min-dice", type=float, default=0.7,
                        help="flag every case/label with Dice below this, 0..1 (default 0.7)")


def run(args: argparse.Namespace) -> int:
    from medseg.report import write_report

    result = write_report(args.outdir, args.output, reference=args.reference, evaluation=args.evaluation,
                          min_dice=args.min_dice)
    print(result.html)
    print(result.summary_line())
    return 0
