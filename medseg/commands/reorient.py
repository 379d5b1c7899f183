"""``medseg reorient INPUT OUTPUT --to LPS``: the same voxels in another axis order, exactly."""

from __future__ import annotations

import argparse

HELP = "reorient an image or label map to axis codes (RAS, LPS, ...): transposes and flips, no interpolation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image or label map (NIfTI/NRRD/MHA, DICOM series)")
    parser.add_argument("output", help="output file: .nii, .nii.gz, .nrrd or .mha")
    parser.add_argument("--to", default="RAS", metavar="CODES",
                        help="where i, j, k point: three of R/L, A/P, S/I, e.g. RAS (default), LPS, LAS")
    parser.add_argument("--kind", choices=("auto", "image", "label"), default="auto",
                        help="label maps keep their integer type; auto decides from the file (default)")
    parser.add_argument("--series", default=None, help="DICOM series of INPUT: a SeriesInstanceUID or a rule")


def run(args: argparse.Namespace) -> int:
    from medseg.io.regrid_files import reorient_file

    out, note = reorient_file(args.input, args.output, target=args.to, kind=args.kind, series=args.series)
    print(note)
    print(out)
    return 0
