"""Reading DICOM headers safely: no pixel data is touched until the declared size is checked.

A header is read with large values deferred (``defer_size``), so a folder of many files costs
only their headers. Before any pixel buffer is allocated, the declared size
``Rows * Columns * NumberOfFrames * SamplesPerPixel * BitsAllocated / 8`` is checked against the
file (uncompressed transfer syntaxes) and against an absolute cap on voxels
(``$MEDSEG_MAX_VOXELS``, default 2**31 voxels = 8 GiB of float32).

Size (~425 lines): one concern, reading headers safely; the size checks per transfer syntax and
the deferred-value reads belong together (each check needs the others' parsed values).
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pydicom.valuerep import AMBIGUOUS_VR

from medseg.errors import InputError, UnsafeInputError
from medseg.io.safety import (  # the one voxel cap shared by every reader
    IMAGE_EXPANSION_FLOOR,
    check_expansion,
    expansion_budget,
    inflated_size,
    max_voxels,
)

#: Deflated Explicit VR Little Endian: the whole dataset after the file meta is one deflate stream.
DEFLATED_TS = ("1.2.840.10008.1.2.1.99",)
#: Integer attributes of the Image Pixel module: one value each, checked when a header is read.
_PIXEL_INTS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "SamplesPerPixel", "NumberOfFrames", "PlanarConfiguration")


def values(value) -> list:
    """A DICOM value as a list: a multi-valued element's items, one value as ``[value]``, and
    ``[]`` for an absent or empty value (a VM 1 value where 3 were expected is then caught by
    the caller's length check instead of failing on ``len()``)."""
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, (str, bytes, int, float)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


@functools.cache
def _tag(keyword: str) -> BaseTag:
    """The tag of a DICOM keyword, looked up once (``ds[tag]`` is much cheaper than ``ds[keyword]``)."""
    return BaseTag(Tag(keyword))


def int_attr(ds: Dataset, keyword: str, name: str, default: int | None = None) -> int | None:
    """One integer attribute, or ``default`` when absent/empty; :class:`InputError` (naming the
    keyword, never the value) when it holds several values or is not an integer."""
    tag = _tag(keyword)
    if tag not in ds:
        return default
    try:
        value = ds[tag].value
    except _PARSE_ERRORS:
        raise InputError(f"{name}: {keyword} cannot be decoded; the file is corrupt") from None
    items = values(value)
    if not items:
        return default
    if len(items) != 1:
        raise InputError(f"{name}: {keyword} holds {len(items)} values, not one; the file is corrupt")
    item = items[0]
    if isinstance(item, float) and not item.is_integer():
        raise InputError(f"{name}: {keyword} is not an integer; the file is corrupt")
    try:
        return int(item)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: {keyword} is not an integer; the file is corrupt") from None


def float_attr(ds: Dataset, keyword: str, name: str, default: float | None = None) -> float | None:
    """One finite number, or ``default`` when absent/empty; :class:`InputError` naming the keyword
    when it holds several values, is not a number, or is NaN/infinite."""
    tag = _tag(keyword)
    if tag not in ds:
        return default
    try:
        items = values(ds[tag].value)
    except _PARSE_ERRORS:
        raise InputError(f"{name}: {keyword} cannot be decoded; the file is corrupt") from None
    if not items:
        return default
    if len(items) != 1:
        raise InputError(f"{name}: {keyword} holds {len(items)} values, not one; the file is corrupt")
    try:
        value = float(items[0])
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: {keyword} is not a number; the file is corrupt") from None
    if not math.isfinite(value):
        raise InputError(f"{name}: {keyword} is not a finite number (NaN or infinite); the file is corrupt")
    return value

#: Modality defined terms (PS3.3 C.7.3.1.1.1, with retired ones still seen in archives).
MODALITIES = frozenset({
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CFM", "CR", "CT", "CTPROTOCOL", "DG", "DOC", "DX", "ECG", "EPS", "ES",
    "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS", "KER", "KO", "LEN", "LS", "MG", "MR", "M3D", "NM", "OAM",
    "OCT", "OP", "OPM", "OPT", "OPTBSV", "OPTENF", "OPV", "OSS", "OT", "PLAN", "POS", "PR", "PT", "PX", "REG", "RESP",
    "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV", "SEG",
    "SM", "SMR", "SR", "SRF", "STAIN", "TEXTUREMAP", "TG", "US", "VA", "XA", "XAPROTOCOL", "XC",
    "DS", "DF", "DM", "EC", "FA", "FS", "LP", "MA", "MS", "OPR", "ST", "VF", "DR",
})
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

    @functools.cached_property
    def name(self) -> str:
        """Name to use in messages: the file's own name, or an archive member's last path part
        (exports often name folders after the patient, so the folders are never shown)."""
        return PurePosixPath(self.display_name).name if self.display_name else self.path.name

    @functools.cached_property
    def n_frames(self) -> int:
        return max(1, int_attr(self.ds, "NumberOfFrames", self.name, 1) or 1)

    @property
    def modality(self) -> str:
        """Modality when it is a DICOM defined term (CT, MR, ...), else "" (unknown): a value that
        is not a defined term is never shown, it could be anything typed into the header."""
        try:
            value = str(self.ds.get("Modality", "") or "").strip().upper()
        except _PARSE_ERRORS:
            return ""
        return value if value in MODALITIES else ""

    @property
    def is_image(self) -> bool:
        return "PixelData" in self.ds and self.modality not in NON_IMAGE_MODALITIES

    def declared_pixel_bytes(self) -> int:
        """Bytes the header declares for the (uncompressed) pixel data of all frames."""
        ds, name = self.ds, self.name
        rows, cols = int_attr(ds, "Rows", name, 0), int_attr(ds, "Columns", name, 0)
        spp = int_attr(ds, "SamplesPerPixel", name, 1) or 1
        bits = int_attr(ds, "BitsAllocated", name, 16) or 16
        total = rows * cols * self.n_frames * spp
        return (total + 7) // 8 if bits == 1 else total * ((bits + 7) // 8)

    def voxels(self) -> int:
        ds, name = self.ds, self.name
        return int_attr(ds, "Rows", name, 0) * int_attr(ds, "Columns", name, 0) * self.n_frames


_PARSE_ERRORS = (EOFError, OSError, ValueError, KeyError, TypeError, NotImplementedError, IndexError,
                 AttributeError, OverflowError, struct.error, BytesLengthException, zlib.error, LookupError,
                 UnicodeError)


def _file_meta_end(fh, name: str) -> tuple[int, str] | None:
    """``(offset after the file meta group, TransferSyntaxUID)`` read by hand (explicit VR little
    endian, group 0002), without pydicom; None when the group cannot be walked."""
    fh.seek(132)
    ts = ""
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
    for _ in range(64):
        start = fh.tell()
        head = fh.read(8)
        if len(head) < 8:
            return None
        group, elem = struct.unpack("<HH", head[:4])
        if group != 2:
            return start, ts
        vr = head[4:6]
        if not (vr.isalpha() and vr.isupper()):  # implicit VR (non-conformant, as pydicom reads it)
            length = struct.unpack("<I", head[4:8])[0]
        elif vr in long_vrs:
            more = fh.read(4)
            if len(more) < 4:
                return None
            length = struct.unpack("<I", more)[0]
        else:
            length = struct.unpack("<H", head[6:8])[0]
        if length == 0xFFFFFFFF or length > 1 << 16:
            raise InputError(f"{name}: the file meta information holds an element of {length} bytes; "
                             "the file is corrupt")
        value = fh.read(length)
        if elem == 0x0010:
            ts = value.decode("latin-1").strip("\x00 ")
    return None


def check_deflated(path: Path, name: str) -> int | None:
    """For a Deflated Explicit VR Little Endian file: refuse, before pydicom inflates it all in
    memory, a body that is not a deflate stream (:class:`InputError`) or that inflates to more
    than :func:`~medseg.io.safety.expansion_budget` allows (:class:`UnsafeInputError`).
    Returns the inflated size of the dataset (pydicom's value positions count in it), or None
    for a file that is not deflated."""
    try:
        with open(path, "rb") as fh:
            found = _file_meta_end(fh, name)
            if found is None or found[1] not in DEFLATED_TS:
                return None
            offset = found[0]
            size = path.stat().st_size
            fh.seek(offset)
            try:
                return inflated_size(fh, wbits=-15, limit=expansion_budget(size - offset, IMAGE_EXPANSION_FLOOR),
                                     what=name)
            except UnsafeInputError:
                raise
            except InputError:
                raise InputError(f"{name}: the transfer syntax says deflated but the dataset is not a valid "
                                 "deflate stream; the file is corrupt") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot be read ({exc.strerror})") from None


def check_pixel_attributes(header: Header) -> None:
    """Image Pixel module integers: one value each, in range (:class:`InputError` naming the
    keyword otherwise). Called for every image header, so later code may use ``int()``."""
    ds, name = header.ds, header.name
    got = {k: int_attr(ds, k, name) for k in _PIXEL_INTS}
    for key in ("Rows", "Columns"):
        if got[key] is None or got[key] <= 0:
            raise InputError(f"{name}: {key} is {'missing' if got[key] is None else got[key]}; an image "
                             "needs at least one row and one column; the file is corrupt")
    bits = got["BitsAllocated"]
    if bits is not None and bits not in (1, 8, 16, 32, 64):
        raise InputError(f"{name}: BitsAllocated {bits} is not 1, 8, 16, 32 or 64; the file is corrupt")
    stored = got["BitsStored"]
    if stored is not None and bits is not None and not 1 <= stored <= bits:
        raise InputError(f"{name}: BitsStored {stored} does not fit BitsAllocated {bits}; the file is corrupt")
    if got["SamplesPerPixel"] is not None and not 1 <= got["SamplesPerPixel"] <= 4:
        raise InputError(f"{name}: SamplesPerPixel {got['SamplesPerPixel']} is not 1 to 4; the file is corrupt")
    if got["PixelRepresentation"] not in (None, 0, 1):
        raise InputError(f"{name}: PixelRepresentation {got['PixelRepresentation']} is not 0 or 1; "
                         "the file is corrupt")


def _check_lengths(ds: Dataset, size: int, name: str) -> None:
    """A corrupt length is skipped when the header is read (the value is deferred) but a full read
    (pixel decoding, the SEG reader) would allocate it: every value, also inside sequences, must
    lie inside the file (pixel data is checked separately, with a clearer message)."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > size \
                and tag != 0x7FE00010:
            raise InputError(f"{name}: DICOM element {Tag(tag)} declares {length} bytes beyond the end of the "
                             "file; the file is corrupt or truncated; re-export or re-transfer it")
        if getattr(raw, "VR", None) == "SQ":
            for item in ds[tag].value or []:
                if isinstance(item, Dataset):
                    _check_lengths(item, size, name)


def _convert_all(ds: Dataset, decoded: set | None = None, deferred: list | None = None) -> None:
    """Decode every attribute now (pydicom decodes lazily), so corruption surfaces here and not
    at some later attribute access. Deferred (large) values and pixel data are left unread.

    ``decoded`` (one set per scan of a folder) remembers the top-level public elements already
    decoded without error, by their exact encoded bytes, VR, byte order and character set: the
    same bytes decode the same way, so the files of one series (which repeat most of their
    header) are not decoded twice for the same element; such an element stays encoded until it
    is used. Private tags, sequences and VRs that depend on other attributes are always decoded.
    ``deferred`` receives the tags of the top-level values left unread (pixel data aside).
    """
    charset = None
    if decoded is not None:
        raw_cs = ds.get_item(0x00080005, keep_deferred=True)
        charset = ("", getattr(raw_cs, "value", None), ds.is_little_endian, ds.is_implicit_VR)
    for tag in list(ds.keys()):
        if tag == 0x7FE00010:
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        if getattr(raw, "value", 0) is None and getattr(raw, "length", 0):
            if deferred is not None:
                deferred.append(tag)
            continue  # deferred: larger than defer_size, read only if asked for
        key = None
        if decoded is not None and isinstance(raw, RawDataElement) and not tag.is_private:
            key = (int(tag), raw.VR, raw.value, charset)
            if key in decoded:
                continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_all(item)
        elif key is not None and elem.VR not in AMBIGUOUS_VR:
            decoded.add(key)


def _transfer_syntax(header: Header) -> UID | None:
    meta = getattr(header.ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        if meta is not None and "TransferSyntaxUID" in meta:
            raise InputError(f"{header.name}: TransferSyntaxUID is empty, so the pixel data cannot be "
                             "decoded; the file is corrupt")
        return None
    uid = UID(str(ts))
    if not uid.is_transfer_syntax:
        raise InputError(f"{header.name}: TransferSyntaxUID is not a known transfer syntax; "
                         "the file is corrupt or uses a private encoding")
    return uid


def _is_image_sop(uid: str) -> bool:
    name = UID(uid).name if uid else ""
    return "Image Storage" in name


def read_header(path: Path, display_name: str = "", *, decoded: set | None = None) -> Header | None:
    """Read one file's header. Returns None when the file is not DICOM (no 'DICM' preamble).

    ``decoded``: a set shared by the headers of one scan (see :func:`_convert_all`).

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
    inflated = check_deflated(path, name)
    if inflated is not None:  # value positions count in the inflated dataset, not in the file
        size = inflated
    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except InvalidDicomError:
        return None
    except _PARSE_ERRORS as exc:
        raise InputError(f"{name}: DICOM header is corrupt or truncated ({type(exc).__name__}); "
                         "re-export or re-transfer the file") from None
    try:
        _check_lengths(ds, size, name)
        deferred: list = []
        _convert_all(ds, decoded, deferred)
    except _PARSE_ERRORS as exc:
        raise InputError(f"{name}: DICOM header is corrupt ({type(exc).__name__} while decoding an "
                         "attribute); re-export or re-transfer the file") from None
    header = Header(path=path, ds=ds, file_size=size, display_name=name)
    header.extra["deferred"] = deferred  # read while the file is there when a DicomSource keeps the header
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
        check_pixel_attributes(header)
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
        stored = header.file_size - (header.pixel_offset or 0)
        if header.pixel_length is not None and header.pixel_length != 0xFFFFFFFF:
            stored = min(stored, header.pixel_length)
        check_expansion(header.declared_pixel_bytes(), stored, what=f"{header.name} (pixel data)",
                        floor=IMAGE_EXPANSION_FLOOR)
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
