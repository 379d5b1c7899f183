"""A batch segmentation job: cases from a folder, a CSV or a PACS, segmented with one model,
outputs per case under ``OUTPUT/<case>/``, optionally the DICOM SEG stored back to the PACS.

Case folders: ``OUTPUT/<case>/`` is named exactly as ``medseg segment`` names it (the folder
``segment_file`` returns is moved as is), unless a CSV manifest gives the case a name. A folder
that holds the finished output of another input is never replaced: that case fails with a reason.

Idempotence across crashes: the SEG's Series and SOP Instance UIDs are derived from the case key
(input identity + weights sha256), so a case redone after a crash produces the same SEG instance,
and store-back first asks the PACS whether that series is already there.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.batch.manifest import CaseRecord, Manifest, merge_manifests
from medseg.batch.runner import (
    ALREADY_STORED,
    NOT_SENT,
    STORED,
    BatchCase,
    BatchSummary,
    CaseResult,
    done_case_folders,
    journal_paths,
    latest_done_records,
    run_batch,
    store_outcome,
)
from medseg.batch.sources import DicomSeriesInput, FileInput, PacsInput
from medseg.errors import ConfigError, InputError, PACSError
from medseg.io.atomic import check_writable_dir


def seg_uids_for(key: str) -> tuple[str, str]:
    """Deterministic (SeriesInstanceUID, SOPInstanceUID) for the SEG of case ``key`` (2.25 UUID form)."""
    return (f"2.25.{int(key[:30], 16)}", f"2.25.{int(key[30:60], 16)}")


def rtstruct_uids_for(key: str) -> tuple[str, str]:
    """The same for the RT structure set of case ``key`` (other UIDs than the SEG's)."""
    import hashlib

    return seg_uids_for(hashlib.sha256(f"rtstruct:{key}".encode()).hexdigest())


#: What store-back sends from a case folder, in this order (each at most once).
_STORED_FILES = ("seg.dcm", "rtstruct.dcm")


@dataclass
class JobOptions:
    output_dir: Path
    formats: tuple[str, ...] = ("nifti", "dicom-seg", "png")
    device: str = "auto"
    tta: bool = False
    amp: bool = True
    store_back: bool = False
    resume: bool = True
    workers: int = 1
    retries: int = 2
    backoff_s: float = 2.0
    progress: bool = True
    statistics: bool = False
    strict: bool = False


def _store_seg(final: Path, client, why_no_seg: str = "",
               known: dict[str, tuple[str, str]] | None = None) -> dict[str, object]:
    """Send ``final/seg.dcm`` (and ``rtstruct.dcm`` when the case has one) to the PACS unless it
    is already there; the ``extra`` to record.

    ``extra["stored"]`` is ``stored`` (something was sent), ``already on the PACS`` or ``not sent:
    <why>`` (see :func:`medseg.batch.runner.store_outcome`); a PACS error propagates (the runner
    retries it; what reached the PACS before is found there on the retry, never sent twice).
    ``known``: file name -> (StudyInstanceUID, SeriesInstanceUID) of what this run just wrote (from
    its :class:`~medseg.inference.result.SegmentationResult`); other files' headers are read (a
    folder left for review may have been changed).
    """
    import pydicom

    files = [final / name for name in _STORED_FILES if (final / name).is_file()]
    if not files:
        return {"stored": f"{NOT_SENT}: {why_no_seg or 'no seg.dcm in the case folder (removed at review?)'}"}
    t = time.perf_counter()
    extra: dict[str, object] = {}
    sent = False
    for f in files:
        if known and f.name in known:
            study, series = known[f.name]
        else:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        if not client.series_exists(study, series):
            client.store([f])
            sent = True
        key = "seg_series_instance_uid" if f.name == "seg.dcm" else "rtstruct_series_instance_uid"
        extra[key] = series
    return {"stored": STORED if sent else ALREADY_STORED, **extra, "store_s": round(time.perf_counter() - t, 3)}


def _not_on_pacs(record: CaseRecord) -> bool:
    return store_outcome(record.extra) not in (STORED, ALREADY_STORED)


def run_job(cases: Sequence[BatchCase], model, options: JobOptions, *, client=None) -> BatchSummary:
    """Segment ``cases`` with ``model`` (a :class:`medseg.inference.SegmentationModel`).

    Resume goes per step: a case segmented by an earlier run without ``--store-back`` (to review
    its results first) is finished now only by sending its SEG, from its case folder as the review
    left it; nothing is segmented again.
    """
    from medseg.inference.pipeline import segment_file

    if options.store_back and client is None:
        raise ConfigError("--store-back needs a PACS source (--pacs URL)")
    out = check_writable_dir(options.output_dir, "--output")
    out.mkdir(parents=True, exist_ok=True)
    owners = done_case_folders(out)  # folder name -> key of the input whose finished output it holds
    owners_lock = threading.Lock()
    owed_store = ({k: r for k, r in latest_done_records(out).items() if _not_on_pacs(r)}
                  if options.store_back and options.resume else {})

    def claim(name: str, key: str) -> Path:
        """The final folder for case ``key``; refuses one holding another input's finished output."""
        final = out / name
        with owners_lock:
            owner = owners.get(name)
            if owner is not None and owner != key and final.exists():
                raise InputError(f"case folder {name} already holds the finished output of another input; "
                                 "give this input its own 'case' in a CSV manifest, or remove that folder")
            owners[name] = key
        return final

    writers = []
    if options.statistics:
        from medseg.evaluation.statistics import write_statistics

        writers.append(write_statistics)

    def store_only(prior: CaseRecord) -> CaseResult:
        final = out / prior.case
        extra = {**prior.extra, **_store_seg(final, client, prior.reason)}
        outputs = {p.name: str(p) for p in sorted(final.iterdir())}
        return CaseResult(outputs=outputs, timings_s={"store": float(extra.get("store_s", 0.0))}, extra=extra,
                          case=prior.case, reason=prior.reason)

    def process(case: BatchCase, key: str) -> CaseResult:
        prior = owed_store.get(key)
        if prior is not None and (out / prior.case).is_dir():
            return store_only(prior)
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        work = out / f".work-{key[:16]}.part"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            payload = case.payload
            series = None
            if isinstance(payload, PacsInput):
                from medseg.batch.pacs import PacsSeries

                t = time.perf_counter()
                client.retrieve_series(PacsSeries(payload.study_instance_uid, payload.series_instance_uid,
                                                  payload.modality, n_instances=payload.n_instances),
                                       work / "input")
                timings["retrieve"] = time.perf_counter() - t
                input_path = work / "input"
            elif isinstance(payload, DicomSeriesInput):
                input_path, series = payload.root, payload.selector
            elif isinstance(payload, FileInput):
                input_path = payload.path
            else:  # pragma: no cover - sources only build the three kinds above
                raise ConfigError(f"unknown case payload {type(payload).__name__}")
            result = segment_file(input_path, model, work / "out", formats=options.formats,
                                  device=options.device, tta=options.tta, series=series,
                                  seg_uids=seg_uids_for(key), rtstruct_uids=rtstruct_uids_for(key),
                                  progress=False, amp=options.amp,
                                  extra_writers=writers, strict=options.strict)
            final = claim(case.case if case.explicit_name else result.case, key)
            if final.exists():  # left by an interrupted run of this same case (not done in the journal)
                shutil.rmtree(final)
            os.replace(result.path, final)
            result = result.moved_to(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)

        # what was written comes from the result, not from reading the case folder back
        outputs = {name: str(p) for name, p in sorted(result.files.items())}
        reason = ""
        extra: dict[str, object] = {}
        timings.update({f"segment.{k}": v for k, v in result.timings_s.items()})
        if result.domain_flags:
            extra["domain_flags"] = result.domain_flags
        seg_reason = result.skipped.get("dicom-seg")
        if seg_reason and "dicom-seg" in options.formats:
            reason = f"no DICOM SEG written: {seg_reason}"
        rt_reason = result.skipped.get("rtstruct")
        if rt_reason and "rtstruct" in options.formats:
            reason = "; ".join(r for r in (reason, f"no RT structure set written: {rt_reason}") if r)
        known = {name: (result.study_instance_uid or "", uids[0]) for name, uids in
                 (("seg.dcm", result.seg_uids), ("rtstruct.dcm", result.rtstruct_uids)) if uids}
        stats = result.records.get("statistics.json")
        if options.statistics and stats is not None:  # the manifest's mL column set
            extra["volume_ml"] = stats.volumes_ml()
        if options.store_back:
            extra.update(_store_seg(final, client, reason or "no DICOM SEG was asked for (--format)", known))
            timings["store"] = float(extra.get("store_s", 0.0))
        timings["total"] = time.perf_counter() - t0
        return CaseResult(outputs=outputs, timings_s=timings, extra=extra, case=final.name, reason=reason)

    return run_batch(cases, process, output_dir=out, weights_sha256=model.weights_sha256 or "unknown",
                     resume=options.resume, workers=options.workers, retries=options.retries,
                     backoff_s=options.backoff_s, progress=options.progress,
                     unfinished=_not_on_pacs if options.store_back else None)


def store_results(output_dir: str | os.PathLike[str], client, *, retries: int = 2,
                  backoff_s: float = 2.0) -> BatchSummary:
    """``medseg batch SOURCE --output OUT --store-only``: send the SEGs a reviewed output folder holds.

    Every case whose latest ``done`` record has not reached the PACS is sent from its case folder
    as it is now (a reviewer may have removed a ``seg.dcm``: that case is reported as not sent);
    already stored cases are skipped. Each outcome is journalled like a batch run's.
    """
    out = Path(output_dir)
    if not (out / "manifest.jsonl").is_file() and not any(out.glob("manifest.rank*.jsonl")):
        raise ConfigError(f"{out.name} holds no manifest.jsonl: --store-only sends what a `medseg batch` "
                          "output folder holds")
    summary = BatchSummary()
    journal = Manifest(out / "manifest.rank0.jsonl")
    t_start = time.monotonic()
    for key, prior in sorted(latest_done_records(out).items(), key=lambda kv: kv[1].case):
        if not _not_on_pacs(prior):
            summary.skipped += 1
            continue
        final = out / prior.case
        for attempt in range(retries + 1):
            try:
                extra = {**prior.extra, **_store_seg(final, client, prior.reason)} if final.is_dir() else \
                    {**prior.extra, "stored": f"{NOT_SENT}: the case folder is gone"}
                break
            except PACSError as exc:
                if attempt == retries:
                    extra = {**prior.extra, "stored": f"{NOT_SENT}: {' '.join(str(exc).split())}"}
                else:
                    time.sleep(backoff_s * 2 ** attempt)
        record = CaseRecord(key, prior.case, "done", reason=prior.reason, outputs=prior.outputs,
                            timings_s={"store": float(extra.get("store_s", 0.0))}, extra=extra)
        journal.append(record)
        summary.done += 1
        summary.count_store(prior.case, extra)
    summary.seconds = time.monotonic() - t_start
    summary.manifest = merge_manifests(journal_paths(out), out / "manifest.jsonl")
    return summary
