"""The reader registry: one :class:`Reader` per kind of input, found through the one suffix table
(:mod:`medseg.io.formats`), every one taking the same :class:`ReadOptions`.

A reader says which options it honours; an option asked of a reader that cannot honour it is
refused with :class:`~medseg.errors.UnsupportedOptionError` (one line), never ignored:

=====================  ==========  ==========  ==============  =====================  ===============
reader                 formats     ``kind``    ``series``      ``allow_missing_...``  ``allow_nonf.``
=====================  ==========  ==========  ==============  =====================  ===============
``dicom-seg``          dicom       label/auto  refused         refused                yes (integers)
``dicom``              dicom       all (1)     yes             yes                    yes (2)
``nifti``              nifti       all         refused         refused                yes
``itk``                nrrd, mha   all         refused         refused                yes
``tiff`` / ``png``     tiff / png  all         refused         refused                yes
=====================  ==========  ==========  ==============  =====================  ===============

(1) a DICOM image series is an image: ``"auto"`` reads it as one, ``"label"`` turns its rescaled
values into an integer label map (refused, one line, when they are not whole numbers). (2) DICOM
integer pixel data with a checked rescale cannot hold NaN/inf. ``keep_integers`` is a preference
(a DICOM series with an integral rescale keeps an integer type; the other formats keep what
``kind`` gives), ``progress`` and ``found`` are not options on the data.

A new format plugs in with :func:`register` (its suffixes go in the suffix table first). Learnt
from nnU-Net's ``BaseReaderWriter`` (a reader returns the voxels and a properties dict holding the
geometry) and MONAI's ``ImageReader`` (``verify_suffix`` + ``read``), neither copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medseg.errors import InputError, UnsupportedOptionError
from medseg.geometry import Geometry
from medseg.io.formats import SUPPORTED, detect_format, is_dicom_seg
from medseg.io.image import volume_meta
from medseg.io.volume import Volume

__all__ = ["ReadOptions", "Reader", "read_grid", "reader_for", "readers", "register"]

KINDS = ("image", "label", "auto")


@dataclass(frozen=True)
class ReadOptions:
    """What a caller asks of a reader. ``None`` / ``False`` mean "not asked"."""

    kind: str | None = None  # "image" | "label" | "auto"; None: the reader's own (image; label for a SEG)
    allow_nonfinite: bool = False
    series: Any = None  # DICOM series selection (UID, rule, SeriesInfo)
    allow_missing_slices: bool = False
    keep_integers: bool = False  # a preference, never refused
    progress: bool = True
    found: list | None = None  # receives the DICOM series a scan found

    def asked(self) -> dict[str, Any]:
        """The options that can be refused, where the caller set them."""
        pairs = (("kind", self.kind), ("allow_nonfinite", self.allow_nonfinite), ("series", self.series),
                 ("allow_missing_slices", self.allow_missing_slices))
        return {k: v for k, v in pairs if v is not None and v is not False}


class Reader:
    """One kind of input. Subclasses set ``name``, ``formats`` (of the suffix table), ``honours``
    (options beyond the defaults), ``kinds`` and implement :meth:`read_volume`."""

    name: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ()
    honours: ClassVar[frozenset[str]] = frozenset({"kind", "allow_nonfinite"})
    kinds: ClassVar[tuple[str, ...]] = KINDS
    default_kind: ClassVar[str] = "image"

    def accepts(self, path: Path, fmt: str) -> bool:
        """True when this reader reads ``path`` (whose format the suffix table gave as ``fmt``)."""
        return fmt in self.formats

    def check(self, path: Path, opts: ReadOptions) -> None:
        """UnsupportedOptionError (one line) for an option this reader cannot honour."""
        from medseg.errors import ConfigError

        for key, value in opts.asked().items():
            if key not in self.honours:
                raise UnsupportedOptionError(f"{path.name}: the {self.name} reader has no {key} option "
                                             f"({key}={value!r} cannot be honoured); {self.hint(key)}")
        if opts.kind is not None and opts.kind not in KINDS:
            raise ConfigError(f"kind={opts.kind!r} is not one of {KINDS}")
        if opts.kind is not None and opts.kind not in self.kinds:
            raise UnsupportedOptionError(f"{path.name}: the {self.name} reader reads kind "
                                         f"{' or '.join(self.kinds)}, not {opts.kind!r}")

    def hint(self, key: str) -> str:
        return {"series": "series selection applies to DICOM image series",
                "allow_missing_slices": "missing slices apply to DICOM image series"}.get(key, "leave it unset")

    def read(self, path: Path, opts: ReadOptions) -> Volume:
        """Check the options, read, and fill the common meta keys (:func:`volume_meta`)."""
        self.check(path, opts)
        array, affine, meta = self.read_volume(path, opts)
        affine = np.asarray(affine, dtype=np.float64)
        return Volume(array, affine, volume_meta(array, affine, meta, path))

    def read_volume(self, path: Path, opts: ReadOptions) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def grid(self, path: Path) -> Geometry:
        """The spatial grid, from the header where the format allows (else the voxels are read)."""
        vol = self.read(path, ReadOptions(kind="auto", allow_nonfinite=True, progress=False))
        return Geometry(vol.affine, vol.shape[1:])


def _kind(opts: ReadOptions) -> str:
    return opts.kind or "image"


class NiftiReader(Reader):
    name, formats = "NIfTI", ("nifti",)

    def read_volume(self, path, opts):
        from medseg.io.nifti import read_nifti

        return read_nifti(path, kind=_kind(opts), allow_nonfinite=opts.allow_nonfinite)

    def grid(self, path):
        from medseg.io.nifti import header_info

        info = header_info(path)
        return Geometry(info["affine"], info["shape"][1:])


class ItkReader(Reader):
    name, formats = "NRRD/MetaImage", ("nrrd", "mha")

    def read_volume(self, path, opts):
        from medseg.io.itk_formats import read_itk

        return read_itk(path, kind=_kind(opts), allow_nonfinite=opts.allow_nonfinite)

    def grid(self, path):
        from medseg.io.itk_formats import header_info

        info = header_info(path)
        return Geometry(info["affine"], info["shape"][1:])


class TiffReader(Reader):
    name, formats = "TIFF", ("tiff",)

    def read_volume(self, path, opts):
        from medseg.io.microscopy import read_tiff

        return read_tiff(path, kind=_kind(opts), allow_nonfinite=opts.allow_nonfinite)


class PngReader(Reader):
    name, formats = "PNG", ("png",)

    def read_volume(self, path, opts):
        from medseg.io.microscopy import read_png

        return read_png(path, kind=_kind(opts), allow_nonfinite=opts.allow_nonfinite)


class DicomSegReader(Reader):
    """A DICOM Segmentation file, on its own geometry (see :func:`medseg.io.dicom_seg.read_dicom_seg`)."""

    name, formats = "DICOM SEG", ("dicom",)
    kinds = ("label", "auto")
    default_kind = "label"

    def accepts(self, path, fmt):
        return fmt == "dicom" and is_dicom_seg(path)

    def hint(self, key):
        return "a DICOM SEG is one object holding a label map; read its source series for that"

    def read_volume(self, path, opts):
        from medseg.io.dicom.headers import read_header
        from medseg.io.seg.read import read_seg_volume

        read_header(path)  # lengths, deflate and pixel sizes checked before a full read
        vol = read_seg_volume(path)
        return vol.array, vol.affine, vol.meta


class DicomSeriesReader(Reader):
    """A DICOM image series (folder, file, zip/tar), enhanced multi-frame object or radiograph."""

    name, formats = "DICOM", ("dicom",)
    honours = frozenset({"kind", "allow_nonfinite", "series", "allow_missing_slices"})

    def read_volume(self, path, opts):
        from medseg.io.dicom.read import read_dicom_arrays
        from medseg.io.safety import convert_voxels

        volume, affine, meta = read_dicom_arrays(
            path, series=opts.series, allow_missing_slices=opts.allow_missing_slices,
            keep_integers=opts.keep_integers or opts.kind == "label", progress=opts.progress, found=opts.found)
        array = np.expand_dims(volume, 0)
        if opts.kind == "label":  # whole-number values become integers, else one line
            array, meta["kind"] = convert_voxels(array, "label", Path(str(meta.get("filename_or_obj", path))).name)
        return array, affine, meta


_REGISTRY: list[Reader] = [DicomSegReader(), DicomSeriesReader(), NiftiReader(), ItkReader(), TiffReader(),
                           PngReader()]


def register(reader: Reader, *, first: bool = False) -> None:
    """Add a reader (tried before the others when ``first``). Its formats must be in the suffix table."""
    if first:
        _REGISTRY.insert(0, reader)
    else:
        _REGISTRY.append(reader)


def readers() -> tuple[Reader, ...]:
    """The registered readers, in the order they are tried."""
    return tuple(_REGISTRY)


def reader_for(path: str | Path) -> Reader:
    """The reader of ``path``: its format from the suffix table (or content), then the first
    registered reader that accepts it. InputError for a missing or unsupported input."""
    path = Path(path)
    fmt = detect_format(path)
    for reader in _REGISTRY:
        if reader.accepts(path, fmt):
            return reader
    raise InputError(f"{path.name}: unsupported input; medseg reads {SUPPORTED}")  # pragma: no cover


def read_grid(path: str | Path) -> Geometry:
    """The spatial grid (voxel -> RAS mm affine, shape) of an image file, from its header where the
    format allows (NIfTI, NRRD, MetaImage), after the size checks."""
    path = Path(path)
    return reader_for(path).grid(path)
