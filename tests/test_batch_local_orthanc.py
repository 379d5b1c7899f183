"""The local Orthanc harness itself: starts with authentication on, stores a real DICOM file, and
refuses requests without credentials."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medseg.batch.local_orthanc import LocalOrthanc, orthanc_available
from medseg.errors import PACSError

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc/orthanc-dicomweb not installed"),
]


def test_orthanc_auth_store_and_dicomweb(tmp_path):
    ct = get_testdata_file("CT_small.dcm")  # ships inside the pydicom wheel (no download)
    with LocalOrthanc() as pacs:
        with pytest.raises(PACSError, match="HTTP 401"):
            pacs.rest("GET", "/system", auth=False)
        ids = pacs.upload([ct])
        assert len(ids) == 1
        stats = pacs.rest("GET", "/statistics")
        assert stats["CountInstances"] == 1
        # DICOMweb QIDO-RS with credentials finds the study; without them it is refused.
        study_uid = pydicom.dcmread(ct).StudyInstanceUID
        req = urllib.request.Request(f"{pacs.dicomweb_url}/studies?StudyInstanceUID={study_uid}")
        token = base64.b64encode(f"{pacs.user}:{pacs.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read().decode()
        assert study_uid in body
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"{pacs.dicomweb_url}/studies", timeout=30)
        assert exc.value.code == 401
        workdir = pacs.workdir
    assert not workdir.exists()  # fresh storage removed at the end
