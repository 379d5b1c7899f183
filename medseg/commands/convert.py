"""``medseg convert INPUT OUTPUT``: any supported input to NIfTI / NRRD / MHA, geometry kept."""

from __future__ import annotations

import argparse

HELP = "convert DICOM/NIfTI/NRRD/MHA/TIFF/PNG to .nii, .nii.gz, .nrrd or .mha (world geometry kept)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="file or folder to read")
    parser.add_argument("output", help="output file: .nii, .nii.gz, .nrrd or .mha")
    parser.add_argument("--series", default=None,
                        help="DICOM series: a SeriesInstanceUID or a rule (modality=CT, description~REGEX, largest)")
    parser.add_argument("--allow-missing-slices", action="store_true",
                        help="DICOM: accept a series with missing slices (gaps are reported)")
    parser.add_argument("--kind", choices=("auto", "image", "label"), default="auto",
                        help="image (float32), label (integer) or auto (default)")


def run(args: argparse.Namespace) -> int:
    from medseg.io.write import convert

    out = convert(args.input, args.output, series=args.series,
                  allow_missing_slices=args.allow_missing_slices, kind=args.kind)
    print(out)
    return 0
