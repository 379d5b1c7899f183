"""TIFF (tifffile) and PNG (Pillow) images: 2D with channels, or TIFF z-stacks.

Axis convention (the same as DICOM in medseg and as ITK/MONAI's PIL reader): ``i`` is the
column index ``x`` of the stored picture, ``j`` the row index ``y``, so
``MetaTensor[c, i, j] == picture[j, i, c]``. Z-stacks (TIFF axes ``ZYX``) add ``k = z``.

World geometry: these files have no patient frame. medseg uses ITK's reading (origin 0, identity
direction in LPS), i.e. the RAS affine ``diag(-sx, -sy, sz)``, so a TIFF/PNG converted to NIfTI
sits where SimpleITK puts the original.

Spacing (mm):
* OME-TIFF: ``PhysicalSizeX/Y/Z`` (+ units, default micrometre) of the first ``<Pixels>``.
* TIFF: XResolution/YResolution with ResolutionUnit inch or cm; with unit "none", an ImageJ
  ``unit`` (micron, nm, mm, cm) if present; ImageJ ``spacing`` gives z. Otherwise 1.0 and
  ``meta["spacing_source"] = "default"``.
* PNG: the pHYs chunk (Pillow's ``dpi``), else 1.0 and ``spacing_source = "default"``.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError, UnsafeInputError
from medseg.io.safety import (
    IMAGE_EXPANSION_FLOOR,
    MAX_SPACING_MM,
    MIN_SPACING_MM,
    check_declared_size,
    check_expansion,
    convert_voxels,
    library_detail,
)

_UNIT_MM = {
    "micron": 1e-3, "microns": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "\\u00b5m": 1e-3, "micrometer": 1e-3,
    "nm": 1e-6, "nanometer": 1e-6, "mm": 1.0, "millimeter": 1.0, "cm": 10.0, "centimeter": 10.0,
}
_CHANNEL_AXES = "SC"
_PNG_MODES = {  # mode -> (bands, bytes per band)
    "1": (1, 1), "L": (1, 1), "P": (1, 1), "LA": (2, 1), "PA": (2, 1), "RGB": (3, 1), "RGBA": (4, 1),
    "CMYK": (4, 1), "YCbCr": (3, 1), "I": (1, 4), "F": (1, 4), "I;16": (1, 2), "I;16B": (1, 2),
    "I;16L": (1, 2), "I;16N": (1, 2),
}


def _short(exc: BaseException, path: Path) -> str:
    text = library_detail(exc, limit=10_000)
    text = text.replace(str(path.resolve()), path.name).replace(str(path), path.name)
    return (text[:160] + "...") if len(text) > 160 else (text or type(exc).__name__)


#: what tifffile / Pillow (pure-Python parsers of untrusted bytes) raise on malformed files; caught
#: only around their calls and reported as "not a readable TIFF/PNG image"
_PARSER_ERRORS = (ValueError, OSError, EOFError, KeyError, IndexError, TypeError, AttributeError, RuntimeError,
                  NotImplementedError, ZeroDivisionError, OverflowError, struct.error, zlib.error, LookupError,
                  UnicodeError, AssertionError, SyntaxError)


def _tiff_errors():
    import tifffile

    return (tifffile.TiffFileError, *_PARSER_ERRORS)


def _finite_spacing(values: tuple[float, ...]) -> bool:
    """Spacings (mm) worth believing: finite, 1 pm to 1 km (outside that the resolution tag is
    broken; see :data:`medseg.io.safety.MIN_SPACING_MM`)."""
    return all(v is not None and math.isfinite(v) and MIN_SPACING_MM <= v <= MAX_SPACING_MM for v in values)


def _affine_2d3d(spacing: tuple[float, ...]) -> np.ndarray:
    aff = np.eye(4)
    aff[0, 0] = -spacing[0]
    aff[1, 1] = -spacing[1]
    if len(spacing) > 2:
        aff[2, 2] = spacing[2]
    return aff


def _ratio(value: Any) -> float | None:
    try:
        if isinstance(value, tuple) and len(value) == 2:
            return float(Fraction(int(value[0]), int(value[1]))) if value[1] else None
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


_OME_UNIT_MM = {"\u00b5m": 1e-3, "um": 1e-3, "nm": 1e-6, "mm": 1.0, "cm": 10.0, "m": 1000.0}


def _ome_spacing(ome_xml: str | None) -> tuple[float, float, float | None] | None:
    """``(sx, sy, sz or None)`` in mm from the first OME ``<Pixels>`` element, else ``None``.

    Read with a regular expression on the first element only (no XML parser on untrusted text).
    OME's default unit is the micrometre.
    """
    if not ome_xml:
        return None
    tag = re.search(r"<(?:\w+:)?Pixels\b([^>]{0,4000})>", ome_xml[:200_000])
    if tag is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', tag.group(1)))

    def size(axis: str) -> float | None:
        try:
            value = float(attrs[f"PhysicalSize{axis}"])
        except (KeyError, ValueError):
            return None
        unit = _OME_UNIT_MM.get(attrs.get(f"PhysicalSize{axis}Unit", "\u00b5m"))
        return value * unit if unit is not None and value > 0 else None

    sx, sy = size("X"), size("Y")
    if sx is None or sy is None:
        return None
    return sx, sy, size("Z")


def _check_ome_sizes(ome_xml: str | None, n_pages: int, name: str) -> None:
    """Every OME ``<Pixels>`` element's SizeX/Y/Z/C/T: positive integers whose product fits the
    voxel cap, and no more planes than the file has pages (tifffile would otherwise build a list
    of that many missing planes, or fill them with zeros)."""
    if not ome_xml:
        return
    planes = 0
    for tag in re.finditer(r"<(?:\w+:)?Pixels\b([^>]{0,4000})>", ome_xml[:1_000_000]):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', tag.group(1)))
        sizes = []
        for axis in "XYZCT":
            raw = attrs.get(f"Size{axis}", "1")
            if not re.fullmatch(r"\d{1,12}", raw.strip()):
                raise InputError(f"{name}: OME Size{axis} is not a positive integer; the file is corrupt")
            sizes.append(int(raw))
        check_declared_size(sizes, 1, what=f"{name} (OME metadata)")
        planes += sizes[2] * sizes[3] * sizes[4]
    if planes > max(n_pages, 1) * 4:  # C may be stored as samples of one page (RGB): allow 4 per page
        raise InputError(f"{name}: the OME metadata declares {planes} planes but the file holds {n_pages} pages; "
                         "the file is corrupt or incomplete")


def _tiff_spacing(page: Any, imagej: dict[str, Any] | None,
                  ome_xml: str | None = None) -> tuple[float, float, float | None, str]:
    """``(sx, sy, sz or None, source)`` in mm: OME-XML sizes, else the page's resolution tags
    (+ ImageJ unit/spacing), else the 1.0 default."""
    ome = _ome_spacing(ome_xml)
    if ome is not None:
        return (*ome, "ome")
    tags = page.tags
    xres = _ratio(tags["XResolution"].value) if "XResolution" in tags else None
    yres = _ratio(tags["YResolution"].value) if "YResolution" in tags else None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    per_unit_mm = {2: 25.4, 3: 10.0}.get(unit)
    ij_unit = str((imagej or {}).get("unit", "")).strip().lower()
    if per_unit_mm is None and ij_unit in _UNIT_MM:
        per_unit_mm = _UNIT_MM[ij_unit]
    sz = None
    if imagej and "spacing" in imagej and ij_unit in _UNIT_MM:
        sz = float(imagej["spacing"]) * _UNIT_MM[ij_unit]
    if per_unit_mm is None or not xres or not yres or xres <= 0 or yres <= 0:
        return 1.0, 1.0, sz, "default"
    return per_unit_mm / xres, per_unit_mm / yres, sz, "tiff_resolution"


def _layout(axes: str, shape: tuple[int, ...], name: str) -> tuple[list[int], list[int], int | None]:
    """Axis positions: (channel axes, [x, y], z or None); other axes must be singletons."""
    chan, z = [], None
    for pos, (ax, n) in enumerate(zip(axes, shape, strict=True)):
        if ax in _CHANNEL_AXES:
            chan.append(pos)
        elif ax == "Z":
            z = pos
        elif ax not in "YX" and n != 1:
            raise InputError(
                f"{name}: TIFF axes {axes!r} {tuple(shape)} hold a {ax!r} dimension of size {n}; "
                "medseg reads 2D images with channels (YX, YXS, CYX) or z-stacks (ZYX)"
            )
    if "X" not in axes or "Y" not in axes:
        raise InputError(f"{name}: TIFF axes {axes!r} have no X/Y image plane")
    return chan, [axes.index("X"), axes.index("Y")], z


def read_tiff(
    path: str | os.PathLike[str],
    *,
    kind: str = "image",
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a TIFF; return ``(array (C, X, Y[, Z]), affine 4x4 RAS mm, meta)``.

    The page shapes and strip/tile byte ranges are checked against the cap and the file size
    before any pixel is decoded.
    """
    import tifffile

    path = Path(path)
    _check_nonempty(path)
    file_size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome:  # tifffile sizes its series from the XML: check it first
                _check_ome_sizes(tif.ome_metadata, len(tif.pages), path.name)
            if not tif.series:
                raise InputError(f"{path.name}: the TIFF holds no image")
            series = tif.series[0]
            shape, axes, dtype = tuple(int(s) for s in series.shape), series.axes, np.dtype(series.dtype)
            n_bytes = check_declared_size(shape, dtype.itemsize, what=path.name)
            pages = list(series.pages)
            if not pages or pages[0] is None:
                raise InputError(f"{path.name}: the TIFF image has no readable page")
            stored = 0
            if any(page is None for page in pages):
                raise InputError(f"{path.name}: the image metadata declares {len(pages)} planes but the file holds "
                                 f"{sum(p is not None for p in pages)}; the file is corrupt or incomplete")
            for page in pages:
                if page is None:
                    continue
                for off, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                    if off + count > file_size:
                        raise InputError(
                            f"{path.name}: the file is truncated: image data declared up to byte "
                            f"{off + count} but the file has {file_size} bytes"
                        )
                    stored += int(count)
            # strips/tiles hold the voxels: compressed or not, they cannot expand beyond the cap
            check_expansion(n_bytes, stored, what=path.name, floor=IMAGE_EXPANSION_FLOOR)
            chan, (xa, ya), za = _layout(axes, shape, path.name)
            sx, sy, sz, source = _tiff_spacing(pages[0], tif.imagej_metadata, tif.ome_metadata if tif.is_ome else None)
            data = np.asarray(series.asarray())
            if data.size != math.prod(shape):
                raise InputError(f"{path.name}: decoded {data.size} values for a declared shape {shape}; "
                                 "the file is corrupt")
            data = data.reshape(shape)
    except ImportError:  # tifffile imports a codec only when a page needs it (zstd, jpeg, ...)
        raise InputError(f"{path.name}: the TIFF's compression needs a codec that is not installed here "
                         "(tifffile's optional imagecodecs); save it uncompressed, LZW or deflate") from None
    except _tiff_errors() as exc:
        raise InputError(f"{path.name}: not a readable TIFF image ({type(exc).__name__}: {_short(exc, path)})") from None
    order = chan + [xa, ya] + ([za] if za is not None else [])
    rest = [p for p in range(len(shape)) if p not in order]
    data = np.transpose(data, order + rest)
    spatial = data.shape[len(chan):len(chan) + (3 if za is not None else 2)]
    data = data.reshape(-1, *spatial)
    data, kind = convert_voxels(data, kind, path.name, allow_nonfinite=allow_nonfinite)
    if not _finite_spacing((sx, sy)):  # a resolution tag of 0 or 1e-300: no usable size stored
        sx, sy, source = 1.0, 1.0, "default"
    if sz is not None and not _finite_spacing((sz,)):
        sz = None
    spacing = (sx, sy) if za is None else (sx, sy, sz if sz else 1.0)
    meta = {
        "format": "tiff",
        "kind": kind,
        "modality": "microscopy",
        "spacing": tuple(float(s) for s in spacing),
        "spacing_source": source,
    }
    return np.ascontiguousarray(data), _affine_2d3d(spacing), meta


def _check_nonempty(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path.name}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: the file is empty (0 bytes)")


def read_png(
    path: str | os.PathLike[str],
    *,
    kind: str = "image",
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a PNG; return ``(array (C, X, Y), affine 4x4 RAS mm, meta)``.

    Palette images are read as their colours for ``kind="image"`` and as palette indices for
    ``kind="label"``/``"auto"``.
    """
    from PIL import Image

    path = Path(path)
    _check_nonempty(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            bands, nbytes = _PNG_MODES.get(img.mode, (len(img.getbands()), 4))
            n_bytes = check_declared_size((height, width, bands), nbytes, what=path.name)
            check_expansion(n_bytes, path.stat().st_size, what=path.name, floor=IMAGE_EXPANSION_FLOOR)
            dpi = img.info.get("dpi")
            if img.mode in ("P", "PA") and kind == "image":
                img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
            elif img.mode == "CMYK" or img.mode == "YCbCr":
                img = img.convert("RGB")
            data = np.asarray(img)
    except Image.DecompressionBombError as exc:
        raise UnsafeInputError(f"{path.name}: refused as a decompression bomb ({exc})") from None
    except _PARSER_ERRORS as exc:
        raise InputError(f"{path.name}: not a readable PNG image ({type(exc).__name__}: {_short(exc, path)})") from None
    if data.ndim == 2:
        data = data[None]
    else:
        data = np.moveaxis(data, -1, 0)
    data = np.transpose(data, (0, 2, 1))  # (C, y, x) -> (C, x, y)
    data, kind = convert_voxels(data, kind, path.name, allow_nonfinite=allow_nonfinite)
    source = "default"
    spacing = (1.0, 1.0)
    ratios = [_ratio(d) for d in dpi[:2]] if isinstance(dpi, tuple) and len(dpi) >= 2 else []
    if len(ratios) == 2 and all(r is not None and math.isfinite(r) and r > 0 for r in ratios):
        candidate = (25.4 / ratios[0], 25.4 / ratios[1])
        if _finite_spacing(candidate):
            spacing, source = candidate, "png_phys"
    meta = {
        "format": "png",
        "kind": kind,
        "modality": "unknown",
        "spacing": spacing,
        "spacing_source": source,
    }
    return np.ascontiguousarray(data), _affine_2d3d(spacing), meta
