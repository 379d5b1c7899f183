"""The one rule for the version of a JSON file medseg writes (``provenance.json``,
``model_spec.json`` / ``medseg.json``, ``statistics.json``, ``train_config.json``, evaluate's
``summary.json``, the batch manifest's records): each file's dataclass holds its version as a
module constant, files written before versions existed carry no ``schema_version`` key and are
version 1, and a reader refuses a version it does not know (a newer medseg wrote it) with one
line naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medseg.errors import InputError


def check_version(obj: Any, version: int, where: str, *, error: type[Exception] = InputError) -> Mapping[str, Any]:
    """``obj`` when it is a JSON object of schema ``version`` (no key: version 1); ``error`` otherwise."""
    if not isinstance(obj, Mapping):
        raise error(f"{where} is not a JSON object")
    found = obj.get("schema_version", 1)
    if found != version:
        raise error(f"{where} has schema_version {found!r}; this medseg reads version {version} (upgrade medseg)")
    return obj


def read_record(cls: Any, path: Any, *, error: type[Exception] = InputError, hint: str = "") -> Any:
    """``cls.from_json`` of the JSON object in ``path``, with messages naming ``parent/file``: the
    one ``read`` of every schema dataclass (a missing, unreadable or non-object file raises
    ``error`` in one line, as does a wrong shape, through ``from_json``)."""
    from pathlib import Path

    from medseg.io.jsonfile import read_json_object

    p = Path(path)
    where = f"{p.parent.name}/{p.name}"
    return cls.from_json(read_json_object(p, error=error, name=where, hint=hint), where=where)
