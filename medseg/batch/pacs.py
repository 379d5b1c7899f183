"""PACS clients for batch jobs: DICOMweb (QIDO-RS / WADO-RS / STOW-RS) and DIMSE (C-FIND / C-GET /
C-STORE). Both offer the same small interface, :class:`PacsClient`.

Credentials never come from the command line: DICOMweb uses ``MEDSEG_PACS_USER`` and
``MEDSEG_PACS_PASSWORD`` from the environment, else the ``~/.netrc`` (or ``$NETRC``) entry for the
server's host. Query results carry UIDs, modality, description and counts only: no patient data.
"""

from __future__ import annotations

import netrc
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from medseg.errors import ConfigError, PACSError


def _instance_path(dest: Path, ds: Any, n: int) -> Path:
    """Where a retrieved instance is saved: ``<SOPInstanceUID>.dcm`` when that is a valid UID, else
    ``instance-<n>.dcm`` (a PACS answer never names a path of its own)."""
    from medseg.io.dicom.uid import path_safe_uid

    uid = str(ds.get("SOPInstanceUID", "") or "")
    name = path_safe_uid(uid)
    return dest / (f"{name}.dcm" if name == uid else f"instance-{n:06d}.dcm")


@dataclass(frozen=True)
class PacsSeries:
    """A series found on a PACS (no patient identifiers)."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str = ""
    series_description: str = ""
    n_instances: int = 0
    study_date: str = ""


@dataclass(frozen=True)
class SeriesQuery:
    """A query filter. ``study_date`` is a DICOM date or range (``20240101-20241231``)."""

    modality: str | None = "CT"
    study_date: str | None = None
    description_regex: str | None = None
    min_instances: int = 1

    def matches(self, s: PacsSeries) -> bool:
        if self.modality and s.modality.upper() != self.modality.upper():
            return False
        if self.description_regex and not re.search(self.description_regex, s.series_description or ""):
            return False
        return s.n_instances >= self.min_instances


class PacsClient(Protocol):
    def find_series(self, query: SeriesQuery) -> list[PacsSeries]: ...
    def list_instances(self, series: PacsSeries) -> list[str]: ...
    def retrieve_series(self, series: PacsSeries, dest: Path) -> list[Path]: ...
    def store(self, files: list[Path]) -> None: ...
    def series_exists(self, study_instance_uid: str, series_instance_uid: str) -> bool: ...


def credentials_for(url: str) -> tuple[str, str] | None:
    """(user, password) from MEDSEG_PACS_USER/MEDSEG_PACS_PASSWORD, else netrc, else None."""
    user, password = os.environ.get("MEDSEG_PACS_USER"), os.environ.get("MEDSEG_PACS_PASSWORD")
    if user and password:
        return user, password
    host = urlparse(url).hostname or ""
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    if Path(path).exists():
        try:
            entry = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError) as exc:
            raise ConfigError(f"cannot read the netrc file {path}: {exc.__class__.__name__}") from None
        if entry and entry[0] and entry[2]:
            return entry[0], entry[2]
    return None


def _first(ds_json: dict, tag: str, default: str = "") -> str:
    value = ds_json.get(tag, {}).get("Value")
    if not value:
        return default
    v = value[0]
    return str(v.get("Alphabetic", "")) if isinstance(v, dict) else str(v)


class DicomWebClient:
    """QIDO-RS / WADO-RS / STOW-RS against ``url`` (e.g. ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, timeout_s: float = 60.0):
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        creds = auth if auth is not None else credentials_for(url)
        if creds:
            session.auth = creds
        self.url = url.rstrip("/")
        self._client = DICOMwebClient(url=self.url, session=session, timeout=timeout_s)

    def _call(self, what: str, fn, *args, **kwargs):
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            hint = " (check MEDSEG_PACS_USER / MEDSEG_PACS_PASSWORD or ~/.netrc)" if code in (401, 403) else ""
            raise PACSError(f"DICOMweb {what} at {self.url} failed: HTTP {code}{hint}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise PACSError(f"DICOMweb {what} at {self.url} failed: {exc.__class__.__name__}") from None

    def find_series(self, query: SeriesQuery) -> list[PacsSeries]:
        filters: dict[str, str] = {}
        if query.modality:
            filters["Modality"] = query.modality
        if query.study_date:
            filters["StudyDate"] = query.study_date
        fields = ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription",
                  "NumberOfSeriesRelatedInstances", "StudyDate"]
        found = self._call("QIDO-RS series search", self._client.search_for_series,
                           search_filters=filters, fields=fields)
        series = [
            PacsSeries(
                study_instance_uid=_first(d, "0020000D"),
                series_instance_uid=_first(d, "0020000E"),
                modality=_first(d, "00080060"),
                series_description=_first(d, "0008103E"),
                n_instances=int(_first(d, "00201209", "0") or 0),
                study_date=_first(d, "00080020"),
            )
            for d in found
        ]
        return sorted((s for s in series if query.matches(s)), key=lambda s: s.series_instance_uid)

    def list_instances(self, series: PacsSeries) -> list[str]:
        """SOP Instance UIDs of a series (QIDO-RS instance search)."""
        found = self._call("QIDO-RS instance search", self._client.search_for_instances,
                           study_instance_uid=series.study_instance_uid,
                           series_instance_uid=series.series_instance_uid, fields=["SOPInstanceUID"])
        return sorted(_first(d, "00080018") for d in found)

    def retrieve_series(self, series: PacsSeries, dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        datasets = self._call("WADO-RS retrieve", self._client.retrieve_series,
                              series.study_instance_uid, series.series_instance_uid)
        paths = []
        for ds in datasets:
            p = _instance_path(dest, ds, len(paths))
            ds.save_as(p, enforce_file_format=True)
            paths.append(p)
        return paths

    def store(self, files: list[Path]) -> None:
        import pydicom

        datasets = [pydicom.dcmread(f) for f in files]
        self._call("STOW-RS store", self._client.store_instances, datasets)

    def series_exists(self, study_instance_uid: str, series_instance_uid: str) -> bool:
        found = self._call("QIDO-RS series search", self._client.search_for_series,
                           study_instance_uid=study_instance_uid,
                           search_filters={"SeriesInstanceUID": series_instance_uid})
        return bool(found)


class DimseClient:
    """C-FIND / C-GET / C-STORE with pynetdicom against ``(host, port, called_aet)``."""

    def __init__(self, host: str, port: int, called_aet: str, *, calling_aet: str = "MEDSEG",
                 timeout_s: float = 60.0):
        self.host, self.port, self.called_aet = host, int(port), called_aet
        self.calling_aet = calling_aet
        self.timeout_s = timeout_s

    def _associate(self, contexts, roles=(), handlers=None):
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        for cx in contexts:
            ae.add_requested_context(cx)
        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, ext_neg=list(roles),
                             evt_handlers=handlers)
        if not assoc.is_established:
            raise PACSError(f"DIMSE association with {self.called_aet}@{self.host}:{self.port} was refused "
                            "or timed out")
        return assoc

    def _find(self, identifier) -> list:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        assoc = self._associate([FIND])
        try:
            out = []
            for status, ds in assoc.send_c_find(identifier, FIND):
                if status is None or "Status" not in status:
                    raise PACSError("C-FIND got no answer (time-out or association aborted by the peer)")
                if status.Status in (0xFF00, 0xFF01) and ds is not None:
                    out.append(ds)
                elif status.Status not in (0x0000, 0xFF00, 0xFF01):
                    raise PACSError(f"C-FIND failed with status 0x{status.Status:04X}")
            return out
        finally:
            assoc.release()

    def find_series(self, query: SeriesQuery) -> list[PacsSeries]:
        from pydicom.dataset import Dataset

        ident = Dataset()
        ident.QueryRetrieveLevel = "SERIES"
        ident.StudyInstanceUID = ""
        ident.SeriesInstanceUID = ""
        ident.Modality = query.modality or ""
        ident.SeriesDescription = ""
        ident.NumberOfSeriesRelatedInstances = ""
        ident.StudyDate = query.study_date or ""
        series = [
            PacsSeries(
                study_instance_uid=str(ds.get("StudyInstanceUID", "")),
                series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
                modality=str(ds.get("Modality", "")),
                series_description=str(ds.get("SeriesDescription", "")),
                n_instances=int(ds.get("NumberOfSeriesRelatedInstances", 0) or 0),
                study_date=str(ds.get("StudyDate", "")),
            )
            for ds in self._find(ident)
        ]
        return sorted((s for s in series if query.matches(s)), key=lambda s: s.series_instance_uid)

    def list_instances(self, series: PacsSeries) -> list[str]:
        """SOP Instance UIDs of a series (C-FIND at IMAGE level)."""
        from pydicom.dataset import Dataset

        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        ident.StudyInstanceUID = series.study_instance_uid
        ident.SeriesInstanceUID = series.series_instance_uid
        ident.SOPInstanceUID = ""
        return sorted(str(ds.SOPInstanceUID) for ds in self._find(ident) if "SOPInstanceUID" in ds)

    def retrieve_series(self, series: PacsSeries, dest: Path) -> list[Path]:
        from pydicom.dataset import Dataset
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import (
            CTImageStorage,
            EnhancedCTImageStorage,
            EnhancedMRImageStorage,
            MRImageStorage,
            SegmentationStorage,
        )
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        dest.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            p = _instance_path(dest, ds, len(written))
            ds.save_as(p, enforce_file_format=True)
            written.append(p)
            return 0x0000

        storage = [CTImageStorage, MRImageStorage, EnhancedCTImageStorage, EnhancedMRImageStorage,
                   SegmentationStorage]
        assoc = self._associate([GET, *storage], roles=[build_role(c, scp_role=True) for c in storage],
                                handlers=[(evt.EVT_C_STORE, on_store)])
        ident = Dataset()
        ident.QueryRetrieveLevel = "SERIES"
        ident.StudyInstanceUID = series.study_instance_uid
        ident.SeriesInstanceUID = series.series_instance_uid
        try:
            for status, _ in assoc.send_c_get(ident, GET):
                if status is None or "Status" not in status:
                    raise PACSError("C-GET got no answer (time-out or association aborted by the peer)")
                if status.Status not in (0x0000, 0xFF00, 0xFF01, 0xB000):
                    raise PACSError(f"C-GET failed with status 0x{status.Status:04X}")
        finally:
            assoc.release()
        return written

    def store(self, files: list[Path]) -> None:
        import pydicom

        datasets = [pydicom.dcmread(f) for f in files]
        assoc = self._associate(sorted({str(ds.SOPClassUID) for ds in datasets}))
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                if status is None or "Status" not in status or status.Status != 0x0000:
                    code = f"status 0x{status.Status:04X}" if status and "Status" in status else "no answer"
                    raise PACSError(f"C-STORE of a {ds.Modality} instance failed ({code})")
        finally:
            assoc.release()

    def series_exists(self, study_instance_uid: str, series_instance_uid: str) -> bool:
        from pydicom.dataset import Dataset

        ident = Dataset()
        ident.QueryRetrieveLevel = "SERIES"
        ident.StudyInstanceUID = study_instance_uid
        ident.SeriesInstanceUID = series_instance_uid
        return bool(self._find(ident))


def client_from_uri(uri: str) -> PacsClient:
    """``http(s)://host:port/dicom-web`` -> DICOMweb; ``dimse://AET@host:port`` -> DIMSE."""
    if uri.startswith(("http://", "https://")):
        return DicomWebClient(uri)
    m = re.fullmatch(r"dimse://([^@]+)@([^:/]+):(\d+)/?", uri)
    if m:
        return DimseClient(m.group(2), int(m.group(3)), m.group(1))
    raise ConfigError(f"unsupported PACS address {uri!r}: use http(s)://HOST:PORT/dicom-web or "
                      "dimse://AET@HOST:PORT")
