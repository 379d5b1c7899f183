"""One filter for every warning and library log line the CLI prints: header values never pass.

pydicom, highdicom, nibabel, tifffile and PIL put the offending value into their messages
(``Invalid value for VR IS: '<the patient's name>'``), and a value stored under the wrong tag can
be anything, a name included. medseg's own warnings are built without header values (see
:mod:`medseg.errors`), so they are shown as they are; a warning or log record raised by any other
package is shown with every quoted part replaced by ``<value>``, cut to one line, once per
process. :func:`install` is called by ``medseg``'s ``main`` before any command runs.

While a command runs without ``--verbose`` (:func:`quiet_libraries`), INFO log records (MONAI's
bundle and workflow messages) and the deprecation notes of the libraries (torch, MONAI: their
``DeprecationWarning`` / ``FutureWarning`` and any warning raised inside torch, MONAI or ignite)
are not shown: they describe library internals, not the input. medseg's own warnings and the
libraries' warnings about the input (pydicom, nibabel, ...) are always shown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|b'[^']*'|<[^<>]*>""")
_UNCLOSED = re.compile(r"""['"].*$""")
_PACKAGE = str(Path(__file__).resolve().parent)
#: Loggers of the libraries medseg reads files with; their records are scrubbed.
LIBRARY_LOGGERS = ("pydicom", "highdicom", "nibabel", "PIL", "tifffile", "SimpleITK", "itk", "pynetdicom")
_seen: set[str] = set()
#: packages whose own warnings are implementation notes, hidden unless --verbose
QUIET_PACKAGES = ("torch", "monai", "ignite")
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_quiet = False


def scrub(text: str, limit: int = 240) -> str:
    """``text`` on one line with every quoted (or ``<...>``) part replaced by ``<value>``.

    An opening quote that is never closed swallows the rest of the line, so a value cut in two
    cannot leak either half.
    """
    one = " ".join(str(text).split())
    out = _UNCLOSED.sub("<value>", _QUOTED.sub("<value>", one))
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _from_medseg(filename: str) -> bool:
    try:
        return str(Path(filename).resolve()).startswith(_PACKAGE)
    except (OSError, ValueError):
        return False


def _library_note(category: type[Warning], filename: str) -> bool:
    """A deprecation note of a library, or any warning raised inside torch / MONAI / ignite."""
    if issubclass(category, _DEPRECATIONS):
        return True
    return any(f"{os.sep}{pkg}{os.sep}" in str(filename) for pkg in QUIET_PACKAGES)


def _show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          file: TextIO | None = None, line: str | None = None) -> None:
    if _quiet and not _from_medseg(filename) and _library_note(category, filename):
        return
    if _from_medseg(filename):
        text = " ".join(str(message).split())
    else:
        text = f"{Path(filename).parent.name or 'library'}: {scrub(str(message))}"
    if text in _seen:
        return
    _seen.add(text)
    stream = file if file is not None else sys.stderr
    try:
        stream.write(f"medseg: warning: {text}\n")
    except (OSError, ValueError):  # stderr closed: nothing to report to
        pass


class ScrubFilter(logging.Filter):
    """Rewrites a library's log record so that it holds no quoted value (see :func:`scrub`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        record.msg, record.args = scrub(text), None
        if record.exc_info:
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    """Route every warning through :func:`_show` and scrub the library loggers (idempotent)."""
    warnings.showwarning = _show
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ScrubFilter) for f in logger.filters):
            logger.addFilter(ScrubFilter())


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """While the block runs: without ``verbose``, no INFO log record is emitted and library
    deprecation notes are not shown (see the module docstring); with it, INFO records go to
    stderr. The previous logging state is restored afterwards (the CLI runs in tests too)."""
    global _quiet
    previous_disable, previous_quiet = logging.root.manager.disable, _quiet
    handler = None
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("medseg: %(levelname)s: %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        previous_level = logging.getLogger().level
        logging.getLogger().setLevel(logging.INFO)
    else:
        logging.disable(max(previous_disable, logging.INFO))
        _quiet = True
    try:
        yield
    finally:
        logging.disable(previous_disable)
        _quiet = previous_quiet
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            logging.getLogger().setLevel(previous_level)
