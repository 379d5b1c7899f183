"""DIMSE client for batch jobs (pynetdicom): C-FIND, retrieval by C-GET or C-MOVE, C-STORE.

* ``calling_aet`` (``--calling-aet``) is medseg's AE title; the PACS admits it by that title (and
  usually host and port) in its modality table. DIMSE carries no HTTP credentials.
* C-MOVE: many PACS only send to a registered destination. medseg then runs its own storage SCP
  (:class:`StoreSCP`, ``--move-aet``/``--move-port``) for as long as the client lives; each
  instance it receives goes to the retrieval waiting for that series, anything else is refused.
* Accepted storage classes: CT, MR, enhanced CT/MR, SEG and the radiographs CR, DX, MG.
* A failure says what failed: association rejected (with the result, source and reason the PACS
  gave), connection refused, connect timeout, no answer, a status with its meaning, sub-operations
  that failed (a partial series is never handed on).

Size (~400 lines): one concern, the DIMSE conversation of one client; ``DimseClient`` holds the
association settings, the storage SCP and the retry/status handling every operation shares.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medseg.batch.pacs import PacsOptions, PacsSeries, SeriesQuery, bounded, instance_path
from medseg.batch.pacs_errors import probe_tcp
from medseg.errors import PACSError

STORAGE_CLASSES = (
    "CTImageStorage", "MRImageStorage", "EnhancedCTImageStorage", "EnhancedMRImageStorage", "SegmentationStorage",
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing", "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing",
)
_OK_PENDING = (0x0000, 0xFF00, 0xFF01)


def _storage_uids() -> list[str]:
    from pynetdicom import sop_class

    return [getattr(sop_class, n) for n in STORAGE_CLASSES]


def _status_text(table: str, code: int) -> str:
    import pynetdicom.status as st

    meaning = getattr(st, table, {}).get(code) or st.GENERAL_STATUS.get(code)
    return f"status 0x{code:04X}" + (f" ({meaning[0]}: {meaning[1]})" if meaning else "")


class StoreSCP:
    """medseg's storage SCP, the destination of its C-MOVE requests. Instances are accepted only
    for a series a retrieval is waiting for (:meth:`expect`)."""

    def __init__(self, aet: str, host: str, port: int):
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

        ae = AE(ae_title=aet)
        ae.require_called_aet = True
        for uid in _storage_uids():
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        self.aet, self.port = aet, port
        self._pending: dict[str, tuple[Path, list[Path]]] = {}
        self._lock = threading.Lock()
        try:
            self._server = ae.start_server((host, port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        except OSError as exc:
            raise PACSError(f"medseg's C-MOVE destination cannot listen on port {port}: "
                            f"{exc.strerror or type(exc).__name__} (choose another with --move-port)") from None

    def _on_store(self, event) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            uid = str(ds.get("SeriesInstanceUID", ""))
        except Exception:  # noqa: BLE001 - a peer's undecodable data set: refuse it, keep serving
            return 0xC210
        with self._lock:
            sink = self._pending.get(uid)
            if sink is None:
                return 0xC211  # refused: no retrieval is waiting for this series
            dest, written = sink
            path = instance_path(dest, ds, len(written))
            written.append(path)
        try:
            ds.save_as(path, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - reported to the PACS as a failed sub-operation
            with self._lock:
                written.remove(path)
            return 0xA700
        return 0x0000

    @contextmanager
    def expect(self, series_instance_uid: str, dest: Path) -> Iterator[list[Path]]:
        """Route the instances of ``series_instance_uid`` to ``dest`` while the block runs."""
        written: list[Path] = []
        with self._lock:
            if series_instance_uid in self._pending:
                raise PACSError("this series is already being retrieved by C-MOVE")
            self._pending[series_instance_uid] = (dest, written)
        try:
            yield written
        finally:
            with self._lock:
                self._pending.pop(series_instance_uid, None)

    def close(self) -> None:
        self._server.shutdown()


class DimseClient:
    """C-FIND / C-GET or C-MOVE / C-STORE against the PACS ``called_aet`` at ``host:port``."""

    def __init__(self, host: str, port: int, called_aet: str, *, options: PacsOptions | None = None,
                 calling_aet: str | None = None, timeout_s: float | None = None):
        from dataclasses import replace

        options = options or PacsOptions()
        if calling_aet is not None:
            options = replace(options, calling_aet=calling_aet)
        if timeout_s is not None:
            options = replace(options, connect_timeout_s=timeout_s, read_timeout_s=timeout_s)
        self.options = options
        self.host, self.port, self.called_aet = host, int(port), called_aet
        self.calling_aet = options.calling_aet
        self._scp: StoreSCP | None = None
        self._scp_lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"{self.calling_aet} -> {self.called_aet}@{self.host}:{self.port}"

    # -- association --------------------------------------------------------------------------------
    def _associate(self, contexts, roles=(), handlers=None):
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

        o = self.options
        ae = AE(ae_title=self.calling_aet)
        ae.connection_timeout = o.connect_timeout_s
        ae.acse_timeout = o.connect_timeout_s
        ae.dimse_timeout = ae.network_timeout = o.read_timeout_s
        storage = set(_storage_uids())
        for cx in contexts:
            ae.add_requested_context(cx, ALL_TRANSFER_SYNTAXES if cx in storage and roles else None)
        seen: dict[str, object] = {}

        def on_open(event) -> None:
            seen["open"] = True

        def on_acse(event) -> None:
            p = event.primitive
            if getattr(p, "result", None) in (0x01, 0x02):
                seen["rejected"] = (p.result_str, p.source_str, p.reason_str)
            elif getattr(p, "result", None) == 0x00:
                seen["accepted"] = True

        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, ext_neg=list(roles),
                             evt_handlers=[*(handlers or []), (evt.EVT_CONN_OPEN, on_open),
                                           (evt.EVT_ACSE_RECV, on_acse)])
        if assoc.is_established:
            return assoc
        raise PACSError(self._why_no_association(seen))

    def _why_no_association(self, seen: dict) -> str:
        if "rejected" in seen:
            result, source, reason = seen["rejected"]
            hint = ""
            if "calling" in reason.lower():
                hint = f"; the PACS does not know medseg's AE title {self.calling_aet} (register it, or --calling-aet)"
            elif "called" in reason.lower():
                hint = f"; the PACS is not called {self.called_aet} (the AE title in dimse://AET@HOST:PORT)"
            return f"DIMSE association {self.where} rejected by the PACS: {reason} ({result}, {source}){hint}"
        if "open" not in seen:
            why = probe_tcp(self.host, self.port, self.options.connect_timeout_s) or "could not connect"
            return f"DIMSE connection to {self.host}:{self.port} failed: {why}"
        if "accepted" in seen:
            return (f"DIMSE association {self.where}: the PACS accepted none of the requested services "
                    "(SOP classes / transfer syntaxes)")
        return (f"DIMSE association {self.where}: no association answer within {self.options.connect_timeout_s:g} s, "
                "or the PACS aborted it (a peer it does not admit? --connect-timeout)")

    # -- C-FIND -------------------------------------------------------------------------------------
    def _no_answer(self, what: str, assoc, t0: float) -> PACSError:
        """Why a request got no status: a read timeout, or (sooner) a PACS that refused it outright."""
        if time.monotonic() - t0 < 0.9 * self.options.read_timeout_s or assoc.is_aborted:
            return PACSError(f"{what} refused by the PACS ({self.where}) without a status: it may not allow AE "
                             f"title {self.calling_aet} this request (register medseg's AE title, host and port "
                             "on the PACS, or --calling-aet)")
        return PACSError(f"{what} got no answer within {self.options.read_timeout_s:g} s (read timeout; --read-timeout)")

    def _find_on(self, assoc, identifier, model) -> Iterator:
        t0 = time.monotonic()
        for status, ds in assoc.send_c_find(identifier, model):
            if status is None or "Status" not in status:
                raise self._no_answer("C-FIND", assoc, t0)
            t0 = time.monotonic()
            if status.Status in (0xFF00, 0xFF01):
                if ds is not None:
                    yield ds
            elif status.Status != 0x0000:
                raise PACSError(f"C-FIND failed: {_status_text('QR_FIND_SERVICE_CLASS_STATUS', status.Status)}")

    @contextmanager
    def _find_association(self):
        """An association for C-FINDs; aborted (not released) when left before the last answer."""
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        assoc = self._associate([FIND])
        complete = False
        try:
            yield assoc, FIND
            complete = True
        finally:
            assoc.release() if complete else assoc.abort()

    def _find(self, identifier) -> list:
        with self._find_association() as (assoc, model):
            return list(self._find_on(assoc, identifier, model))

    @staticmethod
    def _series_identifier(query: SeriesQuery, modality: str | None, study_uid: str = ""):
        from pydicom.dataset import Dataset

        ident = Dataset()
        ident.QueryRetrieveLevel = "SERIES"
        ident.StudyInstanceUID = study_uid
        ident.SeriesInstanceUID = ""
        ident.Modality = modality or ""
        ident.SeriesDescription = ""
        ident.NumberOfSeriesRelatedInstances = ""
        ident.StudyDate = query.study_date or ""
        ident.BodyPartExamined = query.body_part.upper() if query.body_part else ""
        return ident

    def iter_series(self, query: SeriesQuery) -> Iterator[PacsSeries]:
        """Series matching ``query``. With accession numbers, a STUDY-level C-FIND finds each study
        first; the association is aborted once ``query.limit`` series are found."""
        from pydicom.dataset import Dataset

        def found() -> Iterator[PacsSeries]:
            with self._find_association() as (assoc, model):
                for modality in query.modalities:
                    if query.accession_numbers:
                        studies = []
                        for accession in query.accession_numbers:
                            ident = Dataset()
                            ident.QueryRetrieveLevel = "STUDY"
                            ident.StudyInstanceUID = ""
                            ident.AccessionNumber = accession
                            ident.StudyDate = query.study_date or ""
                            studies += [str(d.StudyInstanceUID) for d in self._find_on(assoc, ident, model)
                                        if d.get("StudyInstanceUID")]
                        idents = [self._series_identifier(query, modality, uid) for uid in dict.fromkeys(studies)]
                    else:
                        idents = [self._series_identifier(query, modality)]
                    for ident in idents:
                        for ds in self._find_on(assoc, ident, model):
                            yield _series(ds)

        return bounded(found(), query)

    def ping(self) -> None:
        """A C-FIND that matches nothing: raises PACSError at once when the PACS cannot be queried
        (unreachable, association rejected, or this AE title not allowed to query)."""
        from pydicom.dataset import Dataset

        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = "2.25.0"
        self._find(ident)

    def find_series(self, query: SeriesQuery) -> list[PacsSeries]:
        return list(self.iter_series(query))

    def list_instances(self, series: PacsSeries) -> list[str]:
        """SOP Instance UIDs of a series (C-FIND at IMAGE level)."""
        from pydicom.dataset import Dataset

        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        ident.StudyInstanceUID = series.study_instance_uid
        ident.SeriesInstanceUID = series.series_instance_uid
        ident.SOPInstanceUID = ""
        return sorted(str(ds.SOPInstanceUID) for ds in self._find(ident) if "SOPInstanceUID" in ds)

    def series_exists(self, study_instance_uid: str, series_instance_uid: str) -> bool:
        from pydicom.dataset import Dataset

        ident = Dataset()
        ident.QueryRetrieveLevel = "SERIES"
        ident.StudyInstanceUID = study_instance_uid
        ident.SeriesInstanceUID = series_instance_uid
        return bool(self._find(ident))

    # -- retrieval ----------------------------------------------------------------------------------
    def retrieve_series(self, series: PacsSeries, dest: Path) -> list[Path]:
        """The instances of ``series`` into ``dest`` by C-GET or C-MOVE (``options.retrieve``)."""
        from pydicom.dataset import Dataset

        dest.mkdir(parents=True, exist_ok=True)
        ident = Dataset()
        ident.QueryRetrieveLevel = "SERIES"
        ident.StudyInstanceUID = series.study_instance_uid
        ident.SeriesInstanceUID = series.series_instance_uid
        if self.options.retrieve == "move":
            with self.store_scp().expect(series.series_instance_uid, dest) as written:
                self._c_move(ident, written)
                return list(written)
        return self._c_get(ident, dest)

    def _c_get(self, ident, dest: Path) -> list[Path]:
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        written: list[Path] = []

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            p = instance_path(dest, ds, len(written))
            ds.save_as(p, enforce_file_format=True)
            written.append(p)
            return 0x0000

        storage = _storage_uids()
        assoc = self._associate([GET, *storage], roles=[build_role(c, scp_role=True) for c in storage],
                                handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            last = self._follow("C-GET", "QR_GET_SERVICE_CLASS_STATUS", assoc.send_c_get(ident, GET), assoc)
        finally:
            assoc.release()
        self._check_complete("C-GET", last, len(written))
        return written

    def _c_move(self, ident, written: list[Path]) -> None:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        scp = self.store_scp()
        assoc = self._associate([MOVE])
        try:
            last = self._follow("C-MOVE", "QR_MOVE_SERVICE_CLASS_STATUS", assoc.send_c_move(ident, scp.aet, MOVE),
                                assoc)
        finally:
            assoc.release()
        self._check_complete("C-MOVE", last, len(written))

    def _follow(self, what: str, table: str, responses, assoc) -> object:
        last, t0 = None, time.monotonic()
        for status, _ in responses:
            if status is None or "Status" not in status:
                raise self._no_answer(what, assoc, t0)
            last, t0 = status, time.monotonic()
            code = status.Status
            if code not in _OK_PENDING and code != 0xB000:
                hint = ""
                if what == "C-MOVE":
                    scp = self.store_scp()
                    hint = (f"; does the PACS know the destination {scp.aet} (AE title {scp.aet}, this host, port "
                            f"{scp.port}, registered as a modality on the PACS)?")
                raise PACSError(f"{what} failed: {_status_text(table, code)}{hint}")
        return last

    @staticmethod
    def _check_complete(what: str, last, n_received: int) -> None:
        failed = int(getattr(last, "NumberOfFailedSuboperations", 0) or 0) if last is not None else 0
        if failed or (last is not None and last.Status == 0xB000):
            raise PACSError(f"{what} incomplete: {failed} instance(s) not received, {n_received} received "
                            "(a partial series is not segmented)")
        if n_received == 0:
            raise PACSError(f"{what} retrieved no instance (a storage class medseg does not accept, or an empty series)")

    def store_scp(self) -> StoreSCP:
        """medseg's C-MOVE destination, started on first use and kept until :meth:`close`."""
        with self._scp_lock:
            if self._scp is None:
                o = self.options
                self._scp = StoreSCP(o.move_aet or o.calling_aet, o.move_host, o.move_port)
            return self._scp

    # -- C-STORE ------------------------------------------------------------------------------------
    def store(self, files: list[Path]) -> None:
        import pydicom

        datasets = [pydicom.dcmread(f) for f in files]
        assoc = self._associate(sorted({str(ds.SOPClassUID) for ds in datasets}))
        try:
            for ds in datasets:
                t0 = time.monotonic()
                status = assoc.send_c_store(ds)
                if status is None or "Status" not in status:
                    raise self._no_answer(f"C-STORE of a {ds.Modality} instance", assoc, t0)
                if status.Status != 0x0000:
                    raise PACSError(f"C-STORE of a {ds.Modality} instance failed: "
                                    f"{_status_text('STORAGE_SERVICE_CLASS_STATUS', status.Status)}")
        finally:
            assoc.release()

    def close(self) -> None:
        with self._scp_lock:
            if self._scp is not None:
                self._scp.close()
                self._scp = None


def _series(ds) -> PacsSeries:
    try:
        n = int(ds.get("NumberOfSeriesRelatedInstances", 0) or 0)
    except (TypeError, ValueError):
        n = 0
    return PacsSeries(
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        n_instances=n,
        study_date=str(ds.get("StudyDate", "")),
        body_part=str(ds.get("BodyPartExamined", "") or ""),
    )
