"""Reading DICOM headers safely: no pixel data is touched until the declared size is checked.

A header is read with large values deferred (``defer_size``), so a folder of many files costs
only their headers. Before any pixel buffer is allocated, the declared size
``Rows * Columns * NumberOfFrames * SamplesPerPixel * BitsAllocated / 8`` is checked against the
file (uncompressed transfer syntaxes) and against an absolute cap on voxels
(``$MEDSEG_MAX_VOXELS``, default 2**31 voxels = 8 GiB of float32).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID

from medseg.errors import InputError, UnsafeInputError
from medseg.io.safety import max_voxels  # the one voxel cap shared by every reader

#: Modalities that hold no image medseg reads (their own readers live elsewhere, e.g. SEG).
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG",
                                  "DOC", "FID", "PLAN"})




@dataclass
class Header:
    """One DICOM file's header (no pixel data loaded) and where its pixel data lies."""

    path: Path
    ds: Dataset
    file_size: int
    pixel_offset: int | None = None
    pixel_length: int | None = None
    display_name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Name to use in messages (file name, or archive member): never patient data."""
        return self.display_name or self.path.name

    @property
    def n_frames(self) -> int:
        try:
            return max(1, int(self.ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            raise InputError(f"{self.name}: NumberOfFrames is not a number") from None

    @property
    def modality(self) -> str:
        return str(self.ds.get("Modality", "") or "").upper()

    @property
    def is_image(self) -> bool:
        return "PixelData" in self.ds and self.modality not in NON_IMAGE_MODALITIES

    def declared_pixel_bytes(self) -> int:
        """Bytes the header declares for the (uncompressed) pixel data of all frames."""
        ds = self.ds
        try:
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            spp = int(ds.get("SamplesPerPixel", 1) or 1)
            bits = int(ds.get("BitsAllocated", 16) or 16)
        except (TypeError, ValueError):
            raise InputError(f"{self.name}: Rows/Columns/BitsAllocated are not numbers") from None
        total = rows * cols * self.n_frames * spp
        return (total + 7) // 8 if bits == 1 else total * ((bits + 7) // 8)

    def voxels(self) -> int:
        ds = self.ds
        return int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * self.n_frames


_PARSE_ERRORS = (EOFError, OSError, ValueError, KeyError, TypeError, NotImplementedError, IndexError,
                 AttributeError, OverflowError, struct.error, BytesLengthException)


def _convert_all(ds: Dataset) -> None:
    """Decode every attribute now (pydicom decodes lazily), so corruption surfaces here and not
    at some later attribute access. Deferred (large) values and pixel data are left unread."""
    for tag in list(ds.keys()):
        if tag == 0x7FE00010:
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        if getattr(raw, "value", 0) is None and getattr(raw, "length", 0):
            continue  # deferred: larger than defer_size, read only if asked for
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_all(item)


def _transfer_syntax(header: Header) -> UID | None:
    ts = header.ds.file_meta.get("TransferSyntaxUID") if hasattr(header.ds, "file_meta") else None
    if not ts:
        return None
    uid = UID(str(ts))
    if not uid.is_transfer_syntax:
        raise InputError(f"{header.name}: TransferSyntaxUID {uid} is not a known transfer syntax; "
                         "the file is corrupt or uses a private encoding")
    return uid


def _is_image_sop(uid: str) -> bool:
    name = UID(uid).name if uid else ""
    return "Image Storage" in name


def read_header(path: Path, display_name: str = "") -> Header | None:
    """Read one file's header. Returns None when the file is not DICOM (no 'DICM' preamble).

    Raises :class:`InputError` when the file is DICOM but truncated (inside the header or inside
    the pixel data) and :class:`UnsafeInputError` when it declares more pixel data than the cap.
    """
    name = display_name or path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise InputError(f"{name}: cannot be read ({exc.strerror})") from None
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except InvalidDicomError:
        return None
    except _PARSE_ERRORS as exc:
        raise InputError(f"{name}: DICOM header is corrupt or truncated ({type(exc).__name__}); "
                         "re-export or re-transfer the file") from None
    try:
        _convert_all(ds)
    except _PARSE_ERRORS as exc:
        raise InputError(f"{name}: DICOM header is corrupt ({type(exc).__name__} while decoding an "
                         "attribute); re-export or re-transfer the file") from None
    header = Header(path=path, ds=ds, file_size=size, display_name=name)
    # pydicom stops silently at end of file: check that the last element read is complete.
    tags = list(ds.keys())
    if tags:
        raw = ds.get_item(tags[-1], keep_deferred=True)
        tell = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if tell is not None and length is not None and length != 0xFFFFFFFF:
            if tell + length > size or (value is not None and isinstance(value, bytes) and len(value) < length):
                where = "pixel data" if tags[-1] == 0x7FE00010 else "header"
                raise InputError(f"{name}: file is truncated inside the {where} "
                                 f"(declares {tell + length} bytes, has {size}); re-export or re-transfer it")
    if "PixelData" in ds:
        raw = ds.get_item(0x7FE00010, keep_deferred=True)
        header.pixel_offset = getattr(raw, "value_tell", None)
        header.pixel_length = getattr(raw, "length", None)
        check_pixel_size(header)
    else:
        sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") if hasattr(ds, "file_meta") else "")
        sop = sop or str(ds.get("SOPClassUID", ""))
        if _is_image_sop(sop) or "Rows" in ds or not tags:
            raise InputError(f"{name}: DICOM image without pixel data (file truncated or corrupt); "
                             "re-export or re-transfer it")
    return header


def check_pixel_size(header: Header) -> None:
    """Refuse, before decoding, pixel data larger than the cap or than the file holds."""
    cap = max_voxels()
    if header.extra.get("size_checked_cap") == cap:
        return
    voxels = header.voxels()
    if voxels > cap:
        raise UnsafeInputError(
            f"{header.name}: header declares {voxels} voxels, over the limit of {cap}; "
            "raise MEDSEG_MAX_VOXELS if this is a genuine image")
    ts = _transfer_syntax(header)
    compressed = ts is not None and ts.is_compressed
    if compressed:
        header.extra["size_checked_cap"] = cap
        return
    declared = header.declared_pixel_bytes()
    available = header.file_size - (header.pixel_offset or 0)
    if header.pixel_length is not None and header.pixel_length != 0xFFFFFFFF:
        available = min(available, header.pixel_length)
    if declared > available:
        raise InputError(
            f"{header.name}: header declares {declared} bytes of pixel data but the file holds "
            f"{available}: truncated or corrupt; re-export or re-transfer it")
    header.extra["size_checked_cap"] = cap
