"""DICOMweb client for batch jobs: QIDO-RS (paged with ``limit``/``offset``), WADO-RS (streamed to
disk one instance at a time), STOW-RS. HTTPS is verified against ``--ca-bundle`` when given;
credentials come from :mod:`medseg.batch.pacs_auth`.

A failed request is one :class:`~medseg.errors.PACSError` line saying what failed: HTTP status
(401/403 with where credentials come from), TLS, connection refused, connect or read timeout. No
request is retried here (the batch runner retries a case; a query fails at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from medseg.batch.pacs import PacsOptions, PacsSeries, SeriesQuery, bounded, instance_path
from medseg.batch.pacs_auth import http_auth
from medseg.batch.pacs_errors import http_reason
from medseg.errors import PACSError

_SERIES_FIELDS = ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription",
                  "NumberOfSeriesRelatedInstances", "StudyDate", "BodyPartExamined"]


def _first(ds_json: dict, tag: str, default: str = "") -> str:
    value = ds_json.get(tag, {}).get("Value")
    if not value:
        return default
    v = value[0]
    return str(v.get("Alphabetic", "")) if isinstance(v, dict) else str(v)


def _series(d: dict) -> PacsSeries:
    try:
        n = int(_first(d, "00201209", "0") or 0)
    except ValueError:
        n = 0
    return PacsSeries(
        study_instance_uid=_first(d, "0020000D"),
        series_instance_uid=_first(d, "0020000E"),
        modality=_first(d, "00080060"),
        series_description=_first(d, "0008103E"),
        n_instances=n,
        study_date=_first(d, "00080020"),
        body_part=_first(d, "00180015"),
    )


def _verify_adapter_class():
    from requests.adapters import HTTPAdapter

    class VerifyWith(HTTPAdapter):
        """Verifies HTTPS against one CA bundle whatever the environment says."""

        def __init__(self, ca_bundle: str):
            super().__init__()
            self.ca_bundle = ca_bundle

        def send(self, request, **kwargs):
            kwargs["verify"] = self.ca_bundle
            return super().send(request, **kwargs)

    return VerifyWith


def _VerifyWith(ca_bundle: str):  # noqa: N802 - builds the adapter without importing requests at import time
    return _verify_adapter_class()(ca_bundle)


class DicomWebClient:
    """QIDO-RS / WADO-RS / STOW-RS against ``url`` (e.g. ``https://host/dicom-web``)."""

    def __init__(self, url: str, *, auth=None, options: PacsOptions | None = None,
                 timeout_s: float | None = None):
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.options = options or PacsOptions()
        if timeout_s is not None:  # one figure for both (older callers)
            self.options = replace(self.options, connect_timeout_s=timeout_s, read_timeout_s=timeout_s)
        session = requests.Session()
        session.auth = auth if auth is not None else http_auth(url, self.options.token_file)
        if self.options.ca_bundle:  # per request: requests lets REQUESTS_CA_BUNDLE override session.verify
            session.mount("https://", _VerifyWith(self.options.ca_bundle))
        self.url = url.rstrip("/")
        self._session = session
        self._client = DICOMwebClient(url=self.url, session=session,
                                      timeout=(self.options.connect_timeout_s, self.options.read_timeout_s))
        self._client.set_http_retry_params(retry=False)  # its 503 back-off took ~30 s before failing

    def _call(self, what: str, fn, *args, **kwargs):
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            hint = (" (check MEDSEG_PACS_USER / MEDSEG_PACS_PASSWORD, ~/.netrc or the bearer token)"
                    if code in (401, 403) else " (the server or a gateway in front of it is unavailable)"
                    if code in (502, 503, 504) else "")
            raise PACSError(f"DICOMweb {what} at {self.url} failed: HTTP {code}{hint}") from None
        except requests.exceptions.RequestException as exc:
            why = http_reason(exc, self.options.connect_timeout_s, self.options.read_timeout_s)
            raise PACSError(f"DICOMweb {what} at {self.url} failed: {why}") from None

    def _paged(self, what: str, fn, key: str, **kwargs) -> Iterator[dict]:
        """Every result of a QIDO-RS search, ``page_size`` per request, pulled as consumed. Stops
        when a page is short, or brings nothing new (a server that ignores ``offset``)."""
        size, offset, seen = self.options.page_size, 0, set()
        while True:
            page = self._call(what, fn, limit=size, offset=offset, **kwargs)
            fresh = [d for d in page if _first(d, key) not in seen]
            seen.update(_first(d, key) for d in fresh)
            yield from fresh
            if len(page) < size or not fresh or len(page) > size:  # > size: the server ignored limit
                return
            offset += len(page)

    def ping(self) -> None:
        """One small QIDO-RS request: raises PACSError at once when the server cannot be used."""
        self._call("QIDO-RS study search", self._client.search_for_studies, limit=1, fields=["StudyInstanceUID"])

    def iter_series(self, query: SeriesQuery) -> Iterator[PacsSeries]:
        """Series matching ``query``, page by page; nothing is fetched beyond ``query.limit``."""
        def found() -> Iterator[PacsSeries]:
            for modality in query.modalities:
                for accession in query.accession_numbers or (None,):
                    filters = {k: v for k, v in (("Modality", modality), ("StudyDate", query.study_date),
                                                 ("BodyPartExamined", query.body_part),
                                                 ("AccessionNumber", accession)) if v}
                    for d in self._paged("QIDO-RS series search", self._client.search_for_series, "0020000E",
                                         search_filters=filters, fields=_SERIES_FIELDS):
                        yield _series(d)

        return bounded(found(), query)

    def find_series(self, query: SeriesQuery) -> list[PacsSeries]:
        return list(self.iter_series(query))

    def list_instances(self, series: PacsSeries) -> list[str]:
        """SOP Instance UIDs of a series (QIDO-RS instance search, paged)."""
        found = self._paged("QIDO-RS instance search", self._client.search_for_instances, "00080018",
                            study_instance_uid=series.study_instance_uid,
                            series_instance_uid=series.series_instance_uid, fields=["SOPInstanceUID"])
        return sorted(_first(d, "00080018") for d in found)

    def retrieve_series(self, series: PacsSeries, dest: Path) -> list[Path]:
        """WADO-RS, each instance written as it arrives (a series is never held in memory whole)."""
        dest.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []

        def pull() -> None:
            for ds in self._client.iter_series(series.study_instance_uid, series.series_instance_uid):
                p = instance_path(dest, ds, len(paths))
                ds.save_as(p, enforce_file_format=True)
                paths.append(p)

        self._call("WADO-RS retrieve", pull)
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

    def close(self) -> None:
        self._session.close()
