"""``medseg segment INPUT --model PATH [--model PATH2 ...] --output DIR``: segment one study.

``--method NAME`` runs a classical method instead of a model (:mod:`medseg.classical`: otsu,
multi-otsu, threshold:LOW,HIGH, region-growing, kmeans:K, gmm:K, watershed, edges, preset:bone|
lung|air|body) with the same outputs.

``--model`` takes a medseg bundle (name or folder), a training run folder or an nnU-Net v2
trained-model folder, recognised by content; ``--bundle`` is the same option's older name.
"""

from __future__ import annotations

import argparse

HELP = ("segment one image/DICOM series with a bundle, training run or nnU-Net v2 model, or a classical "
        "--method; writes DIR/<case>/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="NIfTI/NRRD/MHA/TIFF/PNG file, or DICOM file/folder/archive")
    add_model_arguments(parser, required=False)
    parser.add_argument("--method", default=None, metavar="NAME",
                        help="classical method instead of --model: otsu, multi-otsu[:K], threshold:LOW,HIGH, "
                             "region-growing, kmeans:K, gmm:K, watershed, edges, preset:bone|lung|air|body (CT, HU)")
    parser.add_argument("--seed", action="append", nargs="+", type=float, default=None, metavar="MM",
                        help="region-growing seed: X Y [Z] in world mm (RAS); repeat for several "
                             "(default: the image centre)")
    parser.add_argument("--output", required=True, help="output folder; the case goes into DIR/<case>/")
    parser.add_argument("--format", default=None,
                        help="comma-separated: nifti, dicom-seg, rtstruct (RT Structure Set; both for DICOM "
                             "inputs), png (default: nifti,dicom-seg,png)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="float32 throughout (default: bfloat16 on CPUs with native bf16, float16 on CUDA)")
    parser.add_argument("--series", default=None,
                        help="DICOM series: a SeriesInstanceUID or a rule (modality=CT, description~REGEX, largest)")
    parser.add_argument("--trust-bundle", action="store_true",
                        help="allow a bundle whose configs run code outside the allow-list")
    parser.add_argument("--statistics", action="store_true",
                        help="also write statistics.json: per structure mL, intensity (HU), RAS box and centroid")
    parser.add_argument("--strict", action="store_true",
                        help="refuse an input or a result outside the model's declared domain (default: warn)")


def run(args: argparse.Namespace) -> int:
    from medseg.bundle import load_bundle
    from medseg.inference.pipeline import segment_file

    result = segment_file(args.input, _model_or_method(args), args.output, formats=args.format or "nifti,dicom-seg,png",
                          device=args.device, tta=args.tta, series=args.series, trust_bundle=args.trust_bundle,
                          model_loader=load_bundle, amp=args.amp, nnunet=nnunet_options(args),
                          extra_writers=_extra_writers(args), strict=args.strict)
    print(result.path)
    _warn_skipped(result.provenance, explicit=args.format is not None)
    return 0


def _model_or_method(args: argparse.Namespace):
    """``--model`` (see :func:`model_argument`) or a :class:`~medseg.classical.ClassicalSource` for ``--method``."""
    from medseg.errors import ConfigError

    if bool(args.model) == bool(args.method):
        raise ConfigError("give either --model or --method (one of them)")
    if args.seed and not args.method:
        raise ConfigError("--seed applies to --method region-growing only")
    if not args.method:
        return model_argument(args)
    from medseg.classical.source import ClassicalSource

    return ClassicalSource(args.method, seeds_mm=[tuple(s) for s in args.seed or []])


def add_model_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--model`` (alias ``--bundle``) and the nnU-Net options; shared with ``medseg batch``."""
    parser.add_argument("--model", "--bundle", dest="model", action="append", required=required, metavar="PATH",
                        help="a model, recognised by its content: a medseg bundle (name or folder), a MONAI "
                             "Model Zoo bundle folder (configs/inference.json|yaml), an nnU-Net v2 results folder "
                             "(plans.json, dataset.json, fold_*) or a medseg training run folder (model_spec.json); "
                             "repeat to run several models as one label map (classes numbered in --model order; "
                             "an earlier --model wins a voxel)")
    nn = parser.add_argument_group("nnU-Net v2 models (defaults as nnUNetv2_predict)")
    nn.add_argument("--folds", nargs="+", default=None, metavar="F",
                    help="folds to ensemble, e.g. 0 1 2 3 4 or all (default: every fold_N with the checkpoint)")
    nn.add_argument("--checkpoint", choices=("final", "best"), default="final",
                    help="checkpoint_final.pth (default) or checkpoint_best.pth")
    nn.add_argument("--disable-tta", action="store_true", help="no mirroring (nnU-Net mirrors by default)")
    nn.add_argument("--step-size", type=float, default=0.5, help="sliding-window step, fraction of the patch (0.5)")


def model_argument(args: argparse.Namespace):
    """One ``--model`` as a string, several as a list (:func:`medseg.inference.pipeline.resolve_model`)."""
    return args.model[0] if len(args.model) == 1 else list(args.model)


def nnunet_options(args: argparse.Namespace):
    from medseg.inference.sources.nnunet import NnunetOptions

    return NnunetOptions(folds=tuple(args.folds) if args.folds else None, checkpoint=args.checkpoint,
                         tta=not args.disable_tta, step_size=args.step_size)


def _warn_skipped(prov, *, explicit: bool) -> None:
    """One line on stderr when a DICOM SEG was asked for (or the input is DICOM) but not written
    (the same for an RT structure set),
    and one per flag when the input or the result lies outside the model's declared domain."""
    import sys

    skipped = prov.skipped
    reason = skipped.get("dicom-seg")
    if reason and (explicit or prov.input.get("format") == "dicom"):
        print(f"medseg: warning: no DICOM SEG written: {reason}", file=sys.stderr)
    if skipped.get("rtstruct"):  # only ever asked for explicitly
        print(f"medseg: warning: no RT structure set written: {skipped['rtstruct']}", file=sys.stderr)
    for flag in prov.domain_flags:
        print(f"medseg: warning: outside the model's domain: {flag} (--strict refuses)", file=sys.stderr)


def _extra_writers(args: argparse.Namespace) -> list:
    """The outputs asked for beyond the formats: ``--statistics`` -> statistics.json."""
    if not getattr(args, "statistics", False):
        return []
    from medseg.evaluation.statistics import write_statistics

    return [write_statistics]
