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

import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.batch.runner import BatchCase, BatchSummary, CaseResult, done_case_folders, run_batch
from medseg.batch.sources import DicomSeriesInput, FileInput, PacsInput
from medseg.errors import ConfigError, InputError
from medseg.io.atomic import check_writable_dir


def seg_uids_for(key: str) -> tuple[str, str]:
    """Deterministic (SeriesInstanceUID, SOPInstanceUID) for the SEG of case ``key`` (2.25 UUID form)."""
    return (f"2.25.{int(key[:30], 16)}", f"2.25.{int(key[30:60], 16)}")


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


def run_job(cases: Sequence[BatchCase], model, options: JobOptions, *, client=None) -> BatchSummary:
    """Segment ``cases`` with ``model`` (a :class:`medseg.inference.SegmentationModel`)."""
    from medseg.inference.pipeline import segment_file

    if options.store_back and client is None:
        raise ConfigError("--store-back needs a PACS source (--pacs URL)")
    out = check_writable_dir(options.output_dir, "--output")
    out.mkdir(parents=True, exist_ok=True)
    owners = done_case_folders(out)  # folder name -> key of the input whose finished output it holds
    owners_lock = threading.Lock()

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

    def process(case: BatchCase, key: str) -> CaseResult:
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
                client.retrieve_series(PacsSeries(payload.study_instance_uid, payload.series_instance_uid),
                                       work / "input")
                timings["retrieve"] = time.perf_counter() - t
                input_path = work / "input"
            elif isinstance(payload, DicomSeriesInput):
                input_path, series = payload.root, payload.selector
            elif isinstance(payload, FileInput):
                input_path = payload.path
            else:  # pragma: no cover - sources only build the three kinds above
                raise ConfigError(f"unknown case payload {type(payload).__name__}")
            produced = segment_file(input_path, model, work / "out", formats=options.formats,
                                    device=options.device, tta=options.tta, series=series,
                                    seg_uids=seg_uids_for(key), progress=False, amp=options.amp)
            final = claim(case.case if case.explicit_name else produced.name, key)
            if final.exists():  # left by an interrupted run of this same case (not done in the journal)
                shutil.rmtree(final)
            os.replace(produced, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)

        outputs = {p.name: str(p) for p in sorted(final.iterdir())}
        extra: dict[str, object] = {}
        seg = final / "seg.dcm"
        if options.store_back and seg.exists():
            import pydicom

            ds = pydicom.dcmread(seg, stop_before_pixels=True)
            t = time.perf_counter()
            if client.series_exists(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)):
                extra["stored"] = "already on the PACS"
            else:
                client.store([seg])
                extra["stored"] = "stored"
            extra["seg_series_instance_uid"] = str(ds.SeriesInstanceUID)
            timings["store"] = time.perf_counter() - t
        prov = final / "provenance.json"
        reason = ""
        if prov.exists():
            record = json.loads(prov.read_text())
            timings.update({f"segment.{k}": v for k, v in record["timings_s"].items()})
            seg_reason = (record.get("output", {}).get("skipped") or {}).get("dicom-seg")
            if seg_reason and "dicom-seg" in options.formats:
                reason = f"no DICOM SEG written: {seg_reason}"
        timings["total"] = time.perf_counter() - t0
        return CaseResult(outputs=outputs, timings_s=timings, extra=extra, case=final.name, reason=reason)

    return run_batch(cases, process, output_dir=out, weights_sha256=model.weights_sha256 or "unknown",
                     resume=options.resume, workers=options.workers, retries=options.retries,
                     backoff_s=options.backoff_s, progress=options.progress)
