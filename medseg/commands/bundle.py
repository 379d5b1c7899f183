"""``medseg bundle build|verify|list|export``: MONAI bundles (see :mod:`medseg.bundle`)."""

from __future__ import annotations

import argparse
import sys

HELP = "build, verify, list or export MONAI bundles (configs are checked by a trust policy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bundle_command", metavar="ACTION")
    sub.required = True
    b = sub.add_parser("build", help="build a bundle folder from a training run folder")
    b.add_argument("run_dir", help="training run folder (model_spec.json, checkpoints/best.pt)")
    b.add_argument("-o", "--output", required=True, help="bundle folder to create (must not exist)")
    b.add_argument("--name", required=True, help="bundle name (letters, digits, '_' or '-')")
    b.add_argument("--version", default="0.1.0", help="bundle version (default 0.1.0)")
    b.add_argument("--description", default="", help="one paragraph: what the model does")
    b.add_argument("--authors", default="medseg", help="author(s) of the model")
    b.add_argument("--data-source", default="", help="where the training data came from")
    b.add_argument("--data-license-file", default=None, help="text file with the data licence terms")
    v = sub.add_parser("verify", help="check metadata, trust policy, checksums, network I/O, reference output")
    v.add_argument("bundle", help="bundle folder or name")
    v.add_argument("--trust-bundle", action="store_true", help="evaluate the configs as given (trust the author)")
    sub.add_parser("list", help="list the bundles in bundles/ and $MEDSEG_BUNDLES")
    e = sub.add_parser("export", help="export the network to TorchScript or ONNX (checked against PyTorch)")
    e.add_argument("bundle", help="bundle folder or name")
    e.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    e.add_argument("-o", "--output", default=None, help="output file (default: ./<bundle name>.ts|.onnx)")
    e.add_argument("--trust-bundle", action="store_true", help="evaluate the configs as given (trust the author)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medseg.errors import BundleError

    if args.bundle_command == "build":
        from medseg.bundle import build_bundle

        license_text = Path(args.data_license_file).read_text(encoding="utf-8") if args.data_license_file else ""
        out = build_bundle(args.run_dir, args.output, name=args.name, version=args.version,
                           description=args.description, authors=args.authors, data_source=args.data_source,
                           data_license_text=license_text)
        print(out)
        return 0
    if args.bundle_command == "verify":
        from medseg.bundle import verify_bundle

        report = verify_bundle(args.bundle, trust=args.trust_bundle)
        print(report.summary())
        if not report.ok:
            names = ", ".join(c.name for c in report.failed)
            raise BundleError(f"bundle {report.bundle.name} failed verification: {names}")
        return 0
    if args.bundle_command == "list":
        from medseg.bundle import list_bundles

        rows = list_bundles()
        if not rows:
            print("no bundles found (bundles/ and $MEDSEG_BUNDLES)", file=sys.stderr)
            return 0
        print("name\tversion\ttask\tmodality\tlabels\tsha256\ttrained-on")
        for r in rows:
            labels = ",".join(f"{k}:{v}" for k, v in r.labels.items())
            print(f"{r.name}\t{r.version}\t{r.task}\t{r.modality}\t{labels}\t{r.weights_sha256[:12]}\t"
                  f"{r.trained_on}")
        return 0
    from medseg.bundle import export_bundle

    print(export_bundle(args.bundle, args.format, args.output, trust=args.trust_bundle))
    return 0
