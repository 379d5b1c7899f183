"""The PACS options of ``medseg batch``: query bounds, DIMSE, timeouts, TLS and token files.

No option takes a credential: a bearer token or password comes from a file or the environment
(:mod:`medseg.batch.pacs_auth`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.errors import ConfigError

_QUERY_FLAGS = ("modality", "study_date", "description", "body_part", "accession_file")
_PACS_FLAGS = ("calling_aet", "retrieve", "move_aet", "move_port", "ca_bundle", "token_file")


def add_pacs_arguments(parser: argparse.ArgumentParser) -> None:
    q = parser.add_argument_group("PACS query (what a PACS source processes; the PACS is asked page by page)")
    q.add_argument("--modality", default=None,
                   help="modality code(s), comma-separated (default CT; e.g. CR,DX,MG; 'any' for all)")
    q.add_argument("--study-date", default=None, help="DICOM date or range: 20240101-20241231, 20240101-, -20241231")
    q.add_argument("--description", default=None, help="series description regex (case-insensitive)")
    q.add_argument("--body-part", default=None, help="BodyPartExamined, e.g. CHEST, ABDOMEN")
    q.add_argument("--accession-file", default=None, metavar="FILE",
                   help="only studies with these accession numbers (one per line, # comments)")
    q.add_argument("--limit", type=int, default=None, help="process at most N series (or cases for folder sources)")
    q.add_argument("--dry-run", action="store_true",
                   help="print what would be processed (counts, series descriptions; no identifiers) and stop")
    q.add_argument("--page-size", type=int, default=100, help="QIDO-RS results per request (default 100)")

    d = parser.add_argument_group("DIMSE (dimse://AET@HOST:PORT; no HTTP credentials are used)")
    d.add_argument("--calling-aet", default="MEDSEG", help="medseg's AE title as the PACS knows it (default MEDSEG)")
    d.add_argument("--retrieve", choices=("get", "move"), default="get",
                   help="C-GET (default) or C-MOVE to medseg's own storage SCP")
    d.add_argument("--move-aet", default=None, help="AE title of medseg's C-MOVE destination (default: --calling-aet)")
    d.add_argument("--move-port", type=int, default=11112,
                   help="port medseg's C-MOVE destination listens on (default 11112); register AE title, host and "
                        "port on the PACS")

    n = parser.add_argument_group("network")
    n.add_argument("--connect-timeout", type=float, default=5.0,
                   help="seconds to connect (TCP, TLS) and for a DIMSE association answer (default 5)")
    n.add_argument("--read-timeout", type=float, default=30.0,
                   help="seconds to wait for each answer once connected (default 30)")
    n.add_argument("--ca-bundle", default=None, metavar="PEM",
                   help="CA certificates to verify an HTTPS DICOMweb server (e.g. the hospital CA)")
    n.add_argument("--token-file", default=None, metavar="FILE",
                   help="file holding a bearer token for DICOMweb (re-read before each request); "
                        "else MEDSEG_PACS_TOKEN(_FILE), MEDSEG_PACS_USER/MEDSEG_PACS_PASSWORD(_FILE), ~/.netrc")


def is_pacs(source: str) -> bool:
    return source.startswith(("http://", "https://", "dimse://"))


def read_accessions(path: str) -> tuple[str, ...]:
    """Accession numbers from a file: one per line; blank lines and ``#`` comments ignored."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --accession-file {p.name}: {exc.__class__.__name__}") from None
    values = tuple(dict.fromkeys(x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")))
    if not values:
        raise ConfigError(f"--accession-file {p.name} holds no accession number")
    return values


def pacs_query_and_options(args: argparse.Namespace):
    """(SeriesQuery, PacsOptions) for a PACS source, or (None, None) for a folder or manifest (then the
    PACS-only options are refused: they would silently do nothing)."""
    if not is_pacs(args.source):
        given = [f"--{k.replace('_', '-')}" for k in (*_QUERY_FLAGS, *_PACS_FLAGS)
                 if getattr(args, k) not in (None, argparse.SUPPRESS)
                 and getattr(args, k) != _default(k)]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to a PACS source; for folders use --select")
        return None, None
    from medseg.batch.pacs import PacsOptions, SeriesQuery

    modality = args.modality or "CT"
    query = SeriesQuery(
        modality=None if modality.lower() == "any" else modality,
        study_date=args.study_date, description_regex=args.description, body_part=args.body_part,
        accession_numbers=read_accessions(args.accession_file) if args.accession_file else (),
        limit=args.limit)
    options = PacsOptions(
        connect_timeout_s=args.connect_timeout, read_timeout_s=args.read_timeout, page_size=args.page_size,
        calling_aet=args.calling_aet, retrieve=args.retrieve, move_aet=args.move_aet, move_port=args.move_port,
        ca_bundle=args.ca_bundle, token_file=args.token_file)
    return query, options


def pacs_options(args: argparse.Namespace):
    """PacsOptions alone (``--store-only`` has no query)."""
    from medseg.batch.pacs import PacsOptions

    return PacsOptions(connect_timeout_s=args.connect_timeout, read_timeout_s=args.read_timeout,
                       calling_aet=args.calling_aet, ca_bundle=args.ca_bundle, token_file=args.token_file)


def _default(name: str):
    return {"calling_aet": "MEDSEG", "retrieve": "get", "move_port": 11112}.get(name)
