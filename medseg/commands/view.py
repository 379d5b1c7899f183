"""``medseg view PATH``: look at an image and its labels in the browser, prompt, edit and save masks,
or review the cases of a ``medseg batch`` / ``segment`` output folder."""

from __future__ import annotations

import argparse

HELP = "open an image (and its labels) in a local web viewer, or review a batch output; prompts, brush, save"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image: DICOM folder/zip, NIfTI, NRRD, MHA, TIFF or PNG; or a `medseg batch` / "
                                     "`medseg segment` output folder to review (with --images)")
    parser.add_argument("--labels", default=None,
                        help="label map on the image's grid (NIfTI/NRRD/MHA, DICOM SEG) or a `medseg segment` case folder")
    parser.add_argument("--reference", default=None, help="a reference label map, shown beside --labels")
    parser.add_argument("--images", default=None,
                        help="reviewing an output folder: where its images are (the batch's SOURCE folder or CSV, "
                             "or the one image a `segment` run read)")
    parser.add_argument("--output", default="medseg-view",
                        help="folder where 'save mask' writes NIfTI files (default: ./medseg-view)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--series", default=None, help="DICOM series: a SeriesInstanceUID or a rule (modality=CT, largest)")
    parser.add_argument("--method", default=None,
                        help="prompt method of medseg.prompt (default: promptable, the trained network, for 3D images "
                             "when its bundle is there, else auto; `medseg prompt --help` lists them)")
    parser.add_argument("--model", default=None,
                        help="a promptable bundle (folder, or promptable_3d) whose network answers the prompts; "
                             "a segmentation model is refused: run `medseg segment` and view its output with --labels")
    parser.add_argument("--max-voxels", type=int, default=None,
                        help="send studies larger than this many voxels reduced (every f-th voxel; "
                             "default 33554432 = 512x512x128); prompts and saves stay on the full grid")
    parser.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")


def run(args: argparse.Namespace) -> int:
    import sys

    from medseg.errors import ConfigError
    from medseg.io.atomic import check_writable_dir
    from medseg.prompt import method_names
    from medseg.viewer.grid import DEFAULT_MAX_VOXELS
    from medseg.viewer.prompting import describe
    from medseg.viewer.review import Review, is_output_folder
    from medseg.viewer.server import has_browser, serve, vendor_missing
    from medseg.viewer.session import ViewerSession

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0-65535)")
    if args.method is not None and args.method not in method_names():
        raise ConfigError(f"--method {args.method!r} is not a prompt method; use one of {', '.join(method_names())}")
    if args.model is not None and args.method not in (None, "promptable"):
        raise ConfigError(f"--model is a promptable network; --method {args.method} does not take one")
    if args.model is not None:
        _check_model(args.model)  # before the image is read: a wrong --model fails at once
    if vendor_missing():
        raise ConfigError("the viewer's NiiVue build is missing (medseg/viewer/static/vendor/niivue.umd.js); "
                          "run `make viewer-vendor` (needs npm) or install a medseg wheel built with it")
    max_voxels = args.max_voxels or DEFAULT_MAX_VOXELS
    review = None
    if is_output_folder(args.path) and args.labels is None:
        if args.images is None:
            raise ConfigError(f"{args.path} is a segmentation output folder: give --images (the batch's SOURCE "
                              "folder or CSV, or the image a `segment` run read) to review it")
        review = Review(args.path, args.images, prompt_method=args.method, max_voxels=max_voxels,
                        prompt_model=args.model)
        first = next((i for i, c in enumerate(review.cases) if c.source is not None), 0)
        session = review.open(first)
    else:
        output = check_writable_dir(args.output, "--output")
        session = ViewerSession.from_paths(args.path, labels=args.labels, reference=args.reference, output_dir=output,
                                           series=args.series, prompt_method=args.method, max_voxels=max_voxels,
                                           prompt_model=args.model)
    open_browser = not args.no_browser and sys.stdin.isatty() and has_browser()

    def announce(url: str) -> None:
        print(f"medseg view: {url}", flush=True)
        print(f"(prompts: {describe(session.prompt_method, session.prompt_model, len(session.shape))})", flush=True)
        if review is not None:
            print(f"(reviewing {len(review.cases)} cases; decisions go to manifest.jsonl of that folder)", flush=True)
        if session.grid.reduced:
            print(f"(the study is sent reduced: every {session.grid.factor[0]}th voxel; --max-voxels to change)",
                  flush=True)
        print("(local only; the token in the URL is required; Ctrl-C stops the viewer)", flush=True)

    try:
        serve(session, args.port, open_browser=open_browser, announce=announce, review=review)
    except KeyboardInterrupt:
        print("medseg view: stopped", file=sys.stderr)
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    return 0


def _check_model(model: str) -> None:
    """``--model`` must be a promptable bundle (a shipped name or a folder, 3D or 2D; the image's
    number of axes is checked once it is read); a segmentation model is refused in one line that
    says how to look at its output instead."""
    from medseg.errors import BundleError, ConfigError
    from medseg.prompt.network import BUNDLES, resolve_bundle

    first = None
    for ndim in BUNDLES:
        try:
            resolve_bundle(model, ndim)
            return
        except BundleError as exc:
            first = first or exc
    raise ConfigError(f"{first} (a segmentation model is not taken here: run `medseg segment IMAGE --model "
                      f"{model} --output OUT`, then `medseg view IMAGE --labels OUT/<case>`)")
