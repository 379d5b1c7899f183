"""Safe extraction of zip / tar(.gz) archives of DICOM files into a temporary folder.

Refused (:class:`UnsafeInputError`): members with ``..`` or an absolute path (path traversal),
symbolic or hard links, devices and FIFOs, more than ``$MEDSEG_MAX_ARCHIVE_MEMBERS`` members
(default 100000) and a declared total size over ``$MEDSEG_MAX_ARCHIVE_BYTES`` (default 8 GiB).
The byte count is enforced again while extracting, so a member that lies about its size cannot
fill the disk.
"""

from __future__ import annotations

import contextlib
import lzma
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from medseg.errors import InputError, UnsafeInputError
from medseg.io.safety import IMAGE_EXPANSION_FLOOR, check_expansion, expansion_budget, inflated_size
from medseg.settings import current

DEFAULT_MAX_ARCHIVE_BYTES = 8 * 2**30
DEFAULT_MAX_MEMBERS = 100_000
_CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    """True for a file named .zip, .tar, .tar.gz or .tgz."""
    name = path.name.lower()
    return path.is_file() and name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))


def _limit(name: str, default: int) -> int:
    raw = current().limit_text(name)
    try:
        return int(float(raw)) if raw else default
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a number") from None


def _safe_member_path(archive: Path, name: str) -> PurePosixPath:
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in p.parts:
        raise UnsafeInputError(f"{archive.name}: member {name!r} points outside the archive "
                               "(absolute path or '..'); refusing to extract it")
    return p


def _copy_limited(src, dst: Path, budget: list[int], archive: Path, member_limit: int | None = None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(dst, "wb") as out:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            budget[0] -= len(chunk)
            written += len(chunk)
            if budget[0] < 0:
                raise UnsafeInputError(f"{archive.name}: extracted data exceeds the limit of "
                                       f"{_limit('MEDSEG_MAX_ARCHIVE_BYTES', DEFAULT_MAX_ARCHIVE_BYTES)} "
                                       "bytes; raise MEDSEG_MAX_ARCHIVE_BYTES if it is genuine")
            if member_limit is not None and written > member_limit:
                raise UnsafeInputError(f"{archive.name}: a member expands beyond {member_limit} bytes "
                                       "(decompression bomb); raise MEDSEG_MAX_EXPANSION if it is genuine")
            out.write(chunk)


#: zip compression methods Python can extract: stored, deflated, bzip2, lzma
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
#: what zipfile / tarfile and their decompressors raise on corrupt members
_MEMBER_ERRORS = (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, RuntimeError, NotImplementedError,
                  ValueError, zlib.error, lzma.LZMAError, struct.error, OverflowError)


def _extract_zip(archive: Path, dest: Path, max_bytes: int, max_members: int) -> dict[Path, str]:
    names: dict[Path, str] = {}
    try:
        zf = zipfile.ZipFile(archive)
    except _MEMBER_ERRORS as exc:
        raise InputError(f"{archive.name}: not a readable zip archive ({type(exc).__name__})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise UnsafeInputError(f"{archive.name}: {len(infos)} members, over the limit of {max_members}")
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise UnsafeInputError(f"{archive.name}: declares {declared} bytes uncompressed, over the "
                                   f"limit of {max_bytes}; raise MEDSEG_MAX_ARCHIVE_BYTES if genuine")
        for n, info in enumerate(infos, 1):
            rel = _safe_member_path(archive, info.filename)
            ftype = stat.S_IFMT((info.external_attr >> 16) & 0xFFFF)  # 0: no Unix type recorded
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeInputError(f"{archive.name}: member {info.filename!r} is a link or special "
                                       "file; refusing to extract it")
            if info.flag_bits & 0x1:
                raise InputError(f"{archive.name}: member #{n} is encrypted; medseg reads unencrypted archives only")
            if info.compress_type not in _ZIP_METHODS:
                raise InputError(f"{archive.name}: member #{n} uses compression method {info.compress_type}, "
                                 "which medseg cannot extract (stored, deflate, bzip2 and lzma are supported)")
            check_expansion(info.file_size, info.compress_size, what=f"{archive.name} member #{n}",
                            floor=IMAGE_EXPANSION_FLOOR)
        budget = [max_bytes]
        for n, info in enumerate(infos, 1):
            if info.is_dir():
                continue
            rel = _safe_member_path(archive, info.filename)
            target = dest.joinpath(*rel.parts)
            try:
                with zf.open(info) as src:
                    _copy_limited(src, target, budget, archive,
                                  expansion_budget(info.compress_size, IMAGE_EXPANSION_FLOOR))
            except _MEMBER_ERRORS as exc:
                raise InputError(f"{archive.name}: member #{n} is corrupt or cannot be extracted "
                                 f"({type(exc).__name__})") from None
            names[target] = str(rel)
    return names


def _extract_tar(archive: Path, dest: Path, max_bytes: int, max_members: int) -> dict[Path, str]:
    names: dict[Path, str] = {}
    size = archive.stat().st_size
    with open(archive, "rb") as fh:
        magic = fh.read(3)
        if magic[:2] == b"\x1f\x8b":  # tar.gz: the whole stream is bounded before tarfile walks it
            fh.seek(0)
            inflated_size(fh, wbits=31, limit=expansion_budget(size), what=archive.name)
        elif magic == b"BZh" or magic[:3] == b"\xfd7z":
            raise InputError(f"{archive.name}: bzip2/xz-compressed tar archives are not supported; use .tar or .tar.gz")
    try:
        tf = tarfile.open(archive, "r:*")
    except _MEMBER_ERRORS as exc:
        raise InputError(f"{archive.name}: not a readable tar archive ({type(exc).__name__})") from None
    with tf:
        try:
            members = tf.getmembers()
        except _MEMBER_ERRORS as exc:
            raise InputError(f"{archive.name}: tar archive is corrupt or truncated ({type(exc).__name__})") from None
        if len(members) > max_members:
            raise UnsafeInputError(f"{archive.name}: {len(members)} members, over the limit of {max_members}")
        declared = sum(m.size for m in members if m.isfile())
        if declared > max_bytes:
            raise UnsafeInputError(f"{archive.name}: declares {declared} bytes, over the limit of "
                                   f"{max_bytes}; raise MEDSEG_MAX_ARCHIVE_BYTES if genuine")
        check_expansion(declared, size, what=archive.name)
        for m in members:
            _safe_member_path(archive, m.name)
            if not (m.isfile() or m.isdir()):
                kind = "link" if (m.issym() or m.islnk()) else "device or special file"
                raise UnsafeInputError(f"{archive.name}: member {m.name!r} is a {kind}; refusing to extract it")
        budget = [max_bytes]
        for m in members:
            if not m.isfile():
                continue
            rel = _safe_member_path(archive, m.name)
            target = dest.joinpath(*rel.parts)
            try:
                src = tf.extractfile(m)
                if src is None:
                    continue
                with src:
                    _copy_limited(src, target, budget, archive)
            except _MEMBER_ERRORS as exc:
                raise InputError(f"{archive.name}: a member is corrupt or cannot be extracted "
                                 f"({type(exc).__name__})") from None
            names[target] = str(rel)
    return names


@contextlib.contextmanager
def extracted(archive: Path) -> Iterator[tuple[Path, dict[Path, str]]]:
    """Extract ``archive`` into a temporary folder; yield (folder, {extracted path: member name}).

    The folder is removed on exit. Raises :class:`UnsafeInputError` for unsafe members or sizes.
    """
    archive = Path(archive)
    max_bytes = _limit("MEDSEG_MAX_ARCHIVE_BYTES", DEFAULT_MAX_ARCHIVE_BYTES)
    max_members = _limit("MEDSEG_MAX_ARCHIVE_MEMBERS", DEFAULT_MAX_MEMBERS)
    tmp = Path(tempfile.mkdtemp(prefix="medseg-archive-"))
    try:
        if archive.name.lower().endswith(".zip"):
            names = _extract_zip(archive, tmp, max_bytes, max_members)
        else:
            names = _extract_tar(archive, tmp, max_bytes, max_members)
        yield tmp, names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
