"""DICOMweb and DIMSE clients against a real Orthanc on loopback (Debian's orthanc)."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medseg.batch.local_orthanc import LocalOrthanc, orthanc_available
from medseg.batch.pacs import DicomWebClient, DimseClient, SeriesQuery, client_from_uri, credentials_for
from medseg.errors import ConfigError, PACSError

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc/orthanc-dicomweb not installed"),
]

CT, MR = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")


@pytest.fixture(scope="module")
def pacs():
    with LocalOrthanc() as p:
        p.upload([CT, MR])
        yield p


def _uids(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_dicomweb_find_retrieve_exists(pacs, tmp_path):
    web = DicomWebClient(pacs.dicomweb_url, auth=pacs.auth)
    found = web.find_series(SeriesQuery(modality="CT"))
    study, series, sop = _uids(CT)
    assert [(s.study_instance_uid, s.series_instance_uid, s.n_instances) for s in found] == [(study, series, 1)]
    files = web.retrieve_series(found[0], tmp_path)
    assert [pydicom.dcmread(f).SOPInstanceUID for f in files] == [sop]
    assert (pydicom.dcmread(files[0]).pixel_array == pydicom.dcmread(CT).pixel_array).all()
    assert web.series_exists(study, series) and not web.series_exists(study, "1.2.826.0.1.3680043.99.1")


def test_dicomweb_without_or_with_wrong_credentials_is_refused(pacs, monkeypatch, tmp_path):
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(PACSError, match="HTTP 401"):
        DicomWebClient(pacs.dicomweb_url).find_series(SeriesQuery())
    with pytest.raises(PACSError, match="HTTP 401"):
        DicomWebClient(pacs.dicomweb_url, auth=("medseg", "wrong")).find_series(SeriesQuery())


def test_credentials_from_env_then_netrc(pacs, monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {pacs.user} password {pacs.password}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    assert credentials_for(pacs.dicomweb_url) == pacs.auth
    assert len(DicomWebClient(pacs.dicomweb_url).find_series(SeriesQuery(modality="MR"))) == 1
    monkeypatch.setenv("MEDSEG_PACS_USER", "u")
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", "p")
    assert credentials_for(pacs.dicomweb_url) == ("u", "p")


def test_dimse_find_get_store(pacs, tmp_path):
    host, port, aet = pacs.dimse
    dimse = DimseClient(host, port, aet)
    found = dimse.find_series(SeriesQuery(modality="MR"))
    study, series, sop = _uids(MR)
    assert [(s.study_instance_uid, s.series_instance_uid) for s in found] == [(study, series)]
    files = dimse.retrieve_series(found[0], tmp_path)
    assert [pydicom.dcmread(f).SOPInstanceUID for f in files] == [sop]
    before = pacs.rest("GET", "/statistics")["CountInstances"]
    dimse.store([CT])  # the same SOP instance again: the PACS keeps one copy
    assert pacs.rest("GET", "/statistics")["CountInstances"] == before


def test_dimse_unknown_calling_ae_is_refused(pacs):
    host, port, aet = pacs.dimse
    with pytest.raises(PACSError):
        DimseClient(host, port, aet, calling_aet="INTRUDER").find_series(SeriesQuery(modality=None))


def test_client_from_uri():
    assert isinstance(client_from_uri("dimse://ORTHANC@127.0.0.1:4242"), DimseClient)
    with pytest.raises(ConfigError):
        client_from_uri("ftp://x")


def test_list_instances_both_protocols(pacs):
    study, series, sop = _uids(CT)
    host, port, aet = pacs.dimse
    for client in (DicomWebClient(pacs.dicomweb_url, auth=pacs.auth), DimseClient(host, port, aet)):
        found = [s for s in client.find_series(SeriesQuery(modality="CT")) if s.series_instance_uid == series]
        assert client.list_instances(found[0]) == [sop]
