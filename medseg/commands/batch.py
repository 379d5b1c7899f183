"""``medseg batch SOURCE --model M --output DIR``: segment many cases, resumably.

SOURCE is a folder tree, a CSV manifest (column ``input``), a DICOMweb URL
(``https://host/dicom-web``) or a DIMSE node (``dimse://AET@host:104``). DICOMweb credentials come
from a token file, the environment or ``~/.netrc``, never from the command line
(:mod:`medseg.batch.pacs_auth`); DIMSE uses AE titles only. Scale out with
``torchrun --nproc_per_node=N -m medseg batch ...`` (each case runs on one rank).

For cron: stdout holds only the summary table (or the ``--dry-run`` listing); progress goes to
stderr, as a bar on a terminal and as plain periodic lines otherwise. Exit codes: see EXIT_CODES.
"""

from __future__ import annotations

import argparse

HELP = "segment a folder, CSV manifest or PACS query; resumable, one manifest, SEG stored back"
EXIT_CODES = ("exit codes: 0 every case done (and every requested SEG stored or already on the PACS); "
              "3 the job ran but some case failed or some SEG was not sent (reasons in the summary and "
              "manifest.jsonl); 2 bad invocation, unusable source or PACS unreachable before any work "
              "(one line on stderr)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXIT_CODES
    parser.add_argument("source", help="folder, manifest .csv, http(s)://HOST:PORT/dicom-web or dimse://AET@HOST:PORT")
    from medseg.commands._pacs_args import add_pacs_arguments
    from medseg.commands.segment import add_model_arguments

    add_model_arguments(parser, required=False)  # not needed with --store-only / --dry-run; checked in run()
    parser.add_argument("--output", default=None,
                        help="output folder: one sub-folder per case + manifest.jsonl (not needed with --dry-run)")
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
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="float32 throughout (default: bfloat16 on CPUs with native bf16, float16 on CUDA)")
    parser.add_argument("--trust-bundle", action="store_true")
    parser.add_argument("--statistics", action="store_true",
                        help="statistics.json per case; the manifest records mL per structure")
    parser.add_argument("--strict", action="store_true",
                        help="fail a case whose input or result lies outside the model's declared domain")
    add_pacs_arguments(parser)
    parser.set_defaults(resume=True)


def run(args: argparse.Namespace) -> int:
    from medseg.commands._pacs_args import pacs_query_and_options
    from medseg.errors import ConfigError

    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if args.output is None and not args.dry_run:
        raise ConfigError("medseg batch needs --output (unless --dry-run)")
    if args.store_only:
        return _store_only(args)
    query, options = pacs_query_and_options(args)
    if args.dry_run:
        return _dry_run(args, query, options)
    if not args.model:
        raise ConfigError("medseg batch needs --model (or --bundle), unless --store-only or --dry-run")
    from medseg.io.atomic import check_writable_dir

    check_writable_dir(args.output, "--output")  # before the PACS query and the model
    from medseg.batch.runner import distributed_rank_world

    if options is not None and options.retrieve == "move" and distributed_rank_world()[1] > 1:
        raise ConfigError("--retrieve move under torchrun would need one registered C-MOVE destination per rank; "
                          "use --workers in one process, or --retrieve get")
    client = None
    if query is not None:  # a PACS that cannot be used fails in one line now, not after the model loads
        from medseg.batch.pacs import client_from_uri

        client = client_from_uri(args.source, options)
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
    from medseg.batch.job import JobOptions, run_job
    from medseg.batch.runner import NOT_SENT
    from medseg.batch.sources import build_cases
    from medseg.bundle import load_bundle
    from medseg.commands.segment import model_argument, nnunet_options
    from medseg.inference.pipeline import parse_formats, resolve_model

    try:
        formats = parse_formats(args.format)
        cases, client = build_cases(args.source, select=args.select, query=query, options=options,
                                    limit=args.limit, client=client)
        model, _ = resolve_model(model_argument(args), trust=args.trust_bundle, model_loader=load_bundle,
                                 nnunet=nnunet_options(args), tta=args.tta)
        job = JobOptions(output_dir=args.output, formats=formats, device=args.device,
                         tta=args.tta, store_back=args.store_back, resume=args.resume, workers=args.workers,
                         retries=args.retries, amp=args.amp, statistics=args.statistics, strict=args.strict)
        summary = run_job(cases, model, job, client=client)
    finally:
        if client is not None:
            client.close()
    rank, _ = distributed_rank_world()
    if rank == 0:
        print(summary.table(), flush=True)
    return 3 if summary.failed or summary.stores.get(NOT_SENT) else 0


def _dry_run(args: argparse.Namespace, query, options) -> int:
    """``--dry-run``: list what would be processed (no model, nothing written, nothing retrieved)."""
    from medseg.batch.sources import build_cases, describe_cases

    cases, client = build_cases(args.source, select=args.select, query=query, options=options, limit=args.limit)
    if client is not None:
        client.close()
    print(describe_cases(cases), flush=True)
    return 0


def _store_only(args: argparse.Namespace) -> int:
    """``--store-only``: no model, no segmentation; exit 3 when some SEG was not sent."""
    from medseg.batch.job import store_results
    from medseg.batch.pacs import client_from_uri
    from medseg.batch.runner import NOT_SENT
    from medseg.commands._pacs_args import pacs_options

    client = client_from_uri(args.source, pacs_options(args))
    try:
        summary = store_results(args.output, client, retries=args.retries)
    finally:
        client.close()
    print(summary.table(), flush=True)
    return 3 if summary.stores.get(NOT_SENT) else 0
