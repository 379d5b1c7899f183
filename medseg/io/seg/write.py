"""Writing a label map as a BINARY DICOM SEG (highdicom) that references its source series.

The source is the :class:`~medseg.io.dicom.source.DicomSource` that travels with an image read
from DICOM: its headers are referenced, never the files (see :mod:`medseg.io.dicom_seg`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import medseg
from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.io.dicom.derived import label_array, present_values, source_planes
from medseg.io.seg.checks import SegNotWritable, check_written, seg_problems
from medseg.labels import LabelDef, generic_label, lookup_label
from medseg.logsafe import scrub

log = logging.getLogger("medseg.io.dicom_seg")


def _segment_description(number: int, label: LabelDef, algorithm_name: str, algorithm_version: str,
                         ) -> Any:
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(  # LO values: at most 64 characters
        name=algorithm_name[:64] or "medseg", family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version[:64] or "unknown")
    desc = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label.display[:64],
        segmented_property_category=label.category_code.to_code(),
        segmented_property_type=label.property_code.to_code(),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
        anatomic_regions=[label.anatomic_region.to_code()] if label.anatomic_region else None,
        display_color=hd.color.CIELabColor.from_rgb(*label.colour_rgb),
    )
    if label.property_modifier is not None:
        m = label.property_modifier
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            CodedConcept(value=m.value, scheme_designator=m.scheme, meaning=m.meaning)]
    return desc


def write_dicom_seg(
    labels: Any,
    source: Any,
    out_path: str | os.PathLike[str],
    *,
    label_names: Mapping[int, str],
    algorithm_name: str = "medseg",
    algorithm_version: str = medseg.__version__,
    series_description: str = "medseg segmentation",
    manufacturer: str = "medseg",
    series_number: int = 300,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Path:
    """Write an integer label map as a BINARY DICOM SEG in the study of its source series.

    ``labels``: integer MetaTensor (1, i, j, k) on exactly the grid of ``source`` (RAS affine);
    ``source``: the image medseg read from the DICOM series (MetaTensor, Volume or Image): the
    :class:`~medseg.io.dicom.source.DicomSource` it carries is referenced, so the source files
    need not be on disk any more (a MetaTensor built with only ``meta['dicom_files']`` has those
    headers read). Each plane k is matched to its source instance by its position in space (LPS mm);
    :class:`GeometryError` if the grids differ. One segment per label value present (segments are
    numbered 1..n in increasing label value; an all-zero map gets one empty segment per entry of
    ``label_names``); ``label_names`` maps label value -> name, described
    with the SNOMED CT codes of :mod:`medseg.labels` (unknown names: generic "Tissue"). Empty
    frames are omitted. ``series_instance_uid`` / ``sop_instance_uid`` default to fresh UIDs; pass
    UIDs derived from the input and model to make a rerun produce the same instance (batch jobs
    rely on this so a PACS never receives a second SEG for the same input and model).
    Patient/study attributes are copied from the source as the SEG IOD
    requires; nothing is logged about them. Raises :class:`SegNotWritable` (one line, before
    anything is built) when the source lacks identifiers a SEG must reference, or when the SEG
    built fails validation (required attributes and UIDs, strict VR rules, highdicom's reader);
    nothing is written then. The file is validated by highdicom and written
    atomically. Returns ``out_path``.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    lab = label_array(labels, source, max_value=65535, what="DICOM SEG numbers segments below 65536")
    names = {int(k): str(v) for k, v in label_names.items()}
    # an empty result is still a result (e.g. no nodule found): every named label is described and
    # highdicom stores empty frames, as a SEG needs at least one
    present, empty = present_values(lab, names, "a DICOM SEG needs at least one segment")
    if empty:
        log.info("label map is empty: writing %d empty segment(s)", len(present))
    src, matched = source_planes(labels, lab, source, what="write_dicom_seg", object_name="a DICOM SEG",
                                 on_missing="a SEG can only segment existing source images",
                                 not_writable=SegNotWritable)
    datasets = src.headers
    ni, nj, nk = lab.shape
    ks = [k for k, p in enumerate(matched) if p is not None]
    planes = [p for p in matched if p is not None]
    used_ds = sorted({p.ds_index for p in planes})
    multi = any(p.frame is not None for p in planes)
    if multi and len(used_ds) != 1:
        raise InputError("a SEG can reference only one multi-frame source instance; this label map "
                         "spans several")

    # segment numbers 1..n in increasing label value
    seg_of_value = {v: n for n, v in enumerate(present, start=1)}
    remap = np.zeros(max(int(lab.max()), max(present)) + 1, dtype=np.uint16)
    for v, n in seg_of_value.items():
        remap[v] = n
    seg_numbers = remap[lab]  # (i, j, k)

    if multi:
        ds = datasets[used_ds[0]]
        source_images = [ds]
        n_frames = int(getattr(ds, "NumberOfFrames", 1))
        pixel = np.zeros((n_frames, nj, ni), dtype=np.uint16)
        for k, p in zip(ks, planes, strict=True):
            pixel[p.frame] = seg_numbers[:, :, k].T
    else:
        source_images = [datasets[p.ds_index] for p in planes]
        pixel = np.ascontiguousarray(np.transpose(seg_numbers[:, :, ks], (2, 1, 0)))  # (k, rows=j, cols=i)

    descriptions = []
    for v, n in seg_of_value.items():
        name = names[v]
        label = lookup_label(name) or generic_label(name)
        descriptions.append(_segment_description(n, label, algorithm_name, str(algorithm_version)))

    try:
        seg = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=pixel,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=series_instance_uid or generate_uid(),
            series_number=int(series_number),
            sop_instance_uid=sop_instance_uid or generate_uid(),
            instance_number=1,
            manufacturer=manufacturer[:64],
            manufacturer_model_name="medseg",
            software_versions=str(medseg.__version__),
            device_serial_number="medseg",
            content_description=series_description[:64] or None,
            content_label="SEGMENTATION",
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"highdicom refused to build the SEG: {scrub(str(exc))}") from exc
    seg.SeriesDescription = series_description[:64]
    problems = seg_problems(seg, len(descriptions))
    if problems:
        raise SegNotWritable(f"the DICOM SEG built is invalid ({'; '.join(problems[:3])})")

    out = Path(out_path)
    with atomic_path(out) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
        check_written(tmp, len(descriptions), int(seg.NumberOfFrames))
    log.info("wrote DICOM SEG with %d segment(s), %d frame(s) to %s", len(descriptions),
             int(seg.NumberOfFrames), out.name)
    return out
