"""PACS clients for batch jobs: DICOMweb (QIDO-RS / WADO-RS / STOW-RS, :mod:`medseg.batch.dicomweb`)
and DIMSE (C-FIND / C-GET or C-MOVE / C-STORE, :mod:`medseg.batch.dimse`). Both offer the same
small interface, :class:`PacsClient`; :func:`client_from_uri` builds one from an address and
:class:`PacsOptions`.

Credentials never come from the command line (see :mod:`medseg.batch.pacs_auth`); DIMSE uses none
(a DIMSE peer is admitted by its AE title, host and port registered on the PACS). Query results
carry UIDs, modality, description, body part and counts only: no patient data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medseg.batch.pacs_auth import credentials_for
from medseg.errors import ConfigError

__all__ = ["PacsSeries", "SeriesQuery", "PacsOptions", "PacsClient", "client_from_uri", "credentials_for",
           "instance_path"]


def instance_path(dest: Path, ds: Any, n: int) -> Path:
    """Where a retrieved instance is saved: ``<SOPInstanceUID>.dcm`` when that is a valid UID, else
    ``instance-<n>.dcm`` (a PACS answer never names a path of its own)."""
    from medseg.io.dicom.uid import path_safe_uid

    uid = str(ds.get("SOPInstanceUID", "") or "")
    name = path_safe_uid(uid)
    return dest / (f"{name}.dcm" if name == uid else f"instance-{n:06d}.dcm")


_instance_path = instance_path  # the name it had before the clients moved to their own modules


@dataclass(frozen=True)
class PacsSeries:
    """A series found on a PACS (no patient identifiers)."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str = ""
    series_description: str = ""
    n_instances: int = 0
    study_date: str = ""
    body_part: str = ""


_DATE = re.compile(r"\d{8}|\d{8}-|-\d{8}|\d{8}-\d{8}")
_CS = re.compile(r"[A-Z0-9 _]{1,16}")
_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # printable ASCII without a backslash


def check_ae_title(value: str, what: str) -> str:
    """An AE title as DICOM allows it (1-16 printable ASCII characters, no backslash, not all spaces)."""
    text = str(value)
    if not _AE.fullmatch(text) or not text.strip():
        raise ConfigError(f"{what} must be 1 to 16 printable ASCII characters without a backslash")
    return text.strip()


@dataclass(frozen=True)
class SeriesQuery:
    """What a PACS job processes.

    ``modality``: one code or several separated by commas (``CT`` / ``CR,DX,MG``), None for any.
    ``study_date``: a DICOM date or range (``20240101-20241231``, ``20240101-``, ``-20241231``).
    ``description_regex``: searched in the series description, case-insensitive.
    ``body_part``: BodyPartExamined, exact (``ABDOMEN``). ``accession_numbers``: only the studies
    with one of these accession numbers. ``limit``: stop after that many series.
    The PACS matches what it can; every filter is checked again on each answer.
    """

    modality: str | None = "CT"
    study_date: str | None = None
    description_regex: str | None = None
    body_part: str | None = None
    accession_numbers: tuple[str, ...] = ()
    min_instances: int = 1
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.study_date and not _DATE.fullmatch(self.study_date):
            raise ConfigError("--study-date must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be open)")
        for m in self.modalities:
            if m is not None and not _CS.fullmatch(m):
                raise ConfigError("--modality takes DICOM modality codes such as CT, MR, CR, DX, MG")
        if self.body_part and not _CS.fullmatch(self.body_part.upper()):
            raise ConfigError("--body-part takes a DICOM BodyPartExamined code such as CHEST or ABDOMEN")
        if self.description_regex:
            try:
                re.compile(self.description_regex)
            except re.error as exc:
                raise ConfigError(f"bad regular expression in --description: {exc}") from None
        for a in self.accession_numbers:
            if not a or len(a) > 16 or any(c in a for c in "\\*?") or not a.isprintable():
                raise ConfigError("an accession number must be 1 to 16 printable characters without \\, * or ?")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be at least 1")

    @property
    def modalities(self) -> list[str | None]:
        """The modality codes queried one after the other ([None]: any modality)."""
        if not self.modality:
            return [None]
        return [m.strip().upper() for m in self.modality.split(",") if m.strip()] or [None]

    def matches(self, s: PacsSeries) -> bool:
        wanted = [m for m in self.modalities if m]
        if wanted and s.modality.upper() not in wanted:
            return False
        if self.description_regex and not re.search(self.description_regex, s.series_description or "",
                                                    re.IGNORECASE):
            return False
        if self.body_part and s.body_part.strip().upper() != self.body_part.strip().upper():
            return False
        if self.study_date and s.study_date and not _date_in(s.study_date, self.study_date):
            return False
        return s.n_instances >= self.min_instances


def _date_in(date: str, rng: str) -> bool:
    lo, _, hi = rng.partition("-") if "-" in rng else (rng, "", rng)
    return (not lo or date >= lo) and (not hi or date <= hi)


@dataclass(frozen=True)
class PacsOptions:
    """How medseg talks to a PACS.

    Timeouts in seconds: ``connect_timeout_s`` for the TCP (and TLS) connection and the DIMSE
    association answer, ``read_timeout_s`` for each answer after that. ``page_size``: QIDO-RS
    results asked per request (``limit``/``offset``). DIMSE: ``calling_aet`` is medseg's AE title;
    ``retrieve`` is ``get`` (C-GET) or ``move`` (C-MOVE to medseg's own storage SCP, which listens
    on ``move_host:move_port`` under ``move_aet``, default the calling AE title: the PACS must
    know that AE title, host and port as a modality). DICOMweb: ``ca_bundle`` (PEM) to verify
    HTTPS; ``token_file`` for a bearer token (see :mod:`medseg.batch.pacs_auth`).
    """

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    page_size: int = 100
    calling_aet: str = "MEDSEG"
    retrieve: str = "get"
    move_aet: str | None = None
    move_port: int = 11112
    move_host: str = ""
    ca_bundle: str | None = None
    token_file: str | None = None

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ConfigError("--connect-timeout and --read-timeout must be positive (seconds)")
        if self.page_size < 1:
            raise ConfigError("the QIDO-RS page size must be at least 1")
        if self.retrieve not in ("get", "move"):
            raise ConfigError("--retrieve must be get (C-GET) or move (C-MOVE)")
        if not 0 < int(self.move_port) < 65536:
            raise ConfigError("--move-port must be a TCP port (1-65535)")
        object.__setattr__(self, "calling_aet", check_ae_title(self.calling_aet, "--calling-aet"))
        if self.move_aet is not None:
            object.__setattr__(self, "move_aet", check_ae_title(self.move_aet, "--move-aet"))
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ConfigError(f"--ca-bundle {Path(self.ca_bundle).name} is not a file")


class PacsClient(Protocol):
    def ping(self) -> None: ...
    def iter_series(self, query: SeriesQuery) -> Iterator[PacsSeries]: ...
    def find_series(self, query: SeriesQuery) -> list[PacsSeries]: ...
    def list_instances(self, series: PacsSeries) -> list[str]: ...
    def retrieve_series(self, series: PacsSeries, dest: Path) -> list[Path]: ...
    def store(self, files: list[Path]) -> None: ...
    def series_exists(self, study_instance_uid: str, series_instance_uid: str) -> bool: ...
    def close(self) -> None: ...


def bounded(found: Iterator[PacsSeries], query: SeriesQuery) -> Iterator[PacsSeries]:
    """``found`` filtered by ``query`` (again: a PACS may ignore a key), each series once, at most
    ``query.limit``; stops pulling from ``found`` (the next page) once the limit is reached."""
    seen: set[str] = set()
    for s in found:
        if s.series_instance_uid in seen or not query.matches(s):
            continue
        seen.add(s.series_instance_uid)
        yield s
        if query.limit is not None and len(seen) >= query.limit:
            return


def client_from_uri(uri: str, options: PacsOptions | None = None) -> PacsClient:
    """``http(s)://host:port/dicom-web`` -> DICOMweb; ``dimse://AET@host:port`` -> DIMSE."""
    options = options or PacsOptions()
    if uri.startswith(("http://", "https://")):
        from medseg.batch.dicomweb import DicomWebClient

        return DicomWebClient(uri, options=options)
    m = re.fullmatch(r"dimse://([^@/]+)@([^:/@]+):(\d+)/?", uri)
    if m:
        from medseg.batch.dimse import DimseClient

        return DimseClient(m.group(2), int(m.group(3)), check_ae_title(m.group(1), "the called AE title"),
                           options=options)
    raise ConfigError("unsupported PACS address: use http(s)://HOST:PORT/dicom-web or dimse://AET@HOST:PORT")


def __getattr__(name: str) -> Any:  # the clients live in their own modules; importable from here too
    if name == "DicomWebClient":
        from medseg.batch.dicomweb import DicomWebClient

        return DicomWebClient
    if name == "DimseClient":
        from medseg.batch.dimse import DimseClient

        return DimseClient
    raise AttributeError(name)
