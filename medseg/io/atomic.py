"""Atomic writes: write to a temporary file beside the target, then rename over it.

An interrupted run therefore never leaves a half-written file at a final path. Use::

    with atomic_path(final) as tmp:
        writer(tmp)          # tmp has the same suffix(es) as final, so format sniffing works
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_COMPRESSION = (".gz", ".bz2", ".xz", ".zst")


def _full_suffix(path: Path) -> str:
    """The format suffix: ``.nii.gz`` for ``series-1.2.840.nii.gz``, ``.dcm`` for ``a.b.dcm``."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSION:
        return "".join(suffixes[-2:])
    return path.suffix


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``final`` on success.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{_full_suffix(final)}",
                                    dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    atomic_write_bytes(final, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` on success.

    ``final`` must not exist yet (a finished output is never overwritten silently).
    """
    import shutil

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_writable_dir(path: str | os.PathLike[str], option: str = "output folder") -> Path:
    """Refuse, before any work starts, an output folder that cannot be written (ConfigError).

    ``path`` may not exist yet: then its nearest existing parent must be a folder we can create
    entries in. An existing file, a read-only or immutable folder, a missing permission: one line
    naming ``option``. Nothing is left behind (the probe file is removed at once).
    """
    from medseg.errors import ConfigError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {p} exists and is not a folder; give a folder path")
    probe_in = p
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise ConfigError(f"{option} {p} cannot be created: {probe_in} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".medseg-write-check-", dir=probe_in)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"{option} {p} cannot be written ({exc.strerror or type(exc).__name__}); "
                          "choose a folder you can write to") from None
    return p


def check_writable_file(path: str | os.PathLike[str], option: str = "output file") -> Path:
    """Like :func:`check_writable_dir` for a file to be (re)placed: not a folder, its folder writable."""
    from medseg.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {p} is a folder; give a file path")
    check_writable_dir(p.parent, f"folder of {option}")
    return p
