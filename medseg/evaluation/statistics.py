"""``statistics.json`` of a case: :func:`medseg.metrics.structures.structure_statistics` of the
labels a model wrote, over the image they came from (``medseg segment/batch --statistics``).

:class:`StructureStatistics` is the file's schema (its one reader and writer; version
:data:`STATISTICS_VERSION`, see :mod:`medseg.schema`). :func:`write_statistics` is an
``extra_writers`` entry of ``segment_file``: it returns the file name with the record, so the
table travels in the :class:`~medseg.inference.result.SegmentationResult`
(``result.records["statistics.json"]``) and a batch job never reads the file back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.atomic import atomic_write_text
from medseg.metrics.structures import structure_statistics
from medseg.schema import check_version, read_record

UNITS = {"volume_ml": "mL", "intensity": "image units (HU for CT)", "bbox_ras_mm": "RAS+ mm",
         "centroid_ras_mm": "RAS+ mm"}

#: files without ``schema_version`` are version 1 (see :mod:`medseg.schema`)
STATISTICS_VERSION = 1


@dataclass(frozen=True)
class StructureStatistics:
    """The content of ``statistics.json``: ``structures`` maps each label value (a string) to its
    entry (``name``, ``voxels``, and for a present structure ``volume_ml``, ``intensity``,
    ``bbox_ras_mm``, ``bbox_index``, ``centroid_ras_mm``, ``components``); ``units`` says the
    unit of each figure. Raises InputError for a table of another shape."""

    structures: dict[str, dict[str, Any]]
    units: dict[str, str] = field(default_factory=lambda: dict(UNITS))

    def __post_init__(self) -> None:
        if not isinstance(self.structures, Mapping) or not isinstance(self.units, Mapping):
            raise InputError("statistics: 'structures' and 'units' must be objects")
        for value, entry in self.structures.items():
            if not str(value).isdigit() or not isinstance(entry, Mapping):
                raise InputError(f"statistics: structure {value!r} must be a label value with an object")
            if not isinstance(entry.get("name"), str) or not isinstance(entry.get("voxels"), int):
                raise InputError(f"statistics: structure {value} lacks its name or voxel count")
            if entry["voxels"] > 0 and not isinstance(entry.get("volume_ml"), int | float):
                raise InputError(f"statistics: structure {value} lacks volume_ml")

    def volumes_ml(self, digits: int = 4) -> dict[str, float]:
        """Structure name -> volume in mL (0 for an absent structure), rounded to ``digits``."""
        return {e["name"]: round(e.get("volume_ml", 0.0), digits) for e in self.structures.values()}

    def to_json(self) -> dict[str, Any]:
        return {"units": dict(self.units), "structures": self.structures}

    def dumps(self) -> str:
        """The text of ``statistics.json``."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "statistics.json") -> StructureStatistics:
        check_version(obj, STATISTICS_VERSION, where)
        if "structures" not in obj:
            raise InputError(f"{where} lacks 'structures'")
        try:
            return cls(structures=obj["structures"], units=obj.get("units", dict(UNITS)))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> StructureStatistics:
        return read_record(cls, path)


def compute_statistics(image: Any, labels: Any, model: Any) -> StructureStatistics:
    """The statistics of the labels ``model`` wrote over ``image``. Instance models get one entry
    for all objects of their class."""
    if model.task == "instance":
        labels = (labels > 0).to(labels.dtype)
        names = {1: next(iter(model.labels.values()), "object")}
    else:
        names = model.labels
    return StructureStatistics(structure_statistics(labels, image, image.affine, names=names))


def write_statistics(folder: Path, image: Any, labels: Any, model: Any) -> tuple[str, StructureStatistics]:
    """Write ``folder/statistics.json`` (an ``extra_writers`` entry of ``segment_file``); returns
    its name and its :class:`StructureStatistics`."""
    stats = compute_statistics(image, labels, model)
    atomic_write_text(Path(folder) / "statistics.json", stats.dumps())
    return "statistics.json", stats
