"""One filter for every warning and library log line the CLI prints: header values never pass.

pydicom, highdicom, nibabel, tifffile and PIL put the offending value into their messages
(``Invalid value for VR IS: '<the patient's name>'``), and a value stored under the wrong tag can
be anything, a name included. medseg's own warnings are built without header values (see
:mod:`medseg.errors`), so they are shown as they are; a warning or log record raised by any other
package is shown with every quoted part replaced by ``<value>``, cut to one line, once per
process. :func:`install` is called by ``medseg``'s ``main`` before any command runs.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path
from typing import TextIO

_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|b'[^']*'|<[^<>]*>""")
_UNCLOSED = re.compile(r"""['"].*$""")
_PACKAGE = str(Path(__file__).resolve().parent)
#: Loggers of the libraries medseg reads files with; their records are scrubbed.
LIBRARY_LOGGERS = ("pydicom", "highdicom", "nibabel", "PIL", "tifffile", "SimpleITK", "itk", "pynetdicom")
_seen: set[str] = set()


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


def _show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          file: TextIO | None = None, line: str | None = None) -> None:
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
