"""The volumes a ``medseg view`` page receives: gzip NIfTI bytes on the source grid, in their
smallest faithful type, and label maps checked to lie on the image's grid (nothing resampled)."""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import GeometryError, InputError
from medseg.geometry import affine_of, as_numpy


def nifti_gz(arr: np.ndarray, affine: np.ndarray, *, level: int = 1) -> bytes:
    """Spatial array (i, j[, k]) + RAS affine -> gzip-compressed NIfTI-1 bytes (sform = qform = affine).

    A 2D image becomes one slice (i, j, 1). CT with integer voxels in the int16 range is sent as
    int16 (half of float32), label maps in their smallest unsigned type.
    """
    import nibabel as nib

    if arr.ndim == 2:
        arr = arr[..., None]
    img = nib.Nifti1Image(np.ascontiguousarray(arr), np.asarray(affine, dtype=np.float64))
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=level)


def compact_image(arr: np.ndarray) -> np.ndarray:
    """float32 voxels -> int16 when every value is an integer in range (CT in HU), else float32."""
    a = np.asarray(arr, dtype=np.float32)
    if a.size and np.all(np.isfinite(a)):
        lo, hi = float(a.min()), float(a.max())
        if -32768 <= lo and hi <= 32767 and np.array_equal(a, np.round(a)):
            return a.astype(np.int16)
    return a


def compact_labels(arr: np.ndarray) -> np.ndarray:
    hi = int(arr.max()) if arr.size else 0
    return arr.astype(np.uint8 if hi < 256 else np.uint16)


def _label_names_from_folder(folder: Path) -> dict[int, str]:
    prov = folder / "provenance.json"
    if not prov.is_file():
        return {}
    from medseg.inference.result import Provenance

    return Provenance.read(prov).label_names


def load_labels_on(path: str | Path, image: Any) -> tuple[np.ndarray, dict[int, str]]:
    """A label map (NIfTI/NRRD/MHA, DICOM SEG, or a ``medseg segment`` case folder holding
    ``seg.nii.gz``) on exactly ``image``'s grid, with its names when known.

    Raises :class:`~medseg.errors.GeometryError` when its grid is not the image's: the viewer
    shows voxels where they are and resamples nothing.
    """
    from medseg.io import load
    from medseg.io.read import detect_format

    p = Path(path)
    names: dict[int, str] = {}
    if p.is_dir() and (p / "seg.nii.gz").is_file():
        names = _label_names_from_folder(p)
        p = p / "seg.nii.gz"
    if detect_format(p) == "dicom":
        from medseg.io.dicom_seg import read_dicom_seg

        lab = read_dicom_seg(p, reference=image)
        names = names or {int(k): str(v) for k, v in (lab.meta.get("labels") or {}).items() if str(k).isdigit()}
    else:
        lab = load(p, kind="label")
        meta_names = lab.meta.get("labels") if isinstance(lab.meta.get("labels"), Mapping) else {}
        names = names or {int(k): str(v) for k, v in meta_names.items() if str(k).isdigit()}
    arr = as_numpy(lab)
    arr = arr[0] if arr.ndim == len(image.shape) else arr
    shape = tuple(int(s) for s in image.shape[1:])
    if tuple(arr.shape) != shape:
        raise GeometryError(f"{p.name}: label grid {tuple(arr.shape)} is not the image grid {shape}")
    if not np.allclose(affine_of(lab), affine_of(image), atol=1e-3, rtol=0):
        raise GeometryError(f"{p.name}: label affine differs from the image affine; the labels are not on its grid")
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(arr)
    if arr.size and arr.min() < 0:
        raise InputError(f"{p.name}: label map holds negative values")
    return compact_labels(arr.astype(np.int64)), names
