"""NIfTI-1 / NIfTI-2 (``.nii``, ``.nii.gz``) reading and writing with nibabel.

Axis convention: NIfTI's voxel axes are medseg's ``(i, j, k)`` unchanged, and the NIfTI affine
already maps voxel indices to **RAS+ millimetres**, so no flip is ever applied on read or write.

Affine rule on read (the same precedence as nibabel's ``get_best_affine``):

1. ``sform_code > 0``: the sform. If ``qform_code > 0`` too and the two map any corner of the
   volume to points more than 1e-3 mm apart, a :class:`GeometryWarning` says so and the sform
   is used (it is what SPM/FSL/ANTs/nibabel/MONAI use).
2. else ``qform_code > 0``: the qform (quaternion, always a rigid rotation + pixdim).
3. else (Analyze-style, no orientation stored): **fallback** to nibabel's base affine (pixdim
   scaling, x flipped, volume centred on the origin) with a :class:`GeometryWarning` and
   ``meta["affine_source"] = "pixdim"``. Left/right is then *not* known from the file; this is
   the same affine nibabel and MONAI return, so results agree with those tools, and the
   warning plus ``describe()``'s ``affine_source`` make the doubt visible.

A singular or non-finite stored matrix is skipped (with a warning) in favour of the next rule.
4D+ files become channels: ``(X, Y, Z, T, ...)`` -> ``(T*..., X, Y, Z)``. 2D files stay 2D.

On write, both sform and qform are set with code 1 ("scanner"); the qform is left unset (code 0)
only when the affine has shear (not representable as a quaternion). ``xyzt_units`` = mm.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import GeometryError, InputError
from medseg.geometry import spacing_of
from medseg.io.safety import (
    GeometryWarning,
    affine_usable,
    check_compressed_size,
    check_declared_size,
    check_expansion,
    convert_voxels,
    library_detail,
)

NIFTI_INTENT_LABEL = 1002
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, ValueError, gzip.BadGzipFile,
                                                 OverflowError, struct.error)
_AGREE_MM = 1e-3


def _nib_errors() -> tuple[type[BaseException], ...]:
    import nibabel as nib

    return (*_READ_ERRORS, nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError)


def _header_data_error() -> type[BaseException]:
    import nibabel as nib

    return nib.spatialimages.HeaderDataError


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _open_header(path: Path):
    """nibabel image with a lazy data proxy: reads only the header."""
    import nibabel as nib

    if not path.is_file():
        raise InputError(f"{path.name}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path.name}: the file is empty (0 bytes); it is not a NIfTI image")
    name = path.name.lower()
    if name.endswith(".gz") and not _is_gzip(path):
        raise InputError(f"{path.name}: named .gz but not gzip-compressed; the file is not a NIfTI image")
    if name.endswith(".nii") and _is_gzip(path):
        raise InputError(f"{path.name}: the file is gzip-compressed; rename it to .nii.gz")
    try:
        if name.endswith((".nii", ".nii.gz")):
            img = nib.load(str(path))
        else:  # found by its magic bytes (no suffix): nibabel would dispatch on the name
            img = _from_fileobj(path)
    except _nib_errors() as exc:
        if isinstance(exc, ValueError) and "w2 should be positive" in str(exc):
            # nibabel builds the qform when no sform is stored: b^2 + c^2 + d^2 > 1 is no rotation
            raise GeometryError(f"{path.name}: the qform quaternion is invalid (quatern_b/c/d give "
                                "b^2 + c^2 + d^2 > 1) and no sform is stored; the orientation is unknown") from None
        raise InputError(f"{path.name}: not a readable NIfTI file ({_short(exc, path)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path.name}: {type(img).__name__} is not a single-file NIfTI image")
    return img


def sniff_nifti(path: str | os.PathLike[str]) -> bool:
    """True when the file (gzip-compressed or not) starts with a NIfTI-1 or NIfTI-2 header."""
    path = Path(path)
    try:
        opener = gzip.open if _is_gzip(path) else open
        with opener(path, "rb") as fh:
            head = fh.read(544)
    except _READ_ERRORS:
        return False
    return (len(head) >= 348 and head[344:348] == b"n+1\x00") or head[4:8] == b"n+2\x00"


def _from_fileobj(path: Path):
    import nibabel as nib

    fobj = gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")  # kept open by the data proxy
    head = fobj.read(8)
    fobj.seek(0)
    klass = nib.Nifti2Image if head[4:8] == b"n+2\x00" else nib.Nifti1Image
    holder = nib.FileHolder(fileobj=fobj)
    return klass.from_file_map({"header": holder, "image": holder})


def _short(exc: BaseException, path: Path | None = None) -> str:
    text = library_detail(exc, limit=10_000)
    if path is not None:
        text = text.replace(str(path.resolve()), path.name).replace(str(path), path.name)
    # nibabel puts the absolute path in its messages; keep just the gist.
    return (text[:160] + "...") if len(text) > 160 else (text or type(exc).__name__)


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    dims = [max(int(s) - 1, 0) for s in shape[:3]] + [0] * (3 - min(len(shape), 3))
    pts = np.array(np.meshgrid(*[[0, d] for d in dims], indexing="ij")).reshape(3, -1)
    return np.vstack([pts, np.ones((1, pts.shape[1]))])


def _usable(aff: np.ndarray) -> bool:
    return affine_usable(aff)


def choose_affine(header: Any, name: str = "NIfTI file") -> tuple[np.ndarray, str]:
    """Apply the module's affine rule to a nibabel NIfTI header; return ``(affine, source)``.

    ``affine`` maps voxel ``(i, j, k)`` to RAS+ mm; ``source`` is ``"sform"``, ``"qform"`` or
    ``"pixdim"``.
    """
    shape = header.get_data_shape()
    scode, qcode = int(header["sform_code"]), int(header["qform_code"])
    sform = header.get_sform() if scode > 0 else None
    qform = None
    if qcode > 0:
        try:
            qform = header.get_qform()
        except (ValueError, ArithmeticError, _header_data_error()):
            # b^2 + c^2 + d^2 > 1 (no valid rotation) or pixdim not usable: skipped, like a
            # singular matrix, in favour of the next rule
            warnings.warn(f"{name}: the qform is invalid (quaternion or pixdim out of range); ignoring it",
                          GeometryWarning, stacklevel=3)
    if sform is not None and not _usable(sform):
        warnings.warn(f"{name}: the sform is singular or not finite; ignoring it", GeometryWarning, stacklevel=3)
        sform = None
    if qform is not None and not _usable(qform):
        warnings.warn(f"{name}: the qform is singular or not finite; ignoring it", GeometryWarning, stacklevel=3)
        qform = None
    if sform is not None:
        if qform is not None:
            c = _corners(shape)
            gap = float(np.max(np.linalg.norm((sform @ c - qform @ c)[:3], axis=0)))
            if gap > _AGREE_MM:
                warnings.warn(
                    f"{name}: sform and qform disagree by up to {gap:.3g} mm; using the sform",
                    GeometryWarning,
                    stacklevel=3,
                )
        return np.asarray(sform, dtype=np.float64), "sform"
    if qform is not None:
        return np.asarray(qform, dtype=np.float64), "qform"
    base = np.asarray(header.get_base_affine(), dtype=np.float64)
    if not _usable(base):
        raise GeometryError(f"{name}: no sform, no qform and unusable pixdim; the voxel geometry is unknown")
    warnings.warn(
        f"{name}: no sform or qform stored (both codes 0); using a pixdim-only affine, so "
        "left/right is not known from the file",
        GeometryWarning,
        stacklevel=3,
    )
    return base, "pixdim"


def header_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Header-only facts: shape (channel first), dtype, affine (RAS mm), affine source.

    Runs the declared-size safety check; reads no voxel data.
    """
    path = Path(path)
    return _header_facts(path, _open_header(path))


def _header_facts(path: Path, img: Any) -> dict[str, Any]:
    hdr = img.header
    shape = tuple(int(s) for s in hdr.get_data_shape())
    dtype = hdr.get_data_dtype()
    compressed = _is_gzip(path)
    raw_offset = float(hdr["vox_offset"])
    if not np.isfinite(raw_offset) or raw_offset < 0 or raw_offset > 2**62:
        raise InputError(f"{path.name}: vox_offset is not a usable byte offset (negative, huge or not finite); "
                         "the file is corrupt")
    offset = int(hdr.get_data_offset())
    n_bytes = check_declared_size(
        shape,
        dtype.itemsize,
        file_size=None if compressed else path.stat().st_size,
        data_offset=offset,
        what=path.name,
    )
    if compressed:
        check_compressed_size(n_bytes + offset, path.stat().st_size, what=path.name)
        check_expansion(n_bytes + offset, path.stat().st_size, what=path.name)
    if len(shape) < 2:
        raise InputError(f"{path.name}: a {len(shape)}D NIfTI is not an image; need 2D, 3D or 4D")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        affine, source = choose_affine(hdr, path.name)
    spatial = shape[:3]
    channels = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    slope, inter = hdr.get_slope_inter()
    return {
        "shape": (channels, *spatial),
        "stored_shape": shape,
        "dtype": str(dtype),
        "affine": affine,
        "affine_source": source,
        "warnings": [str(w.message) for w in caught],
        "scaled": slope is not None and (slope != 1 or (inter or 0) != 0),
        "intent_code": int(hdr["intent_code"]),
        "compressed": compressed,
    }


def read_nifti(
    path: str | os.PathLike[str],
    *,
    kind: str = "image",
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a NIfTI file; return ``(array (C, *spatial), affine 4x4 RAS mm, meta)``.

    ``kind``: ``"image"`` float32 with scl_slope/inter applied, ``"label"`` integer (see
    :func:`medseg.io.safety.convert_voxels`), or ``"auto"``. Geometry follows the module's
    affine rule. Raises :class:`~medseg.errors.InputError` for empty, corrupt, truncated or
    non-finite files and :class:`~medseg.errors.UnsafeInputError` for absurd declared sizes.
    """
    path = Path(path)
    img = _open_header(path)
    hdr = img.header
    info = _header_facts(path, img)
    for msg in info["warnings"]:
        warnings.warn(msg, GeometryWarning, stacklevel=2)
    try:
        data = np.asanyarray(img.dataobj)
    except _nib_errors() as exc:
        raise InputError(f"{path.name}: voxel data cannot be read, the file is truncated or corrupt ({_short(exc, path)})") from None
    data = np.asarray(data)
    shape = data.shape
    if len(shape) > 3:
        data = np.moveaxis(data.reshape(*shape[:3], -1), -1, 0)
    else:
        data = data[None]
    data, kind = convert_voxels(
        data,
        kind,
        path.name,
        allow_nonfinite=allow_nonfinite,
        label_hint=int(hdr["intent_code"]) == NIFTI_INTENT_LABEL,
    )
    affine = info["affine"]
    ndim = data.ndim - 1
    meta: dict[str, Any] = {
        "format": "nifti",
        "kind": kind,
        "modality": "unknown",
        "affine_source": info["affine_source"],
        "spacing": spacing_of(affine, ndim),
    }
    descrip = hdr["descrip"].tobytes().split(b"\0", 1)[0].decode("ascii", "replace").strip()
    if descrip:
        meta["description"] = descrip
    # No C-order copy: nibabel's arrays are Fortran-ordered (i, j, k), which torch takes as a
    # strided view, like the DICOM reader's output (a transposing copy cost seconds per volume).
    return data, affine, meta


def _is_orthogonal(affine: np.ndarray) -> bool:
    m = affine[:3, :3]
    zooms = np.linalg.norm(m, axis=0)
    if np.any(zooms == 0):
        return False
    r = m / zooms
    return bool(np.allclose(r.T @ r, np.eye(3), atol=1e-6))


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write ``array`` (C, *spatial) with ``affine`` (RAS mm) to ``path`` (``.nii``/``.nii.gz``).

    Not atomic by itself: :func:`medseg.io.write.save` calls it on a temporary path.
    One channel is written as a 2D/3D file; several as a 4D file ``(X, Y, Z, C)`` (2D inputs
    with several channels become ``(X, Y, 1, C)``).
    """
    import nibabel as nib

    arr = np.asarray(array)
    if arr.ndim not in (3, 4):
        raise InputError(f"cannot write an array of shape {arr.shape} as NIfTI; need (C, X, Y[, Z])")
    if arr.shape[0] == 1:
        data = arr[0]
    else:
        spatial = arr[0].shape if arr.ndim == 4 else (*arr.shape[1:], 1)
        data = np.moveaxis(arr, 0, -1).reshape(*spatial, arr.shape[0])
    affine = np.asarray(affine, dtype=np.float64)
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(affine.astype(np.float32))):
            raise GeometryError(f"{Path(path).name}: the affine does not fit NIfTI's 32-bit floats "
                                "(coordinates beyond 3.4e38 mm); the source geometry is corrupt")
    # NIfTI-1 stores each dimension as a 16-bit integer: larger images go to NIfTI-2
    klass = nib.Nifti1Image if max(data.shape) <= 32767 else nib.Nifti2Image
    img = klass(data, affine)
    img.header.set_xyzt_units(xyz="mm")
    img.set_sform(affine, code=1)
    if _is_orthogonal(affine):
        img.set_qform(affine, code=1)
    else:
        img.set_qform(None, code=0)
    if np.issubdtype(data.dtype, np.integer):
        img.header.set_slope_inter(1.0, 0.0)
    img.to_filename(str(path))
