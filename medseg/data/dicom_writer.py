"""Write phantom volumes and radiographs as real DICOM files (pydicom), for tests and demos.

Conventions (see :mod:`medseg.io`): a volume is a numpy array indexed ``(i, j, k)`` and its
4x4 ``affine`` maps a voxel index to **RAS+ millimetres**. DICOM stores LPS, so x and y are
negated on write. For slice ``k`` the stored pixel array is ``volume[:, :, k].T`` (rows = j,
columns = i); ``ImageOrientationPatient`` = (unit i direction, unit j direction) in LPS,
``ImagePositionPatient`` = LPS position of voxel (0, 0, k), ``PixelSpacing`` = [spacing along j
(between rows), spacing along i (between columns)] in mm.

Every object carries the Type 1 and Type 2 attributes of its IOD (CT Image, MR Image, CR Image
or Digital X-Ray Image For Presentation), so that ``dciodvfy`` reports no error. File names are
sequence numbers, never derived from patient data. Files are written atomically.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from medseg.errors import ConfigError, InputError
from medseg.io.atomic import atomic_path

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"

_ORDERS = ("sorted", "reversed", "shuffled")
_LPS = np.diag([-1.0, -1.0, 1.0])


def _fmt(x: float) -> str:
    """A decimal string (VR DS, max 16 characters) for ``x``."""
    s = f"{float(x):.10g}"
    if len(s) > 16:
        s = f"{float(x):.8g}"
    if s in ("-0", "-0.0"):
        s = "0"
    return s


def _uid(value: str | None) -> str:
    return str(value) if value is not None else generate_uid()


_VIEW_CODES = {"PA": ("399348003", "SCT", "postero-anterior"),
               "AP": ("399182009", "SCT", "antero-posterior")}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDSEG_0_1"
    return meta


def _common(ds: Dataset, *, patient_name: str, patient_id: str, study_uid: str, series_uid: str,
            modality: str, series_description: str, now: _dt.datetime) -> None:
    """Patient, General Study, General Series, General Equipment and SOP Common attributes."""
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient module (Type 2 left empty where there is nothing true to say).
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic phantom, no patient data"
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "medseg phantom"
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description
    # General Equipment
    ds.Manufacturer = "medseg"
    ds.ManufacturerModelName = "phantom writer"
    ds.SoftwareVersions = "0.1"
    ds.ContentDate, ds.ContentTime = date, time


def _to_stored(values: np.ndarray, modality: str) -> tuple[np.ndarray, float, float, bool]:
    """Map float values to stored integers: returns (stored, slope, intercept, signed)."""
    values = np.asarray(values)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise InputError("volume is empty or holds NaN/inf: give finite values (HU for CT)")
    lo, hi = float(values.min()), float(values.max())
    integral = bool(np.all(np.round(values) == values))
    if integral and lo >= -32768 and hi <= 32767:
        return values.astype(np.int16), 1.0, 0.0, True
    if integral and lo >= 0 and hi <= 65535 and modality != "CT":
        return values.astype(np.uint16), 1.0, 0.0, False
    if modality not in ("CT",):
        raise InputError(
            f"{modality} values must be integers in [-32768, 65535] (got {lo:g}..{hi:g}); "
            "round or rescale the volume before writing"
        )
    slope = (hi - lo) / 60000.0 if hi > lo else 1.0
    intercept = (hi + lo) / 2.0
    stored = np.clip(np.round((values - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, intercept, True


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    modality: str = "CT",
    series_description: str = "",
    patient_name: str = "PHANTOM^ANON",
    patient_id: str = "PHANTOM0001",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    order: str = "sorted",
    seed: int = 0,
    extra_tags: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``volume`` (i, j, k) as one CT or MR Image Storage file per slice in ``out_dir``.

    ``affine`` maps voxel (i, j, k) to RAS+ mm; any orientation (also oblique, or a slice offset
    not along the normal, i.e. a gantry tilt) is written as is. CT values are HU, stored as int16
    with RescaleSlope/RescaleIntercept; MR values must be integers (stored without rescale).
    ``order`` sets both the file names (``0000.dcm``...) and the InstanceNumber of slice k:
    "sorted" (k + 1), "reversed" (n - k), "shuffled" (two independent permutations drawn from
    ``seed``, so that neither file name nor InstanceNumber follows the slice position).
    ``extra_tags`` maps DICOM keywords to values set on every file (after the defaults).
    Returns the written paths in slice order (``paths[k]`` holds ``volume[:, :, k]``).
    """
    modality = modality.upper()
    if modality not in ("CT", "MR"):
        raise ConfigError(f"modality {modality!r} is not supported for series: use 'CT' or 'MR'")
    if order not in _ORDERS:
        raise ConfigError(f"order {order!r} is unknown: use one of {', '.join(_ORDERS)}")
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise InputError(f"volume must be 3D (i, j, k), got shape {volume.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError("affine must be a finite 4x4 voxel->RAS matrix")
    lps = _LPS @ affine[:3, :4]
    col_i, col_j, col_k, origin = lps[:, 0], lps[:, 1], lps[:, 2], lps[:, 3]
    si, sj = float(np.linalg.norm(col_i)), float(np.linalg.norm(col_j))
    if si <= 0 or sj <= 0:
        raise InputError("affine has a zero in-plane column: spacing must be > 0 mm")
    row_dir, col_dir = col_i / si, col_j / sj
    if abs(float(row_dir @ col_dir)) > 1e-4:
        raise InputError("affine's i and j columns are not orthogonal: DICOM needs orthogonal rows/columns")
    normal = np.cross(row_dir, col_dir)
    thickness = abs(float(col_k @ normal)) if volume.shape[2] > 0 else 1.0
    if np.linalg.norm(col_k) == 0:
        thickness = 1.0

    existing = sorted(Path(out_dir).glob("*.dcm")) if Path(out_dir).is_dir() else []
    if existing:  # file names are 0000.dcm...: a second series would overwrite the first one's slices
        raise ConfigError(f"{Path(out_dir).name} already holds {len(existing)} DICOM files; write each "
                          "series into its own (empty) folder")
    n = volume.shape[2]
    rng = np.random.default_rng(seed)
    if order == "sorted":
        file_index, instance = np.arange(n), np.arange(n) + 1
    elif order == "reversed":
        file_index, instance = np.arange(n)[::-1].copy(), n - np.arange(n)
    else:
        file_index, instance = rng.permutation(n), rng.permutation(n) + 1

    stored, slope, intercept, signed = _to_stored(volume, modality)
    study_uid = _uid(study_instance_uid)
    series_uid = _uid(series_instance_uid)
    for_uid = _uid(frame_of_reference_uid)
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    now = _dt.datetime.now(_dt.timezone.utc)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n - 1)))
    paths: list[Path] = []
    for k in range(n):
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = _file_meta(sop_class, sop_uid)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        _common(ds, patient_name=patient_name, patient_id=patient_id, study_uid=study_uid,
                series_uid=series_uid, modality=modality, series_description=series_description,
                now=now)
        ds.PatientPosition = "HFS"
        ds.Laterality = ""  # Type 2C: unknown for a phantom
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        # General Image
        ds.InstanceNumber = int(instance[k])
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if modality == "CT" else "OTHER"]
        ds.BurnedInAnnotation = "NO"
        # Image Plane (LPS)
        ipp = origin + k * col_k
        ds.PixelSpacing = [_fmt(sj), _fmt(si)]
        ds.ImageOrientationPatient = [_fmt(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [_fmt(v) for v in ipp]
        ds.SliceThickness = _fmt(thickness)
        ds.SliceLocation = _fmt(float(ipp @ normal))
        # Image Pixel
        pixels = np.ascontiguousarray(stored[:, :, k].T)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if signed else 0
        vmin, vmax = float(volume.min()), float(volume.max())
        ds.WindowCenter = _fmt((vmin + vmax) / 2)
        ds.WindowWidth = _fmt(max(vmax - vmin, 1.0))
        if modality == "CT":
            ds.RescaleIntercept = _fmt(intercept)
            ds.RescaleSlope = _fmt(slope)
            ds.RescaleType = "HU"
            ds.KVP = "120"
            ds.ConvolutionKernel = "STANDARD"
        else:
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.RepetitionTime = "10"
            ds.EchoTime = "4"
            ds.EchoTrainLength = 1
            ds.ImagedNucleus = "1H"
            ds.MagneticFieldStrength = "3"
        ds.PixelData = pixels.tobytes()
        for key, value in (extra_tags or {}).items():
            setattr(ds, key, value)
        path = out_dir / f"{int(file_index[k]):0{width}d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_xray(
    image: np.ndarray,
    spacing_mm: float | tuple[float, float],
    out_path: str | os.PathLike[str],
    *,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    spacing_tag: str = "PixelSpacing",
    patient_name: str = "PHANTOM^ANON",
    patient_id: str = "PHANTOM0001",
    series_description: str = "",
    magnification: float | None = None,
    view_position: str = "PA",
    extra_tags: Mapping[str, Any] | None = None,
) -> Path:
    """Write a 2D radiograph ``image`` (i, j) as a DX (For Presentation) or CR object.

    ``image`` is indexed (i, j) like every medseg 2D image: the stored pixel array is
    ``image.T`` (rows = j). Values are what a viewer shows with "bright = dense": for
    ``photometric="MONOCHROME1"`` the stored values are inverted (``max - value``) so that a
    reader applying MONOCHROME1 correctly gets ``image`` back. Values must be integers in
    [0, 65535]. ``spacing_mm`` is (along i, along j) or one number; it is written as
    ``PixelSpacing`` or ``ImagerPixelSpacing`` (both [row spacing = along j, column spacing =
    along i]); ``magnification`` sets EstimatedRadiographicMagnificationFactor. A projection has
    no patient position, so no ImagePositionPatient/ImageOrientationPatient are written.
    """
    modality = modality.upper()
    if modality not in ("DX", "CR"):
        raise ConfigError(f"modality {modality!r} is not supported for X-ray: use 'DX' or 'CR'")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ConfigError(f"photometric {photometric!r} is unknown: use MONOCHROME1 or MONOCHROME2")
    if spacing_tag not in ("PixelSpacing", "ImagerPixelSpacing"):
        raise ConfigError(f"spacing_tag {spacing_tag!r} is unknown: use PixelSpacing or ImagerPixelSpacing")
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 1:
        raise InputError(f"image must be 2D (i, j), got shape {image.shape}")
    if not np.all(np.isfinite(image)) or np.any(np.round(image) != image) or image.min() < 0 \
            or image.max() > 65535:
        raise InputError("X-ray values must be integers in [0, 65535]: round or rescale first")
    if np.isscalar(spacing_mm):
        si = sj = float(spacing_mm)  # type: ignore[arg-type]
    else:
        si, sj = (float(v) for v in spacing_mm)  # type: ignore[union-attr]
    if si <= 0 or sj <= 0:
        raise InputError("spacing_mm must be > 0 mm")
    bits = 16 if image.max() > 4095 else 12
    vmax = (1 << bits) - 1
    stored = image.astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (vmax - stored).astype(np.uint16)
    pixels = np.ascontiguousarray(stored.T)

    sop_class = DX_IMAGE_STORAGE_PRESENTATION if modality == "DX" else CR_IMAGE_STORAGE
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    now = _dt.datetime.now(_dt.timezone.utc)
    _common(ds, patient_name=patient_name, patient_id=patient_id, study_uid=generate_uid(),
            series_uid=generate_uid(), modality=modality, series_description=series_description,
            now=now)
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"] if view_position == "PA" else ["R", "F"]
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    spacing = [_fmt(sj), _fmt(si)]
    setattr(ds, spacing_tag, spacing)
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = _fmt(magnification)
    if modality == "DX":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.AnatomicRegionSequence = [_code("43799004", "SCT", "Chest")]
        if view_position in _VIEW_CODES:
            ds.ViewCodeSequence = [_code(*_VIEW_CODES[view_position])]
        ds.PositionerType = ""
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME1" else 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        ds.DetectorType = "DIRECT"
        ds.AcquisitionContextSequence = []
        ds.WindowCenter = _fmt(vmax / 2)
        ds.WindowWidth = _fmt(vmax)
        if spacing_tag != "ImagerPixelSpacing":
            ds.ImagerPixelSpacing = spacing
            ds.PixelSpacingCalibrationType = "GEOMETRY"
            ds.PixelSpacingCalibrationDescription = "phantom geometry, exact"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelData = pixels.tobytes()
    for key, value in (extra_tags or {}).items():
        setattr(ds, key, value)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return out_path
