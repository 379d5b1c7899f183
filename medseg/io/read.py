"""``load`` and ``describe``: one entry point for every supported input.

The path's format comes from the one suffix table (:mod:`medseg.io.formats`: by suffix first, then
by magic bytes for files without a known suffix); the reader is the first registered one that
accepts it (:mod:`medseg.io.readers`):

========================================  ===========================================
input                                     reader
========================================  ===========================================
DICOM SEG file (SOP class 1.2.840...66.4)  ``DicomSegReader`` -> :mod:`medseg.io.seg.read`
folder, ``.dcm``/``.dicom``, ``DICM``      ``DicomSeriesReader`` -> :mod:`medseg.io.dicom`
magic, ``.zip``/``.tar``/``.tar.gz``/
``.tgz``
``.nii``, ``.nii.gz``                      ``NiftiReader`` -> :mod:`medseg.io.nifti` (nibabel)
``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``   ``ItkReader`` -> :mod:`medseg.io.itk_formats` (SimpleITK)
``.tif``, ``.tiff``, ``.png``              ``TiffReader``/``PngReader`` -> :mod:`medseg.io.microscopy`
========================================  ===========================================

Every reader takes the same options (``kind``, ``allow_nonfinite``, ``series``,
``allow_missing_slices``) and honours each or refuses it with
:class:`~medseg.errors.UnsupportedOptionError` (see :mod:`medseg.io.readers`); every reader checks
the size its header declares before allocating (:mod:`medseg.io.safety`) and refuses NaN/inf
voxels unless ``allow_nonfinite=True``. The output becomes a MetaTensor in one place
(:func:`medseg.io.image.to_metatensor`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import SeriesSelectionError
from medseg.geometry import orientation_code, spacing_of
from medseg.io.formats import (  # noqa: F401 - the suffix table's names, importable from here as before
    IMAGE_SUFFIXES,
    LABELMAP_SEG_SOP_CLASS,
    SEG_SOP_CLASS,
    SUPPORTED,
    detect_format,
    is_dicom_seg,
    strip_suffix,
    suffixes,
)
from medseg.io.readers import ReadOptions, reader_for
from medseg.io.volume import Volume


def load(
    path: str | os.PathLike[str],
    *,
    series: Any = None,
    allow_missing_slices: bool = False,
    kind: str | None = None,
    allow_nonfinite: bool = False,
    progress: bool = True,
):
    """Read any supported input into a channel-first :class:`monai.data.MetaTensor`.

    The affine maps voxel ``(i, j, k)`` to **RAS+ mm** (see :mod:`medseg.io`). ``series`` (a UID,
    a rule, or a ``SeriesInfo`` found under ``path`` by ``list_series``) and
    ``allow_missing_slices`` apply to DICOM image series (see ``medseg.io.dicom``). ``kind``:
    ``"image"`` (float32; the default for every input but a DICOM SEG), ``"label"`` (an integer
    dtype, no intensity scaling) or ``"auto"`` (label when the stored voxels are integers marked
    as labels or with at most 64 distinct non-negative values; a DICOM image series is an image).
    NaN/inf voxels raise :class:`~medseg.errors.InputError` unless ``allow_nonfinite=True``.
    An option the input's reader cannot honour (``series`` for a NIfTI file, ``kind="image"`` for
    a DICOM SEG, ...) raises :class:`~medseg.errors.UnsupportedOptionError`, never ignored.
    ``progress=False`` hides the DICOM reader's progress bars (a caller showing its own bar).

    Raises :class:`~medseg.errors.InputError` (unsupported, corrupt, truncated),
    :class:`~medseg.errors.UnsafeInputError` (absurd declared size) or
    :class:`~medseg.errors.GeometryError`.
    """
    from medseg.io.image import to_metatensor

    return to_metatensor(read_volume(path, series=series, allow_missing_slices=allow_missing_slices, kind=kind,
                                     allow_nonfinite=allow_nonfinite, progress=progress))


def read_volume(
    path: str | os.PathLike[str],
    *,
    series: Any = None,
    allow_missing_slices: bool = False,
    kind: str | None = None,
    allow_nonfinite: bool = False,
    keep_integers: bool = False,
    progress: bool = True,
    found: list | None = None,
) -> Volume:
    """:func:`load` without torch or MONAI: the same voxels, affine (voxel -> RAS+ mm) and meta
    as a numpy :class:`~medseg.io.volume.Volume`, for commands that only read and write files.

    ``keep_integers=True`` keeps a DICOM series whose rescale is integral in the smallest integer
    type holding it exactly (see :func:`medseg.io.dicom.read.read_dicom_arrays`); the other
    formats keep what :func:`load` gives. ``found`` receives the DICOM series the scan found (see
    :func:`medseg.io.dicom.read.read_dicom_arrays`).
    """
    path = Path(path)
    opts = ReadOptions(kind=kind, allow_nonfinite=allow_nonfinite, series=series,
                       allow_missing_slices=allow_missing_slices, keep_integers=keep_integers, progress=progress,
                       found=found)
    return reader_for(path).read(path, opts)


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
                if not is_dicom_seg(path):
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
            volume = read_volume(path, kind="auto", allow_nonfinite=True)
            arr, affine, meta = volume.array, volume.affine, volume.meta
        result.update(_describe_arrays(arr, affine, meta))
        if fmt == "dicom":
            result["selected"] = result.get("series_instance_uid")
    result["warnings"] = _relevant(caught)
    if result.get("spacing_source") == "default":
        result["warnings"].append("no physical pixel size stored: spacing 1.0 (unit-less) assumed")
    return result
