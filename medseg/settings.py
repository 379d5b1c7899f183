"""Process settings that used to be read from the environment deep inside the library.

The ``medseg`` command reads the environment once, at its edge (:func:`from_env` in
:func:`medseg.cli.main`), and runs the command under those settings (:func:`using`). Library
code asks :func:`current`; a research script that never configured anything gets the
environment's values (read by :func:`from_env`, the only place that knows the variable names),
and can pass its own with ``with medseg.settings.using(Settings(progress=False)): ...``.

Variables: ``MEDSEG_PROGRESS`` (``0`` hides progress bars), ``MEDSEG_PROGRESS_INTERVAL`` (seconds
between a batch job's plain progress lines; not a positive number: the default), ``MEDSEG_BUNDLES`` (extra bundle
folders, ``os.pathsep``-separated, searched first), ``MEDSEG_CACHE`` (sample-data cache),
``MEDSEG_MAX_VOXELS``, ``MEDSEG_MAX_EXPANSION``, ``MEDSEG_MAX_ARCHIVE_BYTES``,
``MEDSEG_MAX_ARCHIVE_MEMBERS`` (input safety caps, kept as the raw text so that a bad value is
refused with its own message where the cap is applied). PACS credentials are not settings: they
are read where they are used and never stored.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: environment variable -> Settings field holding its raw text (caps are parsed where applied)
LIMIT_VARIABLES = {
    "MEDSEG_MAX_VOXELS": "max_voxels",
    "MEDSEG_MAX_EXPANSION": "max_expansion",
    "MEDSEG_MAX_ARCHIVE_BYTES": "max_archive_bytes",
    "MEDSEG_MAX_ARCHIVE_MEMBERS": "max_archive_members",
}


@dataclass(frozen=True)
class Settings:
    """What the environment can change. Defaults: progress bars on, no extra bundle folders,
    the cache in ``~/.cache/medseg``, the built-in safety caps (empty text = default)."""

    progress: bool = True
    progress_interval_s: float | None = None
    bundle_paths: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    limits: Mapping[str, str] = field(default_factory=dict)

    def limit_text(self, variable: str) -> str:
        """The raw text of a cap variable (``""``: not set, use the default)."""
        return str(self.limits.get(variable, "")).strip()


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default ``os.environ``): the one place that reads it."""
    env = os.environ if environ is None else environ
    cache = env.get("MEDSEG_CACHE")
    return Settings(
        progress=env.get("MEDSEG_PROGRESS", "1") != "0",
        progress_interval_s=_positive_float(env.get("MEDSEG_PROGRESS_INTERVAL")),
        bundle_paths=tuple(Path(p) for p in env.get("MEDSEG_BUNDLES", "").split(os.pathsep) if p.strip()),
        cache_dir=Path(cache) if cache else None,
        limits={k: env[k] for k in LIMIT_VARIABLES if k in env},
    )


def _positive_float(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None


_configured: list[Settings] = []


def current() -> Settings:
    """The settings in force: those given to :func:`using`, else the environment's."""
    return _configured[-1] if _configured else from_env()


def progress_enabled(progress: bool = True) -> bool:
    """Progress bars: asked for (``progress``) and not switched off in the settings."""
    return bool(progress) and current().progress


@contextlib.contextmanager
def using(settings: Settings) -> Iterator[Settings]:
    """Run the block under ``settings`` (nested blocks stack; the previous ones come back)."""
    _configured.append(settings)
    try:
        yield settings
    finally:
        _configured.pop()
