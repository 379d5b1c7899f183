"""One study in, one case folder out: what ``medseg segment`` runs.

``DIR/<case>/`` holds ``seg.nii.gz`` (labels on the source grid), ``seg.dcm`` (DICOM SEG, DICOM
inputs only), ``rtstruct.dcm`` (RT Structure Set, with ``--format rtstruct``), ``overlay.png`` and
``provenance.json``. A SEG is written only when it can be valid:
a source without the UIDs a SEG must reference (anonymised) or a non-DICOM input gets no
``seg.dcm``, and ``provenance.json`` says why under ``output.skipped`` (``medseg segment`` prints
it). The case folder is written atomically: a failure leaves no folder behind. ``<case>`` is the input file name without its suffix, or
``series-<SeriesInstanceUID>`` for DICOM (folder names of DICOM exports often carry patient
names, so they are never reused). Provenance holds no patient name, ID or birth date.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError
from medseg.geometry import Geometry
from medseg.inference.model import SegmentationModel, sha256_file
from medseg.inference.record import provenance
from medseg.inference.result import SegmentationResult

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom-seg", "png", "rtstruct")
_SYNTHETIC_KEY = re.compile(r"(anon|invalid-uid)-[0-9a-f]{16}")  # the DICOM reader's own series keys


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"nifti,dicom-seg,png,rtstruct"`` -> a checked tuple (ConfigError for unknown names)."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = tuple(dict.fromkeys(f.strip().lower() for f in items if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise ConfigError(f"unknown output format(s) {', '.join(bad) or '(none)'}; choose from {', '.join(FORMATS)}")
    return out


def resolve_model(source: Any, *, trust: bool = False,
                  model_loader: Callable[..., SegmentationModel] | None = None,
                  nnunet: Any = None, tta: bool = False) -> tuple[Any, str]:
    """Turn what ``--model`` names into a model; returns ``(model, kind)``.

    ``source`` is a :class:`SegmentationModel` or a model source object (kind ``"object"``), an
    nnU-Net v2 trained-model folder (``plans.json`` + ``dataset.json`` + ``fold_*``: kind
    ``"nnunet_v2"``, options from ``nnunet``, a
    :class:`~medseg.inference.sources.nnunet.NnunetOptions`), a training run folder
    (``model_spec.json``: ``"run_dir"``), a bundle name/folder loaded by ``model_loader``
    (``"bundle"``), or a list of these, run as one model (``"combined"``, see
    :mod:`medseg.inference.sources.combined`; ``tta`` then applies to the medseg models in it).
    nnU-Net options given without an nnU-Net model are refused (ConfigError).
    """
    from medseg.inference.sources.nnunet import NnunetOptions

    opts = nnunet if nnunet is not None else NnunetOptions()
    if isinstance(source, (list, tuple)):
        items = list(source)
        if not items:
            raise ConfigError("no model given")
        if len(items) == 1:
            return resolve_model(items[0], trust=trust, model_loader=model_loader, nnunet=nnunet, tta=tta)
        from medseg.inference.sources.combined import CombinedSource
        from medseg.inference.sources.medseg_model import MedsegModelSource

        parts = []
        for item in items:
            model, kind = _resolve_one(item, trust=trust, model_loader=model_loader, opts=opts)
            parts.append(MedsegModelSource(model, kind, tta=tta) if isinstance(model, SegmentationModel) else model)
        if not opts.is_default and not any(getattr(p, "kind", "") == "nnunet_v2" for p in parts):
            raise ConfigError(_NNUNET_ONLY)
        return CombinedSource(parts), "combined"
    model, kind = _resolve_one(source, trust=trust, model_loader=model_loader, opts=opts)
    if not opts.is_default and kind != "nnunet_v2" and getattr(model, "kind", "") not in ("nnunet_v2", "combined"):
        raise ConfigError(_NNUNET_ONLY)
    return model, kind


_NNUNET_ONLY = "--folds, --checkpoint, --disable-tta and --step-size apply to nnU-Net v2 model folders only"


def _resolve_one(source: Any, *, trust: bool, model_loader: Callable[..., SegmentationModel] | None,
                 opts: Any) -> tuple[Any, str]:
    from medseg.inference.sources.base import ModelSource, detect_kind

    if isinstance(source, SegmentationModel) or isinstance(source, ModelSource):
        return source, "object"
    path = Path(source)
    kind = detect_kind(path)
    if kind == "nnunet_v2":
        from medseg.inference.sources.nnunet import NnunetV2Source, require_nnunet

        require_nnunet(path)
        return NnunetV2Source.load(path, trust=trust, options=opts), "nnunet_v2"
    if kind == "run_dir":
        return SegmentationModel.from_run_dir(path), "run_dir"
    if model_loader is None:
        raise ConfigError(f"{path.name}: not a training run folder (no model_spec.json) nor an nnU-Net v2 "
                          "model folder (plans.json, dataset.json, fold_*), and no bundle loader is available")
    return model_loader(source, trust=trust), "bundle"


def case_name(image: Any, input_path: Path) -> str:
    """Folder name for one study (never built from DICOM folder names).

    A SeriesInstanceUID comes from a file header, so it is hostile: it names the folder only when
    it is a valid DICOM UID (digits and dots, at most 64 characters) or one of the keys the DICOM
    reader gives a series without a usable UID (``anon-<16 hex>`` for an empty one,
    ``invalid-uid-<16 hex of its sha256>`` for ``1.2/../../x``); anything else reaching here (a
    MetaTensor built by hand) is replaced by ``series-x<16 hex of its sha256>``
    (:func:`medseg.io.dicom.uid.path_safe_uid`), so no header string ever becomes a path.
    """
    uid = image.meta.get("series_instance_uid") if hasattr(image, "meta") else None
    if uid:
        from medseg.io.dicom.uid import path_safe_uid

        uid = str(uid)
        return f"series-{uid if _SYNTHETIC_KEY.fullmatch(uid) else path_safe_uid(uid)}"
    from medseg.io.read import strip_suffix

    name = strip_suffix(input_path.name) or input_path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"
    return name


def input_hash(image: Any, input_path: Path) -> tuple[str, str]:
    """(sha256 hex, what was hashed): sorted SOP Instance UIDs for DICOM, else the file bytes.

    A DICOM series whose SOP Instance UIDs are empty (anonymised) is hashed by the bytes of its
    own files (sha256 of their sorted sha256 digests, as :func:`medseg.io.dicom.series.content_digest`
    and a batch job's identity), or by the archive's bytes when it was read from a zip/tar.
    """
    meta = image.meta if hasattr(image, "meta") else {}
    files = [str(f) for f in meta.get("dicom_files") or [] if str(f)]  # "" marks a missing slice
    uids = [str(u).strip() for u in meta.get("sop_instance_uids") or [] if str(u).strip()]
    if uids and len(uids) >= len(files):  # every file read has its UID
        text = "\n".join(sorted(uids))
        return hashlib.sha256(text.encode("ascii", "replace")).hexdigest(), "sorted SOP Instance UIDs"
    if meta.get("format") == "dicom" and files and all(Path(f).is_file() for f in files):
        from medseg.io.dicom.series import content_digest

        return content_digest([Path(f) for f in files]), "sorted sha256 of the series' files (no SOP Instance UIDs)"
    if input_path.is_file():
        return sha256_file(input_path), "file bytes"
    h = hashlib.sha256()
    for f in sorted(p for p in input_path.rglob("*") if p.is_file()):
        h.update(f.relative_to(input_path).as_posix().encode())
        h.update(bytes.fromhex(sha256_file(f)))
    return h.hexdigest(), "relative paths and bytes of the files in the folder"


def seg_skip_reason(image: Any, what: str = "a DICOM SEG") -> str:
    """Why no DICOM SEG (or RT structure set: ``what``) can be written for ``image`` ("" when one
    can): not a 3D DICOM series, or a source lacking the identifiers it must reference (see
    :func:`medseg.io.dicom_seg.seg_source_problem`). One line, no header values."""
    meta = image.meta if hasattr(image, "meta") else {}
    if meta.get("format") != "dicom" or image.ndim - 1 != 3:
        fmt = meta.get("format") or "unknown"
        return f"{what} needs a 3D DICOM series as input, this input is {fmt}"
    from medseg.io.dicom_seg import seg_source_problem

    return seg_source_problem(image).replace("a DICOM SEG", what)


def segment_file(input_path: str | Path, model_source: Any, output_dir: str | Path, *,
                 formats: str | Sequence[str] = FORMATS, device: str = "auto", tta: bool = False,
                 series: Any = None, trust_bundle: bool = False,
                 model_loader: Callable[..., SegmentationModel] | None = None,
                 progress: bool = True, seg_uids: tuple[str, str] | None = None, amp: bool = True,
                 nnunet: Any = None, extra_writers: Sequence[Callable[..., str]] = (),
                 strict: bool = False, rtstruct_uids: tuple[str, str] | None = None) -> SegmentationResult:
    """Read ``input_path``, segment it, write ``output_dir/<case>/`` atomically.

    Returns a :class:`~medseg.inference.result.SegmentationResult`: ``.path`` is the case folder,
    with the provenance (timings, domain flags, files, skipped outputs), the label map and its
    grid, and the UIDs of the DICOM objects written, so callers need not read them back.

    Args:
        input_path: NIfTI/NRRD/MHA/TIFF/PNG file or DICOM file/folder/archive (:func:`medseg.io.load`).
        model_source: a :class:`SegmentationModel` or model source object, a training run folder,
            an nnU-Net v2 trained-model folder, a bundle name/folder (loaded by
            ``model_loader(source, trust=trust_bundle)``, e.g. ``medseg.bundle.load_bundle``), or a
            list of these run as one label map (:func:`resolve_model`).
        output_dir: parent folder of the case folder (created if needed).
        formats: subset of ``nifti``, ``dicom-seg`` and ``rtstruct`` (``rtstruct.dcm``, an RT
            Structure Set; both written for 3D DICOM inputs), ``png``.
        device, tta: see :func:`medseg.inference.segment` (``tta`` is for medseg models; nnU-Net
            models mirror unless ``nnunet.tta`` is False, as ``nnUNetv2_predict`` does).
        nnunet: :class:`~medseg.inference.sources.nnunet.NnunetOptions` (folds, checkpoint,
            mirroring, step size) for nnU-Net v2 model folders.
        series: DICOM series selector (UID or rule, see ``medseg.io.dicom.select_series``, or a
            ``SeriesInfo`` that ``list_series`` found under ``input_path``: its headers are reused).
        amp: reduced precision for the network where the hardware has it natively (see
            :func:`medseg.inference.sliding_window.autocast_dtype`); False for float32 throughout.
        seg_uids: (SeriesInstanceUID, SOPInstanceUID) for the DICOM SEG; default fresh UIDs.
            Batch jobs derive them from input + weights so a rerun yields the same SEG instance.
        rtstruct_uids: the same for the RT Structure Set.
        extra_writers: more outputs, each ``writer(folder, image, labels, model)`` called inside
            the case folder being written, returning the file name or ``(file name, record)``:
            the record (what the file holds, typed) is kept in the result's ``records`` (e.g.
            :func:`medseg.evaluation.statistics.write_statistics` for ``--statistics``).
        strict: refuse (:class:`~medseg.inference.domain.OutOfDomainError`, nothing written) an
            input or a result outside the model's declared domain, instead of flagging it in
            provenance (``domain_flags``).

    Raises ConfigError (bad options, existing case folder), InputError/GeometryError (bad
    input), ModelError/BundleError (model). Nothing is left on disk on failure.
    """
    import medseg
    from medseg.io.atomic import atomic_dir, atomic_write_text, check_writable_dir
    from medseg.io.read import load

    fmts = parse_formats(formats)
    input_path = Path(input_path)
    if not input_path.exists():
        raise InputError(f"input {input_path.name} does not exist")
    check_writable_dir(output_dir, "--output")  # before the model and the input are read
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model, model_kind = resolve_model(model_source, trust=trust_bundle, model_loader=model_loader, nnunet=nnunet,
                                      tta=tta)
    timings["load_model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    image = load(input_path, series=series, progress=progress)  # a batch job shows its own bar
    timings["load_input"] = time.perf_counter() - t0
    if image.meta.get("kind") == "label" or image.meta.get("format") == "dicom-seg":
        raise InputError(f"{input_path.name} is a label map / segmentation, not an image to segment")
    case = case_name(image, input_path)
    case_dir = Path(output_dir) / case
    if case_dir.exists():
        raise ConfigError(f"output folder {case} already exists in {Path(output_dir).name}; remove it or "
                          "choose another --output")
    digest, hashed = input_hash(image, input_path)
    from medseg.inference.domain import OutOfDomainError, check_input, check_output

    domain = getattr(model, "domain", None) or {}
    flags = check_input(domain, image)
    if strict and flags:
        raise OutOfDomainError(f"outside the domain of model {model.name}: {'; '.join(flags)} (--strict)")

    from medseg.inference.segmentation import infer  # torch and MONAI: after the cheap checks above

    if isinstance(model, SegmentationModel):
        pred = infer(image, model, device=device, tta=tta, progress=progress, amp=amp)
    else:  # a model source (nnU-Net v2 folder, several models): its own pre/postprocessing
        pred = model.infer(image, device=device, progress=progress, amp=amp)
    labels = pred.labels
    timings.update(pred.record.timings_s)
    flags += check_output(domain, labels, model.labels)
    if strict and flags:
        raise OutOfDomainError(f"outside the domain of model {model.name}: {'; '.join(flags)} (--strict)")

    written: list[str] = []
    skipped: dict[str, str] = {}
    t0 = time.perf_counter()
    with atomic_dir(case_dir) as tmp:
        if "nifti" in fmts:
            from medseg.io.write import save_labels

            save_labels(labels, image, tmp / "seg.nii.gz")
            written.append("seg.nii.gz")
        if "dicom-seg" in fmts:
            reason = seg_skip_reason(image)
            if not reason:
                from medseg.io.dicom_seg import SegNotWritable, write_dicom_seg

                try:
                    seg_uids = seg_uids or _fresh_uids()
                    write_dicom_seg(labels, image, tmp / "seg.dcm", label_names=model.labels,
                                    algorithm_name=model.name, algorithm_version=medseg.__version__,
                                    series_description=f"medseg {model.name}"[:64],
                                    series_instance_uid=seg_uids[0], sop_instance_uid=seg_uids[1])
                    written.append("seg.dcm")
                except SegNotWritable as exc:  # never an invalid SEG; the other outputs stand
                    reason = " ".join(str(exc).split())
            if reason:
                skipped["dicom-seg"] = reason
                log.info("no DICOM SEG written: %s", reason)
        if "rtstruct" in fmts:
            reason = seg_skip_reason(image, "an RT structure set")
            if not reason:
                from medseg.io.dicom_rtstruct import RtstructNotWritable, write_rtstruct

                try:
                    rtstruct_uids = rtstruct_uids or _fresh_uids()
                    write_rtstruct(labels, image, tmp / "rtstruct.dcm", label_names=model.labels,
                                   algorithm_name=model.name, series_description=f"medseg {model.name}"[:64],
                                   series_instance_uid=rtstruct_uids[0], sop_instance_uid=rtstruct_uids[1])
                    written.append("rtstruct.dcm")
                except RtstructNotWritable as exc:  # never an invalid structure set; the rest stands
                    reason = " ".join(str(exc).split())
            if reason:
                skipped["rtstruct"] = reason
                log.info("no RT structure set written: %s", reason)
        if "png" in fmts:
            try:
                from medseg.io.overlay import save_overlay_montage
            except ModuleNotFoundError as exc:
                if not (exc.name or "").startswith("medseg"):
                    raise
                raise ConfigError("png output needs medseg.io.overlay, which this install lacks; "
                                  "use --format nifti,dicom-seg") from None
            if model.task == "instance":  # one colour for the class, not a legend row per instance
                import torch

                shown, names = (labels > 0).to(torch.uint8), {1: next(iter(model.labels.values()), "object")}
            else:
                shown, names = labels, model.labels
            save_overlay_montage(image, shown, tmp / "overlay.png", label_names=names,
                                 window=overlay_window(image, model))
            written.append("overlay.png")
        records: dict[str, Any] = {}
        for writer in extra_writers:
            out = writer(tmp, image, labels, model)
            name, record = out if isinstance(out, tuple) else (out, None)
            written.append(name)
            if record is not None:
                records[name] = record
        timings["write"] = time.perf_counter() - t0
        prov = provenance(model, model_kind, image, pred, digest, hashed, timings, written, skipped)
        prov.domain_flags = list(flags)
        atomic_write_text(tmp / "provenance.json", prov.dumps())
    return SegmentationResult(
        path=case_dir, provenance=prov, geometry=Geometry.of(labels, "the label map"), labels=labels,
        study_instance_uid=str(image.meta["study_instance_uid"]) if image.meta.get("study_instance_uid") else None,
        seg_uids=tuple(seg_uids) if "seg.dcm" in written else None,
        rtstruct_uids=tuple(rtstruct_uids) if "rtstruct.dcm" in written else None, records=records)


def _fresh_uids() -> tuple[str, str]:
    """New (SeriesInstanceUID, SOPInstanceUID) for a DICOM object medseg writes."""
    from pydicom.uid import generate_uid

    return generate_uid(), generate_uid()


def overlay_window(image: Any, model: Any) -> tuple[float, float] | None:
    """The overlay's display window: the clinical CT window of the model's task (abdominal soft
    tissue for abdominal organs), None (percentiles) for MR and other modalities. The modality is
    the input's, or the model's declared one when the input format carries none (NIfTI)."""
    from medseg.io.windows import display_window

    modality = str(image.meta.get("modality") or "")
    if modality.lower() in ("", "unknown"):
        modality = str((getattr(model, "domain", None) or {}).get("modality") or "")
    return display_window(modality, preset=getattr(model, "preset", None),
                          label_names=(getattr(model, "labels", None) or {}).values())
