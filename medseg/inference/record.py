"""The ``provenance.json`` of one segmentation, built from the model, the input, the files
written and the :class:`~medseg.inference.result.InferenceRecord` (no patient name, ID or birth
date: only hashes, UIDs, the series description and number, shapes and spacings)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any

from medseg.inference.model import SegmentationModel
from medseg.inference.result import Prediction, Provenance


def _readable_series(image: Any) -> dict[str, Any]:
    """SeriesDescription (printable, at most 64 characters) and SeriesNumber of a DICOM input:
    what a person recognises a case by (the report's case name)."""
    meta = image.meta if hasattr(image, "meta") else {}
    desc = "".join(ch for ch in str(meta.get("series_description") or "") if ch.isprintable())[:64].strip()
    number = meta.get("series_number")
    return {"series_description": desc, "series_number": int(number) if isinstance(number, int) else None}


def provenance(model: Any, model_kind: str, image: Any, pred: Prediction, digest: str, hashed: str,
               timings: dict[str, float], written: list[str], skipped: dict[str, str]) -> Provenance:
    """The provenance record of one segmentation (no patient identifiers): the model, the input,
    the outputs and ``pred``'s :class:`InferenceRecord` (device, TTA, stitching) with ``timings``."""
    import monai
    import numpy as np
    import torch

    import medseg

    labels, record = pred.labels, pred.record
    present = sorted(int(v) for v in np.unique(labels.numpy()) if v != 0)
    if isinstance(model, SegmentationModel):
        model_record = {"name": model.name, "source": model_kind, "weights_sha256": model.weights_sha256,
                        "preset": model.preset, "task": model.task, "network": model.network_spec,
                        "labels": {str(k): v for k, v in sorted(model.labels.items())},
                        "roi_size": list(model.roi_size), "overlap": model.overlap}
    else:
        model_record = {"name": model.name, "source": model_kind, "weights_sha256": model.weights_sha256,
                        "task": model.task, "labels": {str(k): v for k, v in sorted(model.labels.items())},
                        "describe": model.describe().to_json()}
    return Provenance(
        medseg_version=medseg.__version__,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        model=model_record,
        input={"sha256": digest, "hash_of": hashed, "format": image.meta.get("format"),
                  "modality": image.meta.get("modality"),
                  "series_instance_uid": image.meta.get("series_instance_uid"),
                  **(_readable_series(image) if image.meta.get("format") == "dicom" else {}),
                  "shape": [int(s) for s in image.shape[1:]],
                  "spacing_mm": [float(s) for s in labels.meta["spacing"]],
                  "spacing_source": str(image.meta.get("spacing_source") or "header")},
        output={"files": written, "skipped": skipped, "labels_present": present,
                "dtype": str(labels.dtype).replace("torch.", "")},
        device=record.device, tta=bool(record.tta), tta_disagreement=record.tta_disagreement,
        stitching=record.stitching, timings_s=dict(timings),
        versions={"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version(),
                  "numpy": np.__version__},
    )
