"""UIDs read from headers or a PACS are hostile strings: :func:`path_safe_uid` is the one rule that
lets one become part of a file or folder name."""

from __future__ import annotations

import hashlib


def path_safe_uid(uid: object, prefix: str = "x") -> str:
    """``uid`` itself when it is a valid DICOM UID (digits and dots, no empty or zero-led part, at
    most 64 characters), else ``prefix`` + the first 16 hex digits of its sha256: never a path
    separator, ``..``, a patient's name typed into the tag, or anything longer than 64 characters."""
    from pydicom.uid import UID

    text = str(uid)
    if text and UID(text).is_valid:
        return text
    return prefix + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
