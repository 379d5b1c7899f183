"""The one suffix table and format detection: which reader a path goes to (by suffix, longest
match first, then by its first bytes), and the SOP Class UIDs of the DICOM objects medseg reads
and writes. Imports nothing heavy; every other module takes its suffix lists from here."""

from __future__ import annotations

import os
from pathlib import Path

from medseg.errors import InputError

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
#: What medseg writes images to: single-file formats only (a detached .nhdr/.mhd header and its
#: data file could not be renamed into place in one step).
WRITABLE_SUFFIXES = tuple(x for x, f in _SUFFIXES.items() if f in ("nifti", "nrrd", "mha") and x not in (".nhdr", ".mhd"))


def strip_suffix(name: str, table: tuple[str, ...] | None = None) -> str | None:
    """``name`` without the first of ``table`` (default: every suffix) it ends with (case
    insensitive), or None when it ends with none of them."""
    low = name.lower()
    for suf in table if table is not None else suffixes():
        if low.endswith(suf):
            return name[: -len(suf)]
    return None


def suffix_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    return None


def magic_format(path: Path) -> str | None:
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
    fmt = suffix_format(path)
    if fmt is None and path.is_file() and path.stat().st_size > 0:
        fmt = magic_format(path)
    if fmt is None:
        raise InputError(f"{path.name}: unsupported input; medseg reads {SUPPORTED}")
    return fmt


def is_dicom_seg(path: Path) -> bool:
    """True for a DICOM Segmentation file (its SOP Class UID, read from the header alone)."""
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
