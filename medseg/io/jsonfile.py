"""Reading the JSON files medseg and its users write (run folders, bundles, datasets, reports).

One reader, so that every such file fails the same way: a typed one-line error that names the
file (never its contents) and says what to do, instead of a ``JSONDecodeError`` traceback.
Nothing in the file is evaluated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Larger files are refused before they are read (the largest medseg writes are a few MB).
MAX_BYTES = 64 << 20


def read_json_object(path: str | os.PathLike[str], *, error: type[Exception], name: str | None = None,
                     hint: str = "", missing: str | None = None) -> dict[str, Any]:
    """Parse ``path`` and return its top-level JSON object.

    Raises ``error`` (one of :mod:`medseg.errors`) with a one-line message when the file is
    missing (``missing``, default "``name`` is missing"), unreadable, not UTF-8, not JSON, or not
    an object at the top level. ``name`` is how the file is called in messages (default
    ``parent/file``); ``hint`` (what to do about it) ends every message but ``missing``.
    """
    path = Path(path)
    name = name or f"{path.parent.name}/{path.name}"
    tail = f"; {hint}" if hint else ""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise error(f"{name} is larger than {MAX_BYTES >> 20} MiB; not a medseg or MONAI file{tail}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(missing or f"{name} is missing{tail}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{name} cannot be read ({type(exc).__name__}){tail}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{name} is not valid JSON (line {exc.lineno}){tail}") from None
    except RecursionError:
        raise error(f"{name} is nested too deeply to be a medseg or MONAI file{tail}") from None
    if not isinstance(data, dict):
        raise error(f"{name} is not a JSON object{tail}")
    return data


def read_yaml_object(path: str | os.PathLike[str], *, error: type[Exception], name: str | None = None) -> dict[str, Any]:
    """Parse a YAML file (MONAI bundle configs) with ``yaml.safe_load`` (no Python tags) and return
    its top-level mapping; the same one-line errors as :func:`read_json_object`."""
    import yaml

    path = Path(path)
    name = name or f"{path.parent.name}/{path.name}"
    try:
        if path.stat().st_size > MAX_BYTES:
            raise error(f"{name} is larger than {MAX_BYTES >> 20} MiB; not a MONAI config")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{name} cannot be read ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise error(f"{name} is not valid YAML{where}") from None
    except RecursionError:
        raise error(f"{name} is nested too deeply to be a MONAI config") from None
    if not isinstance(data, dict):
        raise error(f"{name} is not a mapping at the top level")
    return data
