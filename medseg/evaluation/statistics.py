"""``statistics.json`` of a case: :func:`medseg.metrics.structures.structure_statistics` of the
labels a model wrote, over the image they came from (``medseg segment/batch --statistics``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg.io.atomic import atomic_write_text
from medseg.metrics.structures import structure_statistics

UNITS = {"volume_ml": "mL", "intensity": "image units (HU for CT)", "bbox_ras_mm": "RAS+ mm",
         "centroid_ras_mm": "RAS+ mm"}


def write_statistics(folder: Path, image: Any, labels: Any, model: Any) -> str:
    """Write ``folder/statistics.json`` (an ``extra_writers`` entry of ``segment_file``); returns
    its name. Instance models get one entry for all objects of their class."""
    if model.task == "instance":
        labels = (labels > 0).to(labels.dtype)
        names = {1: next(iter(model.labels.values()), "object")}
    else:
        names = model.labels
    table = structure_statistics(labels, image, image.affine, names=names)
    atomic_write_text(Path(folder) / "statistics.json",
                      json.dumps({"units": UNITS, "structures": table}, indent=2) + "\n")
    return "statistics.json"
