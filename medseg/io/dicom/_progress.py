"""tqdm progress bars, disabled when ``$MEDSEG_PROGRESS=0`` or when asked."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from medseg.settings import progress_enabled

T = TypeVar("T")


def progress_iter(items: Iterable[T], *, total: int | None = None, desc: str = "",
                  enabled: bool = True, min_items: int = 50) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar when enabled, ``$MEDSEG_PROGRESS`` is not 0 and it is long."""
    if not progress_enabled(enabled) or (total is not None and total < min_items):
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, leave=False)
