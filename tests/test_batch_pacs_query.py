"""Bounded PACS queries against a real Orthanc (DICOMweb and DIMSE): filters by date range, modality,
description, body part and accession numbers, --limit, QIDO-RS paging, --dry-run, and no instance
listing before work begins. The expected series are computed from the headers the test wrote."""

from __future__ import annotations

import re

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medseg import cli
from medseg.batch.local_gateway import LocalGateway
from medseg.batch.local_orthanc import LocalOrthanc, orthanc_available
from medseg.batch.pacs import PacsOptions, SeriesQuery, client_from_uri
from medseg.batch.sources import pacs_cases
from medseg.errors import ConfigError

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc/orthanc-dicomweb not installed"),
]

# (modality, study date, series description, body part, accession number, instances)
SERIES = [
    ("CT", "20240105", "abdomen venous", "ABDOMEN", "ACC001", 2),
    ("CT", "20240310", "abdomen arterial", "ABDOMEN", "ACC002", 1),
    ("CT", "20240720", "thorax lung", "CHEST", "ACC003", 3),
    ("CT", "20231130", "abdomen venous", "ABDOMEN", "ACC004", 1),
    ("MR", "20240310", "t1 brain", "HEAD", "ACC005", 1),
    ("CT", "20241201", "head plain", "HEAD", "ACC006", 1),
]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    files, headers = [], []
    for n, (modality, date, desc, part, acc, count) in enumerate(SERIES):
        template = get_testdata_file("CT_small.dcm" if modality == "CT" else "MR_small.dcm")
        study, series = generate_uid(), generate_uid()
        for i in range(count):
            ds = pydicom.dcmread(template)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.StudyDate, ds.SeriesDescription, ds.BodyPartExamined, ds.AccessionNumber = date, desc, part, acc
            ds.InstanceNumber = i + 1
            p = folder / f"{n}-{i}.dcm"
            ds.save_as(p, enforce_file_format=True)
            files.append(p)
        headers.append({"series": series, "modality": modality, "date": date, "desc": desc, "part": part,
                        "acc": acc, "n": count})
    with LocalOrthanc() as p:
        p.upload(files)
        p.headers = headers
        yield p


def expected(pacs, pred) -> set[str]:
    return {h["series"] for h in pacs.headers if pred(h)}


def clients(pacs, **opts):
    host, port, aet = pacs.dimse
    web = client_from_uri(pacs.dicomweb_url, PacsOptions(**opts))
    web._session.auth = pacs.auth
    return {"dicomweb": web, "dimse": client_from_uri(f"dimse://{aet}@{host}:{port}", PacsOptions(**opts))}


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_filters_match_the_headers_written(pacs, protocol, tmp_path):
    client = clients(pacs)[protocol]
    acc_file = ["ACC002", "ACC005", "ACC006"]
    cases = {
        SeriesQuery(modality="CT"): lambda h: h["modality"] == "CT",
        SeriesQuery(modality="CT", study_date="20240101-20240731"):
            lambda h: h["modality"] == "CT" and "20240101" <= h["date"] <= "20240731",
        SeriesQuery(modality=None, study_date="20240310"): lambda h: h["date"] == "20240310",
        SeriesQuery(modality="CT", study_date="20240301-"): lambda h: h["modality"] == "CT" and h["date"] >= "20240301",
        SeriesQuery(modality="CT", description_regex="VENOUS"): lambda h: h["modality"] == "CT" and "venous" in h["desc"],
        SeriesQuery(modality="CT", body_part="abdomen"): lambda h: h["modality"] == "CT" and h["part"] == "ABDOMEN",
        SeriesQuery(modality="CT,MR", accession_numbers=tuple(acc_file)): lambda h: h["acc"] in acc_file,
        SeriesQuery(modality="MR,CT", body_part="HEAD"): lambda h: h["part"] == "HEAD",
    }
    for query, pred in cases.items():
        found = client.find_series(query)
        assert {s.series_instance_uid for s in found} == expected(pacs, pred), query
        by_uid = {h["series"]: h for h in pacs.headers}
        assert all(s.n_instances == by_uid[s.series_instance_uid]["n"] for s in found)
    limited = client.find_series(SeriesQuery(modality="CT", limit=2))
    assert len(limited) == 2 and {s.series_instance_uid for s in limited} <= expected(pacs, lambda h: h["modality"] == "CT")


def test_qido_is_paged_and_nothing_is_listed_before_work(pacs):
    """page size 2 over 5 CT series: 3 QIDO-RS requests; --limit 2: one request; building the cases
    lists no instances (that happens when a case's turn comes)."""
    with LocalGateway(pacs) as gw:  # plain HTTP here: counts the requests the PACS receives
        web = client_from_uri(gw.dicomweb_url, PacsOptions(page_size=2))
        n_ct = len(expected(pacs, lambda h: h["modality"] == "CT"))
        found = web.find_series(SeriesQuery(modality="CT"))
        series_requests = [p for m, p in gw.requests if re.search(r"/series\?", p)]
        assert len(found) == n_ct == 5
        assert len(series_requests) == n_ct // 2 + 1
        assert {re.search(r"offset=(\d+)", p).group(1) for p in series_requests} == {"0", "2", "4"}

        gw.requests.clear()
        cases = pacs_cases(web, SeriesQuery(modality="CT", limit=2))
        assert len(cases) == 2
        assert len(gw.requests) == 1 and "/series?" in gw.requests[0][1]
        assert not any("/instances" in p for _, p in gw.requests)
        key = cases[0].key("w")  # the identity is resolved now: one paged instance search
        assert len(key) == 64 and any("/instances" in p for _, p in gw.requests)


def test_dimse_stops_the_query_at_the_limit(pacs):
    dimse = clients(pacs)["dimse"]
    assert len(dimse.find_series(SeriesQuery(modality="CT", limit=1))) == 1
    assert len(dimse.find_series(SeriesQuery(modality="CT"))) == 5  # the aborted association left nothing behind


def test_dry_run_prints_counts_and_descriptions_only(pacs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSEG_PACS_USER", pacs.user)
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", pacs.password)
    acc = tmp_path / "accessions.txt"
    acc.write_text("# reviewed list\nACC001\n\nACC003\nACC004\nACC005\n")
    host, port, aet = pacs.dimse
    for source in (pacs.dicomweb_url, f"dimse://{aet}@{host}:{port}"):
        code = cli.main(["batch", source, "--dry-run", "--accession-file", str(acc), "--study-date", "20240101-"])
        out, err = capsys.readouterr()
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == "would process 2 series (5 instances)"
        rows = {re.sub(r"\s+", " ", x.strip()) for x in lines[2:]}
        assert rows == {"1 3 CT thorax lung", "1 2 CT abdomen venous"}
        for h in pacs.headers:  # no identifier of any kind
            assert h["series"] not in out + err and h["acc"] not in out + err
    assert not (tmp_path / "out").exists()
    code = cli.main(["batch", pacs.dicomweb_url, "--dry-run", "--modality", "any", "--limit", "3"])
    assert code == 0 and capsys.readouterr().out.startswith("would process 3 series")


def test_bad_query_options_are_one_line_exit_2(pacs, tmp_path, capsys):
    for extra in (["--study-date", "2024-01-01"], ["--limit", "0"], ["--modality", "C T"],
                  ["--accession-file", str(tmp_path / "missing.txt")], ["--calling-aet", "A" * 17]):
        assert cli.main(["batch", pacs.dicomweb_url, "--dry-run", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("medseg: error: ") and err.count("\n") == 1
    folder = tmp_path / "folder"
    folder.mkdir()
    assert cli.main(["batch", str(folder), "--dry-run", "--body-part", "CHEST"]) == 2
    assert "only apply to a PACS source" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        SeriesQuery(accession_numbers=("AC*",))  # a wildcard would match other studies


def test_dry_run_listing_never_passes_control_characters():
    from medseg.batch.runner import BatchCase
    from medseg.batch.sources import PacsInput, describe_cases

    hostile = PacsInput("1.2.3", "1.2.3.4", "CT", "venous\x1b[2J\x07\nDOE^JOHN\r", 12)
    text = describe_cases([BatchCase("c", payload=hostile)])
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert text.splitlines()[0] == "would process 1 series (12 instances)" and len(text.splitlines()) == 3
