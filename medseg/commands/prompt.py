"""``medseg prompt IMAGE --box ... --point ... --output DIR``: one object from prompts.

Coordinates are world millimetres in RAS (+x patient's right, +y anterior, +z superior), as
medseg's affines and 3D Slicer; ``--lps`` for DICOM's frame (ITK-SNAP, PACS viewers), ``--voxel``
for array indices ``i j [k]``. The outputs are those of ``medseg segment``.
"""

from __future__ import annotations

import argparse

HELP = "segment one object from clicks / a box / extreme points (world mm, RAS by default); writes DIR/<case>/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="NIfTI/NRRD/MHA/TIFF/PNG file, or DICOM file/folder/archive")
    parser.add_argument("--point", action="append", nargs="+", type=float, metavar="C",
                        help="positive click: X Y [Z] (repeat for more)")
    parser.add_argument("--negative", action="append", nargs="+", type=float, metavar="C",
                        help="negative (background) click: X Y [Z] (repeat for more)")
    parser.add_argument("--box", nargs="+", type=float, metavar="C",
                        help="box: two opposite corners X0 Y0 [Z0] X1 Y1 [Z1]")
    parser.add_argument("--extreme", action="append", nargs="+", type=float, metavar="C",
                        help="an extreme point of the object: X Y [Z] (give 2 per axis)")
    parser.add_argument("--previous", metavar="MASK", help="a mask on the image grid to refine with the clicks")
    parser.add_argument("--scribbles", metavar="LABELS",
                        help="a label map on the image grid: 1 object, 2 background, 0 unmarked")
    parser.add_argument("--method", default=None,
                        help="promptable (the trained promptable_3d / promptable_2d network; the default when its "
                             "bundle met its shipping rule), auto (classical; the default otherwise), region-growing, "
                             "random-walker, grabcut, or a registered method")
    parser.add_argument("--model", default=None, metavar="BUNDLE",
                        help="a promptable bundle (folder, or promptable_3d / promptable_2d) for the "
                             "promptable method (implies --method promptable)")
    units = parser.add_mutually_exclusive_group()
    units.add_argument("--voxel", action="store_true", help="coordinates are voxel indices i j [k]")
    units.add_argument("--lps", action="store_true", help="world coordinates in DICOM's LPS instead of RAS")
    parser.add_argument("--label", default="object", help="name of the structure (SEG segment label)")
    parser.add_argument("--output", required=True, help="output folder; the case goes into DIR/<case>/")
    parser.add_argument("--format", default=None,
                        help="comma-separated: nifti, dicom-seg (DICOM inputs), png (default: all three)")
    parser.add_argument("--series", default=None, help="DICOM series: a SeriesInstanceUID or a rule")


def run(args: argparse.Namespace) -> int:
    from medseg.errors import PromptError
    from medseg.inference.pipeline import segment_file
    from medseg.io.read import load
    from medseg.prompt.source import PromptSource

    points = [list(p) for p in args.point or []] + [list(p) for p in args.negative or []]
    labels = [1] * len(args.point or []) + [0] * len(args.negative or [])
    if not (points or args.box or args.extreme or args.previous or args.scribbles):
        raise PromptError("give at least one prompt: --point, --box, --extreme, --scribbles or --previous")
    kwargs = {"points": points or None, "labels": labels or None, "box": args.box,
              "extreme_points": [list(p) for p in args.extreme] if args.extreme else None,
              "voxel": args.voxel, "space": "LPS" if args.lps else "RAS", "model": args.model}
    if args.previous:
        kwargs["previous"] = load(args.previous, kind="label")
    if args.scribbles:
        kwargs["scribbles"] = load(args.scribbles, kind="label")
    source = PromptSource(method=args.method, label=args.label, **kwargs)
    result = segment_file(args.input, source, args.output, formats=args.format or "nifti,dicom-seg,png",
                          series=args.series)
    print(getattr(result, "path", result))
    return 0
