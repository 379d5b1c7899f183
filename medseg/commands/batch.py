"""``medseg batch SOURCE --model M --output DIR``: segment many cases, resumably.

SOURCE is a folder tree, a CSV manifest (column ``input``), a DICOMweb URL
(``http://host:8042/dicom-web``) or a DIMSE node (``dimse://AET@host:104``). Credentials come from
``MEDSEG_PACS_USER`` / ``MEDSEG_PACS_PASSWORD`` or ``~/.netrc``, never from the command line.
Scale out with ``torchrun --nproc_per_node=N -m medseg batch ...`` (each case runs on one rank).

Exit codes: 0 all cases done, 3 the job finished but some cases failed (see the manifest) or, with
``--store-only``, some SEG was not sent, 2 bad options or source.
"""

from __future__ import annotations

import argparse

HELP = "segment a folder, CSV manifest or PACS query; resumable, one manifest, SEG stored back"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder, manifest .csv, http(s)://HOST:PORT/dicom-web or dimse://AET@HOST:PORT")
    from medseg.commands.segment import add_model_arguments

    add_model_arguments(parser, required=False)  # not needed with --store-only; checked in run()
    parser.add_argument("--output", required=True, help="output folder: one sub-folder per case + manifest.jsonl")
    parser.add_argument("--format", default="nifti,dicom-seg,png",
                        help="comma-separated: nifti, dicom-seg, rtstruct (RT Structure Set), png")
    parser.add_argument("--store-back", action="store_true",
                        help="store each DICOM SEG (and RT structure set) back to the PACS source")
    parser.add_argument("--store-only", action="store_true",
                        help="segment nothing: send the SEGs a reviewed --output folder holds to the PACS SOURCE "
                             "(each at most once; removed ones are reported as not sent)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="redo cases that are already done (default: resume, skipping them)")
    parser.add_argument("--resume", dest="resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help="cases processed concurrently per process")
    parser.add_argument("--retries", type=int, default=2, help="retries for network errors (backoff 2, 4, ... s)")
    parser.add_argument("--select", default=None,
                        help="series rules for folders: modality=CT,description~REGEX,thickness<=3,"
                             "orientation=axial,min-slices=N")
    parser.add_argument("--modality", default="CT", help="PACS query: modality (default CT)")
    parser.add_argument("--study-date", default=None, help="PACS query: DICOM date or range, e.g. 20240101-20241231")
    parser.add_argument("--description", default=None, help="PACS query: series description regex")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="float32 throughout (default: bfloat16 on CPUs with native bf16, float16 on CUDA)")
    parser.add_argument("--trust-bundle", action="store_true")
    parser.add_argument("--statistics", action="store_true",
                        help="statistics.json per case; the manifest records mL per structure")
    parser.add_argument("--strict", action="store_true",
                        help="fail a case whose input or result lies outside the model's declared domain")
    parser.set_defaults(resume=True)


def run(args: argparse.Namespace) -> int:
    from medseg.errors import ConfigError

    if args.store_only:
        return _store_only(args)
    if not args.model:
        raise ConfigError("medseg batch needs --model (or --bundle), unless --store-only")
    from medseg.batch.job import JobOptions, run_job
    from medseg.batch.runner import distributed_rank_world
    from medseg.batch.sources import build_cases
    from medseg.bundle import load_bundle
    from medseg.commands.segment import model_argument, nnunet_options
    from medseg.inference.pipeline import parse_formats, resolve_model
    from medseg.io.atomic import check_writable_dir

    check_writable_dir(args.output, "--output")  # before the PACS query and the model
    cases, client = build_cases(args.source, select=args.select, modality=args.modality,
                                study_date=args.study_date, description=args.description)
    model, _ = resolve_model(model_argument(args), trust=args.trust_bundle, model_loader=load_bundle,
                             nnunet=nnunet_options(args), tta=args.tta)
    options = JobOptions(output_dir=args.output, formats=parse_formats(args.format), device=args.device,
                         tta=args.tta, store_back=args.store_back, resume=args.resume, workers=args.workers,
                         retries=args.retries, amp=args.amp, statistics=args.statistics, strict=args.strict)
    summary = run_job(cases, model, options, client=client)
    rank, _ = distributed_rank_world()
    if rank == 0:
        print(summary.table())
    return 3 if summary.failed else 0


def _store_only(args: argparse.Namespace) -> int:
    """``--store-only``: no model, no segmentation; exit 3 when some SEG was not sent."""
    from medseg.batch.job import store_results
    from medseg.batch.pacs import client_from_uri
    from medseg.batch.runner import NOT_SENT

    summary = store_results(args.output, client_from_uri(args.source), retries=args.retries)
    print(summary.table())
    return 3 if summary.stores.get(NOT_SENT) else 0
