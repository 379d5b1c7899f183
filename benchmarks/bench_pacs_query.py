"""Starting a bounded PACS job on a PACS that holds many series: what reaches the PACS before the
first case can begin, the way `medseg batch URL --limit N` does it now against the way it did before.

A real Orthanc on loopback holds ``--series`` tiny CT series (one instance each, copies of
pydicom's CT_small with fresh UIDs). The baseline is the job's start before issue 20: one
unpaged series search over the whole PACS, then an instance listing of every match, then
``--limit`` (it did not exist: the first N cases were taken from the full list). medseg now asks
page by page (``limit``/``offset``) and stops at ``--limit``; a series' instances are listed when
its case's turn comes. Requests are counted by a pass-through gateway (DICOMweb) and measured as
wall time (DICOMweb and DIMSE). Both pick series of the same query.

    python benchmarks/bench_pacs_query.py [--series 300] [--limit 10] [--page-size 100]

Prints the figures side by side and writes benchmarks/results/pacs_query.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def populate(pacs, n: int, folder: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    files = []
    for i in range(n):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesDescription = f"series {i % 7}"
        p = folder / f"{i}.dcm"
        ds.save_as(p, enforce_file_format=True)
        files.append(p)
    pacs.upload(files)


def baseline_start(client, limit: int) -> int:
    """Before: every match found at once, the instances of every match listed, then the first N."""
    from medseg.batch.pacs import SeriesQuery

    found = client.find_series(SeriesQuery(modality="CT"))
    for s in found:
        client.list_instances(s)
    return len(found[:limit])


def medseg_start(client, limit: int) -> int:
    """Now: the cases a job starts with (paged, bounded), then each case's identity as it runs."""
    from medseg.batch.pacs import SeriesQuery
    from medseg.batch.sources import pacs_cases

    cases = pacs_cases(client, SeriesQuery(modality="CT", limit=limit))
    for c in cases:
        c.key("weights")
    return len(cases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=300)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--page-size", type=int, default=100)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from medseg.batch.local_gateway import LocalGateway
    from medseg.batch.local_orthanc import LocalOrthanc, orthanc_available
    from medseg.batch.pacs import PacsOptions, client_from_uri

    if not orthanc_available():
        raise SystemExit("needs Debian's orthanc + orthanc-dicomweb")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp, LocalOrthanc() as pacs, LocalGateway(pacs) as gw:
        populate(pacs, args.series, Path(tmp))
        host, port, aet = pacs.dimse
        opts = PacsOptions(page_size=args.page_size)
        for protocol, uri in (("dicomweb", gw.dicomweb_url), ("dimse", f"dimse://{aet}@{host}:{port}")):
            for name, fn in (("before", baseline_start), ("medseg", medseg_start)):
                client = client_from_uri(uri, opts)
                gw.requests.clear()
                t = time.perf_counter()
                n = fn(client, args.limit)
                seconds = time.perf_counter() - t
                client.close()
                rows[f"{protocol}.{name}"] = {"seconds": round(seconds, 3), "cases": n,
                                              "http_requests": len(gw.requests) if protocol == "dicomweb" else None}
    print(f"PACS with {args.series} CT series, --limit {args.limit}, page size {args.page_size}")
    print(f"{'':10} {'before s':>9} {'medseg s':>9} {'ratio':>7} {'requests before':>16} {'medseg':>7}")
    for protocol in ("dicomweb", "dimse"):
        b, m = rows[f"{protocol}.before"], rows[f"{protocol}.medseg"]
        print(f"{protocol:10} {b['seconds']:>9.2f} {m['seconds']:>9.2f} {m['seconds'] / b['seconds']:>6.3f}x "
              f"{b['http_requests'] if b['http_requests'] is not None else '-':>16} "
              f"{m['http_requests'] if m['http_requests'] is not None else '-':>7}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "pacs_query.json"
    out.write_text(json.dumps({"series": args.series, "limit": args.limit, "page_size": args.page_size,
                               "command": "python benchmarks/bench_pacs_query.py " + " ".join(sys.argv[1:]),
                               "results": rows}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
