"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) through SimpleITK.

Geometry: ITK stores origin and direction in **LPS** and indexes voxels ``(x, y, z)``, which are
medseg's ``(i, j, k)``. A voxel's world point is ``p_LPS = origin + D @ diag(spacing) @ (i, j, k)``,
so the RAS affine is ``A[:3, :3] = F @ D @ diag(spacing)``, ``A[:3, 3] = F @ origin`` with
``F = diag(-1, -1, 1)``. ``sitk.GetArrayFromImage`` returns ``(z, y, x[, c])``: it is transposed
to ``(c, x, y, z)``. 2D images use the 2x2 block (``F = diag(-1, -1)``) and the unit k column.
A 4D image is read as channels along its 4th axis.

Safety: the header is read first (``ImageFileReader.ReadImageInformation``) and the declared
size checked; for uncompressed raw data (attached or detached) the data file must be at least
as large as declared (else "truncated"), and a detached data file must lie in the header's
folder (a header naming ``../../x`` or an absolute path is refused).

Size (~495 lines): one concern, the two ITK formats' headers; the reading and writing halves
share the LPS/RAS conversion and the header validation above.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import GeometryError, InputError, UnsafeInputError
from medseg.geometry import spacing_of
from medseg.io.formats import suffix_format
from medseg.io.safety import (
    affine_usable,
    check_compressed_size,
    check_declared_size,
    check_expansion,
    convert_voxels,
    library_detail,
)

_F3 = np.diag([-1.0, -1.0, 1.0])
_HEADER_LIMIT = 65536
_MET_MODALITY = {"MET_MOD_CT": "CT", "MET_MOD_MR": "MR", "MET_MOD_NM": "NM", "MET_MOD_US": "US"}


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Capture what ITK's C++ code prints on file descriptor 2 (MetaIO/NRRD chatter).

    The CLI promises one line on stderr for a bad input; ITK's own messages are collected
    here and folded into the error message instead.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): do not capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(ln.strip() for ln in sink.read(4096).decode("utf-8", "replace").splitlines() if ln.strip())


def _short(exc: BaseException, path: Path | None = None, extra: list[str] | None = None) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if extra:
        lines = lines + [" ".join(extra[:2])]
    # ITK messages: "...: <file>:<line>:\nitk::ERROR: ... <reason>"; keep the last informative line.
    text = lines[-1] if lines else type(exc).__name__
    text = re.sub(r"^.*?ERROR:\s*", "", text)
    text = library_detail(RuntimeError(text), limit=10_000)
    if path is not None:
        text = text.replace(str(path.resolve()), path.name).replace(str(path), path.name)
    return (text[:160] + "...") if len(text) > 160 else text


def _itemsize(pixel_id_string: str) -> int:
    bits = re.search(r"(\d+)-bit", pixel_id_string)
    if not bits:
        raise InputError(f"unsupported ITK pixel type {pixel_id_string!r}")
    size = int(bits.group(1)) // 8
    return 2 * size if "complex" in pixel_id_string else size


def _raw_layout(path: Path) -> tuple[Path, int, bool, str] | None:
    """Where the voxels lie: ``(data_file, data_offset, data_at_end, encoding)``.

    ``encoding`` is ``"raw"``, ``"zlib"`` (gzip/zlib streams) or ``"other"``; ``None`` when the
    header is too long or names a list of data files (ITK checks those itself).
    """
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_LIMIT)
    if head.startswith(b"NRRD"):
        return _nrrd_layout(path, head)
    return _meta_layout(path, head)


def _safe_detached(path: Path, name: str) -> Path:
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise UnsafeInputError(
            f"{path.name}: the header points to a data file outside its folder ({name!r}); refused"
        )
    return path.parent / candidate


def _nrrd_layout(path: Path, head: bytes) -> tuple[Path, int, bool, str] | None:
    end = head.find(b"\n\n")
    if end < 0:
        return None  # header longer than the limit: leave the decision to ITK
    fields: dict[str, str] = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    encoding = _NRRD_ENCODINGS.get(fields.get("encoding", "raw").lower(), "other")
    try:
        byte_skip = int(fields.get("byte skip", "0") or 0)
        line_skip = int(fields.get("line skip", "0") or 0)
    except ValueError:
        raise InputError(f"{path.name}: the NRRD header has a non-numeric byte/line skip") from None
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None and (data_file.upper().startswith("LIST") or " " in data_file):
        return None  # multi-file data: ITK checks it
    if line_skip != 0:
        encoding = "other"
    if data_file is None:
        return path, end + 2 + max(byte_skip, 0), byte_skip == -1, encoding
    return _safe_detached(path, data_file), max(byte_skip, 0), byte_skip == -1, encoding


def _meta_fields(head: bytes) -> tuple[dict[str, str], int] | None:
    """A MetaImage header's ``key = value`` fields (keys lower-cased) up to and including
    ElementDataFile, and the byte offset just past that line; None when there is none."""
    fields: dict[str, str] = {}
    offset = 0
    for line in head.decode("latin-1").splitlines(keepends=True):
        offset += len(line)
        key, sep, value = line.partition("=")
        if not sep:
            continue
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            return fields, offset
    return None


def _meta_layout(path: Path, head: bytes) -> tuple[Path, int, bool, str] | None:
    parsed = _meta_fields(head)
    if parsed is None:
        return None
    fields, offset = parsed
    encoding = "zlib" if fields.get("compresseddata", "false").lower() == "true" else "raw"
    data_file = fields["elementdatafile"]
    try:
        header_size = int(fields.get("headersize", "0") or 0)
    except ValueError:
        raise InputError(f"{path.name}: the MetaImage header has a non-numeric HeaderSize") from None
    if data_file.upper() == "LOCAL":
        return path, offset, False, encoding
    if data_file.upper().startswith("LIST") or "%" in data_file or " " in data_file:
        return None
    return _safe_detached(path, data_file), max(header_size, 0), header_size == -1, encoding


_MET_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}
_NRRD_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int",
                     "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64",
                     "uint64_t", "double"), 8),
}
_NRRD_ENCODINGS = {"raw": "raw", "gzip": "zlib", "gz": "zlib", "bzip2": "other", "bz2": "other",
                   "ascii": "text", "text": "text", "txt": "text", "hex": "text"}


def _numbers(value: str, n: int | None, key: str, name: str, *, positive: bool = False, integer: bool = False,
             allow_none: bool = False) -> list[float]:
    """``n`` finite numbers from a header field (ints when ``integer``); InputError naming the key."""
    text = re.sub(r"[(),]", " ", value)
    parts = text.split()
    if allow_none:
        parts = [p for p in parts if p.lower() != "none"]
    if n is not None and len(parts) != n:
        raise InputError(f"{name}: the header field {key} holds {len(parts)} values, expected {n}; the file is corrupt")
    try:
        nums = [int(p) if integer else float(p) for p in parts]
    except ValueError:
        raise InputError(f"{name}: the header field {key} is not numeric; the file is corrupt") from None
    if not all(math.isfinite(v) for v in nums):
        raise InputError(f"{name}: the header field {key} is not finite (NaN or infinite); the file is corrupt")
    if positive and not all(v > 0 for v in nums):
        raise InputError(f"{name}: the header field {key} must be > 0; the file is corrupt")
    return nums


def _validate_meta_header(path: Path, head: bytes) -> None:
    """MetaImage fields checked in Python before ITK's C++ parser sees them (ITK crashes on some,
    e.g. ``NDims = -1``): dimensions, sizes, types, spacing, origin, matrix, data file."""
    name = path.name
    parsed = _meta_fields(head)
    if parsed is None:
        raise InputError(f"{name}: the MetaImage header has no ElementDataFile; the file is corrupt or truncated")
    fields = parsed[0]
    ndims_raw = fields.get("ndims")
    if ndims_raw is None:
        raise InputError(f"{name}: the MetaImage header has no NDims; the file is corrupt")
    ndims = int(_numbers(ndims_raw, 1, "NDims", name, integer=True)[0])
    if not 2 <= ndims <= 4:
        raise InputError(f"{name}: NDims = {ndims}; medseg reads 2D, 3D or 4D images")
    if "dimsize" not in fields:
        raise InputError(f"{name}: the MetaImage header has no DimSize; the file is corrupt")
    _numbers(fields["dimsize"], ndims, "DimSize", name, positive=True, integer=True)
    etype = fields.get("elementtype", "").upper()
    if etype not in _MET_TYPES:
        raise InputError(f"{name}: ElementType is not a supported MET_ type; the file is corrupt")
    for key in ("elementspacing", "elementsize"):
        if key in fields:
            _numbers(fields[key], ndims, key, name, positive=True)
    for key in ("offset", "position", "origin"):
        if key in fields:
            _numbers(fields[key], ndims, key, name)
    for key in ("transformmatrix", "rotation", "orientation"):
        if key in fields:
            _numbers(fields[key], ndims * ndims, key, name)
    if "elementnumberofchannels" in fields:
        ch = _numbers(fields["elementnumberofchannels"], 1, "ElementNumberOfChannels", name, positive=True,
                      integer=True)[0]
        if ch > 4096:
            raise InputError(f"{name}: ElementNumberOfChannels = {ch:g} is not plausible; the file is corrupt")
    for key in ("headersize", "compresseddatasize"):
        if key in fields:
            _numbers(fields[key], 1, key, name, integer=True)
    if "compresseddatasize" in fields:  # ITK allocates this many bytes before reading them
        csize = int(_numbers(fields["compresseddatasize"], 1, "CompressedDataSize", name, integer=True)[0])
        data_file = fields["elementdatafile"]
        stored = path.stat().st_size
        if data_file.upper() != "LOCAL":
            candidate = path.parent / data_file
            stored = candidate.stat().st_size if candidate.is_file() else 0
        if not 0 < csize <= stored:
            raise InputError(f"{name}: CompressedDataSize = {csize} does not fit the {stored} bytes stored; "
                             "the file is corrupt")
    if "ndims" in fields and fields.get("compresseddata", "false").lower() not in ("true", "false"):
        raise InputError(f"{name}: CompressedData must be True or False; the file is corrupt")
    data_file = fields["elementdatafile"]
    if data_file.upper().startswith("LIST") or "%" in data_file:
        raise UnsafeInputError(f"{name}: the header names a list of data files; medseg reads only a single "
                               "data file beside the header")


def _validate_nrrd_header(path: Path, head: bytes) -> None:
    """NRRD fields checked in Python before ITK sees them (see :func:`_validate_meta_header`)."""
    name = path.name
    end = head.find(b"\n\n")
    if end < 0 and len(head) < _HEADER_LIMIT:
        end = len(head)  # a detached header (.nhdr) may end at the end of the file
    if end < 0:
        raise InputError(f"{name}: the NRRD header does not end within {_HEADER_LIMIT} bytes; the file is "
                         "corrupt or truncated")
    fields: dict[str, str] = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    if "dimension" not in fields or "sizes" not in fields or "type" not in fields:
        raise InputError(f"{name}: the NRRD header lacks dimension, sizes or type; the file is corrupt")
    dim = int(_numbers(fields["dimension"], 1, "dimension", name, integer=True)[0])
    if not 1 <= dim <= 5:
        raise InputError(f"{name}: dimension = {dim}; medseg reads 2D, 3D or 4D images")
    _numbers(fields["sizes"], dim, "sizes", name, positive=True, integer=True)
    if fields["type"].lower() not in _NRRD_TYPES:
        raise InputError(f"{name}: the NRRD type is not a supported scalar type; the file is corrupt")
    if fields.get("encoding", "raw").lower() not in _NRRD_ENCODINGS:
        raise InputError(f"{name}: the NRRD encoding is not supported; the file is corrupt")
    if "endian" in fields and fields["endian"].lower() not in ("little", "big"):
        raise InputError(f"{name}: the NRRD endian field is neither little nor big; the file is corrupt")
    if "spacings" in fields:
        _numbers(fields["spacings"], None, "spacings", name, positive=True, allow_none=True)
    if "space directions" in fields:
        _numbers(fields["space directions"], None, "space directions", name, allow_none=True)
    if "space origin" in fields:
        _numbers(fields["space origin"], None, "space origin", name)
    for key in ("byte skip", "line skip"):
        if key in fields:
            _numbers(fields[key], 1, key, name, integer=True)
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None and (data_file.upper().startswith("LIST") or " " in data_file or "%" in data_file):
        raise UnsafeInputError(f"{name}: the header names a list of data files; medseg reads only a single "
                               "data file beside the header")


def _validate_header(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_LIMIT)
    if head.startswith(b"NRRD"):
        _validate_nrrd_header(path, head)
    elif suffix_format(path) == "mha" or head.lstrip().startswith((b"ObjectType", b"NDims")):
        _validate_meta_header(path, head)
    else:
        raise InputError(f"{path.name}: not a readable NRRD/MetaImage file (no NRRD or MetaImage header)")
    layout = _raw_layout(path)  # data file inside the header's folder (else UnsafeInputError)
    if layout is not None and not layout[0].is_file():
        raise InputError(f"{path.name}: its data file {layout[0].name!r} is missing")


def _reader(path: Path):
    import SimpleITK as sitk

    if not path.is_file():
        raise InputError(f"{path.name}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: the file is empty (0 bytes)")
    _validate_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _captured_stderr() as chatter:
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path.name}: not a readable NRRD/MetaImage file ({_short(exc, path, chatter)})") from None
    return reader


def _check_reader(path: Path, reader: Any) -> tuple[int, ...]:
    import SimpleITK as sitk

    size = tuple(int(s) for s in reader.GetSize())
    ncomp = int(reader.GetNumberOfComponents())
    itemsize = _itemsize(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    declared = (*size, ncomp) if ncomp > 1 else size
    # complex/vector item sizes: _itemsize already counts both parts of a complex number
    check_declared_size(declared, itemsize, what=path.name)
    layout = _raw_layout(path)
    if layout is not None:
        data_file, offset, at_end, encoding = layout
        if not data_file.is_file():
            raise InputError(f"{path.name}: its data file {data_file.name!r} is missing")
        stored = data_file.stat().st_size - (0 if at_end else offset)
        n_bytes = math.prod(declared) * itemsize
        if encoding == "raw":
            check_declared_size(declared, itemsize, file_size=stored, what=path.name)
        elif encoding == "zlib":
            check_compressed_size(n_bytes, stored, what=path.name)
            check_expansion(n_bytes, stored, what=path.name)
        elif encoding == "text":  # at least one character and a separator per value
            check_declared_size(declared, 2, file_size=stored + 1, what=path.name)
        else:
            check_expansion(n_bytes, stored, what=path.name)
    return size


def itk_geometry(size: tuple[int, ...], spacing: Any, origin: Any, direction: Any) -> np.ndarray:
    """RAS affine (4x4, mm) from ITK's LPS ``spacing``, ``origin`` and flat ``direction``.

    Uses the first ``min(dim, 3)`` axes; a 2D image gets the unit k column ``(0, 0, 1)``.
    """
    dim = len(size)
    d = np.asarray(direction, dtype=np.float64).reshape(dim, dim)
    n = min(dim, 3)
    aff = np.eye(4)
    flip = np.diag([-1.0, -1.0, 1.0][:n])
    aff[:n, :n] = flip @ d[:n, :n] @ np.diag(np.asarray(spacing, dtype=np.float64)[:n])
    aff[:n, 3] = flip @ np.asarray(origin, dtype=np.float64)[:n]
    if not affine_usable(aff):
        raise GeometryError("the header's spacing/direction give a singular or non-finite voxel grid")
    return aff


def header_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Header-only facts (after the size checks): shape (channel first), dtype, RAS affine."""
    import SimpleITK as sitk

    path = Path(path)
    reader = _reader(path)
    size = _check_reader(path, reader)
    ncomp = int(reader.GetNumberOfComponents())
    affine = itk_geometry(size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    spatial = size[:3]
    channels = ncomp * (size[3] if len(size) > 3 else 1)
    return {
        "shape": (channels, *spatial),
        "dtype": sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        "affine": affine,
    }


def read_itk(
    path: str | os.PathLike[str],
    *,
    kind: str = "image",
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read NRRD/NHDR/MHA/MHD; return ``(array (C, *spatial), affine 4x4 RAS mm, meta)``."""
    import SimpleITK as sitk

    path = Path(path)
    reader = _reader(path)
    size = _check_reader(path, reader)
    if len(size) not in (2, 3, 4):
        raise InputError(f"{path.name}: {len(size)}D images are not supported; need 2D, 3D or 4D")
    affine = itk_geometry(size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    modality = "unknown"
    if reader.HasMetaDataKey("Modality"):
        modality = _MET_MODALITY.get(reader.GetMetaData("Modality").strip(), "unknown")
    try:
        with _captured_stderr() as chatter:
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"{path.name}: voxel data cannot be read, the file is truncated or corrupt ({_short(exc, path, chatter)})"
        ) from None
    view = sitk.GetArrayViewFromImage(image)  # no copy: the transposing copy below is the only one
    arr = view
    dim = len(size)
    ncomp = image.GetNumberOfComponentsPerPixel()
    rev = list(range(dim - 1, -1, -1))
    if ncomp > 1:
        arr = np.transpose(arr, [*rev, dim])  # (x, y, z[, t], c)
        if dim == 4:
            arr = arr.reshape(*arr.shape[:3], -1)
        arr = np.moveaxis(arr, -1, 0)
    else:
        arr = np.transpose(arr, rev)
        arr = np.moveaxis(arr, 3, 0) if dim == 4 else arr[None]
    arr, kind = convert_voxels(arr, kind, path.name, allow_nonfinite=allow_nonfinite)
    ndim = arr.ndim - 1
    fmt = "nrrd" if suffix_format(path) == "nrrd" else "mha"
    meta = {
        "format": fmt,
        "kind": kind,
        "modality": modality,
        "spacing": spacing_of(affine, ndim),
    }
    out = np.ascontiguousarray(arr)
    if np.may_share_memory(out, view):  # never hand out memory owned by the ITK image
        out = out.copy()
    del image
    return out, affine, meta


def _in_plane_2d(affine: np.ndarray) -> bool:
    return bool(np.allclose(affine[2, :2], 0, atol=1e-9) and np.allclose(affine[:2, 2], 0, atol=1e-9)
                and abs(affine[2, 3]) < 1e-9)


def write_itk(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write ``array`` (C, *spatial) with ``affine`` (RAS mm) as NRRD/MHA (compressed).

    Not atomic by itself: :func:`medseg.io.write.save` calls it on a temporary path. Several
    channels become an ITK vector image. A 2D image whose plane is not the z=0 plane of world
    space is written as a one-slice 3D image so that no geometry is lost.
    """
    import SimpleITK as sitk

    arr = np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    if arr.ndim == 3 and not _in_plane_2d(affine):
        arr = arr[..., None]
    ndim = arr.ndim - 1
    n = ndim
    spacing = np.asarray(spacing_of(affine, n))  # a 2D affine is in the z=0 plane here (_in_plane_2d)
    flip = np.diag([-1.0, -1.0, 1.0][:n])
    direction = flip @ affine[:n, :n] / spacing
    origin = flip @ affine[:n, 3]
    rev = list(range(ndim - 1, -1, -1))
    if arr.shape[0] == 1:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr[0], rev)))
    else:
        vec = np.moveaxis(arr, 0, -1)
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(vec, [*rev, ndim])), isVector=True)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in direction.ravel()])
    try:
        with _captured_stderr() as chatter:
            sitk.WriteImage(image, str(path), True)
    except RuntimeError as exc:
        raise InputError(f"{Path(path).name}: SimpleITK could not write the image ({_short(exc, Path(path), chatter)})") from None
