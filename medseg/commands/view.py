"""``medseg view PATH``: look at an image and its labels in the browser, prompt and save masks."""

from __future__ import annotations

import argparse

HELP = "open an image (and its labels) in a local web viewer; box/click prompts; save masks as NIfTI"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image: DICOM folder/zip, NIfTI, NRRD, MHA, TIFF or PNG")
    parser.add_argument("--labels", default=None,
                        help="label map on the image's grid (NIfTI/NRRD/MHA, DICOM SEG) or a `medseg segment` case folder")
    parser.add_argument("--reference", default=None, help="a reference label map, shown beside --labels")
    parser.add_argument("--output", default="medseg-view",
                        help="folder where 'save mask' writes NIfTI files (default: ./medseg-view)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--series", default=None, help="DICOM series: a SeriesInstanceUID or a rule (modality=CT, largest)")
    parser.add_argument("--method", default="auto", help="prompt method of medseg.prompt (default: auto)")
    parser.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")


def run(args: argparse.Namespace) -> int:
    import sys

    from medseg.errors import ConfigError
    from medseg.io.atomic import check_writable_dir
    from medseg.viewer.server import has_browser, serve, vendor_missing
    from medseg.viewer.session import ViewerSession

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0-65535)")
    if vendor_missing():
        raise ConfigError("the viewer's NiiVue build is missing (medseg/viewer/static/vendor/niivue.umd.js); "
                          "run `make viewer-vendor` (needs npm) or install a medseg wheel built with it")
    output = check_writable_dir(args.output, "--output")
    session = ViewerSession.from_paths(args.path, labels=args.labels, reference=args.reference, output_dir=output,
                                       series=args.series, prompt_method=args.method)
    open_browser = not args.no_browser and sys.stdin.isatty() and has_browser()

    def announce(url: str) -> None:
        print(f"medseg view: {url}", flush=True)
        print("(local only; the token in the URL is required; Ctrl-C stops the viewer)", flush=True)

    try:
        serve(session, args.port, open_browser=open_browser, announce=announce)
    except KeyboardInterrupt:
        print("medseg view: stopped", file=sys.stderr)
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    return 0
