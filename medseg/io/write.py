"""``save`` and ``save_labels``: NIfTI / NRRD / MHA by suffix, always atomic (temp + rename).

The tensor's affine (voxel -> RAS+ mm, see :mod:`medseg.io`) is written as the file's geometry:
NIfTI stores it as is (sform and qform, code 1 "scanner"); NRRD/MHA store ITK's LPS
origin/direction/spacing (x and y negated). Reading the file back with nibabel, SimpleITK or
medseg gives the same world position for every voxel.

Dtypes written: float images as float32 (float64/float16 are converted); bool as uint8; 64-bit
integers as the smallest integer type holding their range (nibabel refuses int64 by default).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.geometry import affine_of
from medseg.geometry import as_numpy as _as_numpy
from medseg.io.atomic import atomic_path
from medseg.io.formats import WRITABLE_SUFFIXES, suffix_format
from medseg.io.safety import smallest_label_dtype

WRITABLE = WRITABLE_SUFFIXES  # (".nii", ".nii.gz", ".nrrd", ".mha"), from the one suffix table

#: The writer registry: format -> (module, function) writing ``(array (C, *spatial), affine RAS, path)``;
#: :func:`register_writer` adds one (its suffix must be in the suffix table).
_WRITERS: dict[str, tuple[str, str]] = {
    "nifti": ("medseg.io.nifti", "write_nifti"),
    "nrrd": ("medseg.io.itk_formats", "write_itk"),
    "mha": ("medseg.io.itk_formats", "write_itk"),
}


def register_writer(fmt: str, module: str, function: str) -> None:
    """Write format ``fmt`` (of :mod:`medseg.io.formats`) with ``module.function(array, affine, path)``."""
    _WRITERS[fmt] = (module, function)


def output_format(path: str | os.PathLike[str]) -> str:
    """``"nifti"``, ``"nrrd"`` or ``"mha"`` from an output path's suffix, else ConfigError."""
    path = Path(path)
    if path.name.lower().endswith(WRITABLE_SUFFIXES):
        fmt = suffix_format(path)
        if fmt in _WRITERS:
            return fmt
    raise ConfigError(
        f"{Path(path).name}: cannot write this format; use one of {', '.join(WRITABLE)} "
        "(single-file formats, so the write stays atomic)"
    )


def _affine_of(tensor: Any, affine: Any | None) -> np.ndarray:
    return affine_of(tensor, "the image", affine=affine, invertible=True)


def _storage_dtype(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    if arr.dtype in (np.int64, np.uint64):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        return arr.astype(smallest_label_dtype(lo, hi))
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    raise InputError(f"cannot save voxels of type {arr.dtype}; use a float or integer array")


def _write(arr: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    fmt = output_format(path)
    if arr.ndim not in (3, 4):
        raise InputError(f"cannot save an array of shape {arr.shape}; need channel first (C, X, Y[, Z])")
    if path.is_dir():
        raise ConfigError(f"{path.name} is a folder; give an output file name ending in {', '.join(WRITABLE)}")
    try:
        module, function = _WRITERS[fmt]
        with atomic_path(path) as tmp:
            getattr(importlib.import_module(module), function)(arr, affine, tmp)
    except OSError as exc:  # permissions, full disk, read-only file system
        raise ConfigError(f"cannot write {path.name}: {exc.strerror or type(exc).__name__}; "
                          "choose another output location") from None
    return path


def save(tensor: Any, path: str | os.PathLike[str], *, affine: Any | None = None) -> Path:
    """Write a channel-first tensor (C, X, Y[, Z]) to NIfTI/NRRD/MHA by suffix, atomically.

    ``tensor``: a MetaTensor (its ``.affine`` is used), or a torch/numpy array with ``affine``
    (4x4 voxel -> RAS+ mm) given. Returns the written path. Raises
    :class:`~medseg.errors.ConfigError` for an unsupported suffix and
    :class:`~medseg.errors.GeometryError` for a missing or singular affine.
    """
    path = Path(path)
    output_format(path)
    aff = _affine_of(tensor, affine)
    arr = _storage_dtype(_as_numpy(tensor))
    return _write(arr, aff, path)


def save_labels(labels: Any, reference: Any, path: str | os.PathLike[str]) -> Path:
    """Write a label map on exactly ``reference``'s grid, in the smallest unsigned integer dtype.

    ``labels``: (X, Y[, Z]) or (1, X, Y[, Z]) integer-valued array/tensor; ``reference``: the
    MetaTensor it was computed for. The spatial shape must equal the reference's, and when
    ``labels`` carries its own affine it must equal the reference's to 1e-6 (mm), else
    :class:`~medseg.errors.GeometryError`. Negative or non-integer values raise
    :class:`~medseg.errors.InputError`. The reference's affine is written.
    """
    path = Path(path)
    output_format(path)
    ref_aff = _affine_of(reference, None)
    ref_spatial = tuple(int(s) for s in reference.shape[1:])
    arr = _as_numpy(labels)
    if arr.ndim == len(ref_spatial):
        arr = arr[None]
    if arr.ndim != len(ref_spatial) + 1 or arr.shape[0] != 1:
        raise GeometryError(
            f"label map of shape {tuple(arr.shape)} does not fit the reference grid {ref_spatial}; "
            "pass one channel on the reference grid"
        )
    if tuple(arr.shape[1:]) != ref_spatial:
        raise GeometryError(
            f"label map grid {tuple(arr.shape[1:])} differs from the reference grid {ref_spatial}; "
            "resample the labels to the reference first (nearest neighbour)"
        )
    own = getattr(labels, "affine", None)
    if own is not None:
        own_aff = _as_numpy(own).astype(np.float64)
        if own_aff.shape == (4, 4) and not np.allclose(own_aff, ref_aff, atol=1e-6, rtol=0):
            gap = float(np.max(np.abs(own_aff - ref_aff)))
            raise GeometryError(
                f"label map affine differs from the reference affine by up to {gap:.3g}; "
                "the labels are not on the reference grid"
            )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError("label map holds non-integer or non-finite values; round or argmax it first")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"label map of type {arr.dtype} is not an integer label map")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0:
        raise InputError(f"label map holds negative values (min {lo}); labels must be >= 0")
    arr = arr.astype(smallest_label_dtype(0, hi))
    return _write(arr, ref_aff, path)


def convert(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    series: str | None = None,
    allow_missing_slices: bool = False,
    kind: str = "auto",
) -> Path:
    """Read any supported input and write it to ``output`` (.nii/.nii.gz/.nrrd/.mha), atomically.

    Geometry is preserved in world coordinates (RAS mm): every voxel lands at the same world
    point in the output as in the source. ``kind="auto"`` keeps label maps as integers (see
    :func:`medseg.io.read.load`), and a DICOM series whose RescaleSlope/Intercept are integers
    keeps an integer type (int16 for most CT) holding the rescaled values exactly. Nothing is
    written when reading fails. Neither torch nor MONAI is imported (except for a DICOM SEG input).
    """
    from medseg.io.read import read_volume

    output = Path(output)
    output_format(output)
    volume = read_volume(source, series=series, allow_missing_slices=allow_missing_slices, kind=kind,
                         keep_integers=True)
    return save(volume.array, output, affine=volume.affine)
