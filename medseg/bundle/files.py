"""The files of a bundle: every path read from a bundle goes through :func:`bundle_file`
(relative, no ``..``, no symbolic link, inside the bundle); ``models/sha256sums.txt`` is the
checksum list, and weights are checked against it BEFORE ``torch.load(weights_only=True)`` reads
them (see :mod:`medseg.bundle.trust`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medseg._hashing import sha256_file
from medseg.errors import BundleError


def bundle_file(bundle_dir: str | Path, rel: str) -> Path:
    """The path of ``rel`` inside a bundle, refused (BundleError) when it could leave the bundle.

    ``rel`` must be a relative path without ``..``; no part of it below the bundle folder may be
    a symbolic link, and the resolved file must lie inside the resolved bundle folder. The file
    need not exist. Every file medseg reads from a bundle goes through here.
    """
    bundle_dir = Path(bundle_dir)
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts or "\\" in rel:
        raise BundleError(f"bundle {bundle_dir.name} names a path outside it ({rel[:80]!r})")
    here = bundle_dir
    for part in parts:
        here = here / part
        if here.is_symlink():
            raise BundleError(f"{Path(*parts).as_posix()} of bundle {bundle_dir.name} is a symbolic link; a "
                              "bundle's files must lie inside it (copy the file in instead)")
    if not here.resolve().is_relative_to(bundle_dir.resolve()):
        raise BundleError(f"{rel[:80]} of bundle {bundle_dir.name} lies outside the bundle")
    return here


def read_checksums(bundle_dir: str | Path) -> dict[str, str]:
    """Parse ``models/sha256sums.txt`` (``<hex>  <path relative to the bundle>`` per line)."""
    path = bundle_file(bundle_dir, "models/sha256sums.txt")
    if not path.is_file():
        raise BundleError(f"bundle {Path(bundle_dir).name} has no models/sha256sums.txt; rebuild it with "
                          "`medseg bundle build`")
    sums: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise BundleError(f"models/sha256sums.txt of bundle {Path(bundle_dir).name} has a malformed line")
        rel = parts[1].strip().lstrip("*")
        bundle_file(bundle_dir, rel)  # refuses paths outside the bundle and links
        sums[rel] = parts[0]
    return sums


def check_checksums(bundle_dir: str | Path) -> list[str]:
    """Return mismatches between the files of a bundle and its checksum file (empty: all match)."""
    bundle_dir = Path(bundle_dir)
    problems = []
    sums = read_checksums(bundle_dir)
    if "models/model.pt" not in sums:
        problems.append("models/sha256sums.txt has no entry for models/model.pt")
    for rel, expected in sums.items():
        f = bundle_file(bundle_dir, rel)
        if not f.is_file():
            problems.append(f"{rel} listed in sha256sums.txt is missing")
        elif sha256_file(f) != expected:
            problems.append(f"{rel} does not match its sha256 in models/sha256sums.txt")
    return problems


def load_weights(bundle_dir: str | Path, rel: str = "models/model.pt") -> dict[str, Any]:
    """Verify ``rel`` against the bundle's checksums, then load it as a state dict.

    Uses ``torch.load(weights_only=True)``: a pickle that tries to run code is refused with a
    :class:`BundleError` instead of being executed.
    """
    from medseg.models.weights import read_state_dict

    bundle_dir = Path(bundle_dir)
    sums = read_checksums(bundle_dir)
    path = bundle_file(bundle_dir, rel)
    if rel not in sums:
        raise BundleError(f"{rel} of bundle {bundle_dir.name} has no sha256 in models/sha256sums.txt")
    if not path.is_file():
        raise BundleError(f"{rel} of bundle {bundle_dir.name} is missing")
    if sha256_file(path) != sums[rel]:
        raise BundleError(f"{rel} of bundle {bundle_dir.name} does not match its sha256: the weights were "
                          "altered or damaged; rebuild or re-download the bundle")
    return read_state_dict(path, error=BundleError, what=f"{rel} of bundle {bundle_dir.name}")
