"""``load`` and ``describe``: one entry point for every supported input.

Dispatch (by suffix first, then by magic bytes for files without a known suffix):

========================================  ===========================================
input                                     reader
========================================  ===========================================
folder, ``.dcm``/``.dicom``, ``DICM``      :func:`medseg.io.dicom.read_dicom` (DICOM engineer)
magic, ``.zip``/``.tar``/``.tar.gz``/
``.tgz``
DICOM SEG file (SOP class 1.2.840...66.4)  :func:`medseg.io.dicom_seg.read_dicom_seg`
``.nii``, ``.nii.gz``                      :mod:`medseg.io.nifti` (nibabel)
``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``   :mod:`medseg.io.itk_formats` (SimpleITK)
``.tif``, ``.tiff``, ``.png``              :mod:`medseg.io.microscopy` (tifffile / Pillow)
========================================  ===========================================

Every reader checks the size its header declares before allocating
(:mod:`medseg.io.safety`) and refuses NaN/inf voxels unless ``allow_nonfinite=True``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError, SeriesSelectionError
from medseg.geometry import orientation_code, spacing_of
from medseg.io.volume import Volume

SUPPORTED = (
    "DICOM (folder, .dcm, .zip, .tar, .tar.gz, .tgz), NIfTI (.nii, .nii.gz), "
    "NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), TIFF (.tif, .tiff), PNG (.png)"
)
#: DICOM Segmentation Storage, and Label Map Segmentation Storage (read only): written here only
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"

#: The one suffix table: file name ending -> format (read by :func:`detect_format` first by
#: suffix, longest match, then by content). Other modules take their suffix lists from here.
_SUFFIXES = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "png",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".zip": "dicom",
    ".tar": "dicom",
    ".tar.gz": "dicom",
    ".tgz": "dicom",
}


def suffixes(*formats: str) -> tuple[str, ...]:
    """The suffixes of ``formats`` (every format when none is named) from the suffix table,
    longest first (so ``.nii.gz`` is tried before ``.nii``)."""
    return tuple(sorted((s for s, f in _SUFFIXES.items() if not formats or f in formats), key=len, reverse=True))


#: Single-file images (NIfTI, NRRD, MetaImage, TIFF, PNG): not DICOM, not archives.
IMAGE_SUFFIXES = suffixes("nifti", "nrrd", "mha", "tiff", "png")


def strip_suffix(name: str, table: tuple[str, ...] | None = None) -> str | None:
    """``name`` without the first of ``table`` (default: every suffix) it ends with (case
    insensitive), or None when it ends with none of them."""
    low = name.lower()
    for suf in table if table is not None else suffixes():
        if low.endswith(suf):
            return name[: -len(suf)]
    return None


def _suffix_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    return None


def _magic_format(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(512)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head.startswith(b"PK\x03\x04") or (len(head) >= 262 and head[257:262] == b"ustar"):
        return "dicom"
    if (len(head) >= 348 and head[344:348] == b"n+1\x00") or head[4:8] == b"n+2\x00":
        return "nifti"
    if head.startswith(b"\x1f\x8b"):
        from medseg.io.nifti import sniff_nifti

        return "nifti" if sniff_nifti(path) else None
    if head.lstrip().startswith((b"ObjectType", b"NDims")):
        return "mha"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """The reader a path goes to: ``"dicom"``, ``"nifti"``, ``"nrrd"``, ``"mha"``, ``"tiff"``, ``"png"``.

    Raises :class:`~medseg.errors.InputError` for a missing path or an unsupported format.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    if not path.exists():
        raise InputError(f"{path.name}: no such file or folder")
    fmt = _suffix_format(path)
    if fmt is None and path.is_file() and path.stat().st_size > 0:
        fmt = _magic_format(path)
    if fmt is None:
        raise InputError(f"{path.name}: unsupported input; medseg reads {SUPPORTED}")
    return fmt


def _is_dicom_seg(path: Path) -> bool:
    if not path.is_file() or path.name.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz")):
        return False
    import pydicom

    from medseg.io.dicom.headers import check_deflated

    with open(path, "rb") as fh:
        if fh.read(132)[128:132] != b"DICM":
            return False
    check_deflated(path, path.name)  # before pydicom inflates a deflated body in memory
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"], defer_size=1024)
        return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS
    except Exception:  # noqa: BLE001 - unreadable here: the DICOM reader then says why, in one line
        return False


def _full_meta(array: np.ndarray, affine: np.ndarray, meta: dict[str, Any], path: Path) -> dict[str, Any]:
    spatial = tuple(int(s) for s in array.shape[1:])
    return {
        "space": "RAS",
        "filename_or_obj": str(path),
        "spatial_shape": np.asarray(spatial),
        "original_affine": np.asarray(affine, dtype=np.float64).copy(),
        "original_channel_dim": 0,
        **meta,
    }


def _to_metatensor(volume: Volume):
    import torch
    from monai.data import MetaTensor

    array = volume.array
    if any(st < 0 for st in array.strides) or not array.flags.writeable:
        array = np.array(array, order="K")  # one copy, keeping the memory order
    return MetaTensor(torch.from_numpy(array),
                      affine=torch.as_tensor(volume.affine, dtype=torch.float64), meta=volume.meta)


def _read_arrays(path: Path, fmt: str, *, kind: str, allow_nonfinite: bool):
    if fmt == "nifti":
        from medseg.io.nifti import read_nifti

        return read_nifti(path, kind=kind, allow_nonfinite=allow_nonfinite)
    if fmt in ("nrrd", "mha"):
        from medseg.io.itk_formats import read_itk

        return read_itk(path, kind=kind, allow_nonfinite=allow_nonfinite)
    if fmt == "tiff":
        from medseg.io.microscopy import read_tiff

        return read_tiff(path, kind=kind, allow_nonfinite=allow_nonfinite)
    if fmt == "png":
        from medseg.io.microscopy import read_png

        return read_png(path, kind=kind, allow_nonfinite=allow_nonfinite)
    raise InputError(f"{path.name}: unsupported input; medseg reads {SUPPORTED}")  # pragma: no cover


def _read_dicom(path: Path, *, series: Any, allow_missing_slices: bool, progress: bool = True):
    from medseg.io.dicom import read_dicom  # imported lazily: pydicom only when needed

    return read_dicom(path, series=series, allow_missing_slices=allow_missing_slices, progress=progress)


def load(
    path: str | os.PathLike[str],
    *,
    series: Any = None,
    allow_missing_slices: bool = False,
    kind: str = "image",
    allow_nonfinite: bool = False,
    progress: bool = True,
):
    """Read any supported input into a channel-first :class:`monai.data.MetaTensor`.

    The affine maps voxel ``(i, j, k)`` to **RAS+ mm** (see :mod:`medseg.io`). ``series`` (a UID,
    a rule, or a ``SeriesInfo`` found under ``path`` by ``list_series``) and
    ``allow_missing_slices`` apply to DICOM inputs (see ``medseg.io.dicom``). ``kind`` applies
    to the non-DICOM formats: ``"image"`` (float32, the default), ``"label"`` (an integer dtype,
    no intensity scaling) or ``"auto"`` (label when the stored voxels are integers marked as
    labels or with at most 64 distinct non-negative values). NaN/inf voxels raise
    :class:`~medseg.errors.InputError` unless ``allow_nonfinite=True``. ``progress=False`` hides
    the DICOM reader's progress bars (a caller showing its own bar, e.g. a batch job).

    Raises :class:`~medseg.errors.InputError` (unsupported, corrupt, truncated),
    :class:`~medseg.errors.UnsafeInputError` (absurd declared size) or
    :class:`~medseg.errors.GeometryError`.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "dicom":
        if _is_dicom_seg(path):
            from medseg.io.dicom.headers import read_header
            from medseg.io.dicom_seg import read_dicom_seg

            read_header(path)  # lengths, deflate and pixel sizes checked before a full read
            return read_dicom_seg(path)
        return _read_dicom(path, series=series, allow_missing_slices=allow_missing_slices, progress=progress)
    return _to_metatensor(_read_volume(path, fmt, kind=kind, allow_nonfinite=allow_nonfinite))


def _read_volume(path: Path, fmt: str, *, kind: str, allow_nonfinite: bool) -> Volume:
    array, affine, meta = _read_arrays(path, fmt, kind=kind, allow_nonfinite=allow_nonfinite)
    return Volume(array, np.asarray(affine, dtype=np.float64), _full_meta(array, affine, meta, path))


def read_volume(
    path: str | os.PathLike[str],
    *,
    series: Any = None,
    allow_missing_slices: bool = False,
    kind: str = "image",
    allow_nonfinite: bool = False,
    keep_integers: bool = False,
    progress: bool = True,
    found: list | None = None,
) -> Volume:
    """:func:`load` without torch or MONAI: the same voxels, affine (voxel -> RAS+ mm) and meta
    as a numpy :class:`~medseg.io.volume.Volume`, for commands that only read and write files.

    ``keep_integers=True`` keeps a DICOM series whose rescale is integral in the smallest integer
    type holding it exactly (see :func:`medseg.io.dicom.read.read_dicom_arrays`); the other
    formats keep what :func:`load` gives. A DICOM SEG is read by the SEG reader, which needs
    MONAI (highdicom's frames become a MetaTensor first). ``found`` receives the DICOM series
    the scan found (see :func:`medseg.io.dicom.read.read_dicom_arrays`).
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "dicom":
        if _is_dicom_seg(path):
            tensor = load(path)
            return Volume(tensor.detach().cpu().numpy(), tensor.affine.numpy().astype(np.float64), dict(tensor.meta))
        from medseg.io.dicom.read import read_dicom_arrays

        volume, affine, meta = read_dicom_arrays(path, series=series, allow_missing_slices=allow_missing_slices,
                                                 keep_integers=keep_integers, progress=progress, found=found)
        meta["original_affine"] = np.asarray(affine, dtype=np.float64).copy()
        return Volume(np.expand_dims(volume, 0), np.asarray(affine, dtype=np.float64), meta)
    return _read_volume(path, fmt, kind=kind, allow_nonfinite=allow_nonfinite)


def _describe_arrays(arr: np.ndarray, affine: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    affine = np.asarray(affine, dtype=np.float64)
    ndim = arr.ndim - 1
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    out: dict[str, Any] = {
        "format": meta.get("format", "unknown"),
        "modality": meta.get("modality", "unknown"),
        "kind": meta.get("kind", "image"),
        "shape": [int(s) for s in arr.shape],
        "channels": int(arr.shape[0]),
        "spacing_mm": [float(f"{s:.6g}") for s in spacing_of(affine, ndim)],
        "orientation": orientation_code(affine, ndim),
        "origin_ras_mm": [round(float(v), 6) for v in affine[:3, 3]],
        "affine_ras": [[round(float(v), 6) for v in row] for row in affine],
        "dtype": str(arr.dtype),
        "value_range": [float(finite.min()), float(finite.max())] if finite.size else None,
        "nonfinite_voxels": int(arr.size - finite.size),
    }
    for key in ("affine_source", "spacing_source", "series_instance_uid", "series_description"):
        if key in meta and meta[key] is not None:
            out[key] = str(meta[key])
    return out


def _series_summary(info: Any) -> dict[str, Any]:
    keep = ("series_instance_uid", "modality", "series_description", "series_number", "n_instances")
    return {k: getattr(info, k) for k in keep if hasattr(info, k) and not callable(getattr(info, k))}


def _relevant(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings about the input itself (raised by medseg code), not library deprecations."""
    from medseg.io.safety import GeometryWarning

    pkg = str(Path(__file__).resolve().parents[1])
    out = []
    for w in caught:
        if issubclass(w.category, GeometryWarning) or (
            str(Path(w.filename).resolve()).startswith(pkg) and not issubclass(w.category, DeprecationWarning)
        ):
            msg = " ".join(str(w.message).split())
            if msg not in out:
                out.append(msg)
    return out


def describe(path: str | os.PathLike[str], series: str | None = None) -> dict[str, Any]:
    """Facts about an input for ``medseg info``: never a patient name, ID or birth date.

    Keys: ``format``, ``modality``, ``kind``, ``shape`` (channel first), ``spacing_mm``,
    ``orientation`` (axis codes of the RAS affine, e.g. ``"LPS"``), ``origin_ras_mm`` (world
    position of voxel 0), ``affine_ras``, ``dtype``, ``value_range`` (finite voxels),
    ``nonfinite_voxels`` (counted, not refused), ``warnings``; for DICOM
    also ``series`` (every series found). When a DICOM input holds several series and none is
    selected, only ``series`` is filled and ``selected`` is ``None``.
    """
    path = Path(path)
    fmt = detect_format(path)
    result: dict[str, Any] = {"path": str(path)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if fmt == "dicom":
            found: list = []  # the series of the one header scan
            try:
                volume = read_volume(path, series=series, found=found)
                if not _is_dicom_seg(path):
                    result["series"] = [_series_summary(s) for s in found]
            except SeriesSelectionError:
                result["series"] = [_series_summary(s) for s in found]
                if series is not None or len(result.get("series", [])) <= 1:
                    raise
                result.update(format="dicom", selected=None)
                result["warnings"] = _relevant(caught)
                return result
            arr, affine, meta = volume.array, volume.affine, volume.meta
        else:  # no MetaTensor needed, so `medseg info` does not import MONAI
            arr, affine, meta = _read_arrays(path, fmt, kind="auto", allow_nonfinite=True)
        result.update(_describe_arrays(arr, affine, meta))
        if fmt == "dicom":
            result["selected"] = result.get("series_instance_uid")
    result["warnings"] = _relevant(caught)
    if result.get("spacing_source") == "default":
        result["warnings"].append("no physical pixel size stored: spacing 1.0 (unit-less) assumed")
    return result
