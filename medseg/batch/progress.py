"""Progress of a batch job on stderr: a bar on a terminal, plain periodic lines otherwise (cron,
systemd, a CI log: no carriage returns, no ANSI codes, one line every ``interval_s`` seconds and one
at the end). stdout is left to the summary table. ``MEDSEG_PROGRESS=0`` silences both;
``MEDSEG_PROGRESS_INTERVAL`` sets the seconds between plain lines (default 60).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from medseg.settings import current


class Progress:
    """``update(outcome)`` once per case (``done``, ``failed`` or ``skipped``); ``close()`` at the end."""

    def __init__(self, total: int, *, desc: str = "cases", stream: TextIO | None = None,
                 interval_s: float | None = None, enabled: bool = True):
        self.total, self.desc = total, desc
        self.stream = stream if stream is not None else sys.stderr
        self.counts = {"done": 0, "failed": 0, "skipped": 0}
        settings = current()
        self.enabled = enabled and settings.progress
        self.interval_s = interval_s if interval_s is not None else settings.progress_interval_s or 60.0
        self._t0 = self._last = time.monotonic()
        self._bar = None
        if self.enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="case", file=self.stream)

    def update(self, outcome: str = "done") -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
        elif time.monotonic() - self._last >= self.interval_s:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        n = sum(self.counts.values())
        print(f"medseg batch: {n}/{self.total} {self.desc} ({self.counts['done']} done, {self.counts['failed']} failed, "
              f"{self.counts['skipped']} skipped) after {self._last - self._t0:.0f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.total:
            self._line()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
