"""``medseg resample INPUT OUTPUT (--like REF | --spacing X Y Z)``: values on another grid."""

from __future__ import annotations

import argparse

HELP = "resample an image or label map onto a reference grid or a new spacing (label maps: nearest only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image or label map (NIfTI/NRRD/MHA, DICOM series)")
    parser.add_argument("output", help="output file: .nii, .nii.gz, .nrrd or .mha")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--like", metavar="REF", help="resample onto the grid of this image or label map")
    target.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"),
                        help="new voxel size in mm along i, j, k (same field of view and directions)")
    parser.add_argument("--kind", choices=("auto", "image", "label"), default="auto",
                        help="label maps use nearest neighbour; auto decides from the file (default)")
    parser.add_argument("--interpolation", choices=("nearest", "linear", "cubic"), default=None,
                        help="images only (default linear); label maps are always nearest")
    parser.add_argument("--series", default=None, help="DICOM series of INPUT: a SeriesInstanceUID or a rule")


def run(args: argparse.Namespace) -> int:
    from medseg.io.regrid_files import resample_file

    order = {None: None, "nearest": 0, "linear": 1, "cubic": 3}[args.interpolation]
    out, note = resample_file(args.input, args.output, like=args.like, spacing=args.spacing, kind=args.kind,
                              order=order, series=args.series)
    print(note)
    print(out)
    return 0
