"""Per-structure statistics of a label map over its image: volume, intensity, extent, position.

Pure arrays and an affine (voxel index -> RAS+ mm): nothing is read from files here. For each
label present: voxel count, volume in mL, intensity mean / std (sample, ddof=1) / min / max and
the 5th, 25th, 50th, 75th and 95th percentiles (HU for CT), the bounding box of the structure's
voxel centres in RAS mm (axis-aligned in world space) and in voxel indices, the centroid in RAS
mm, and the number of connected components (face connectivity: 6 neighbours in 3D, 4 in 2D, as
SimpleITK's ``ConnectedComponentImageFilter`` counts by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import EvaluationError
from medseg.metrics._arrays import as_label_array, label_boxes

PERCENTILES = (5, 25, 50, 75, 95)


def _image_array(image: Any) -> np.ndarray:
    """Spatial float array of ``image``; a leading channel of size 1 is dropped (as for label maps)."""
    is_meta = hasattr(image, "affine")
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim in (3, 4) and arr.shape[0] == 1 and (is_meta or arr.ndim == 4):
        arr = arr[0]
    return arr.astype(np.float64, copy=False)


def structure_statistics(labels: Any, image: Any, affine: Any,
                         names: Mapping[int, str] | None = None) -> dict[str, dict[str, Any]]:
    """Statistics of every non-zero label of ``labels`` (see the module doc), keyed by label value.

    ``labels`` and ``image`` share one grid (numpy, torch or channel-first MetaTensor); ``affine``
    maps its voxel indices to RAS+ mm. ``names`` (label -> name) fills each entry's ``name``.
    Labels in ``names`` that are absent get ``voxels: 0`` and no other figures.
    """
    lab = as_label_array(labels, "label map")
    img = _image_array(image)
    if img.shape != lab.shape:
        raise EvaluationError(f"image grid {img.shape} differs from label grid {lab.shape}")
    aff = np.asarray(affine.detach().cpu().numpy() if hasattr(affine, "detach") else affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise EvaluationError("the affine must be a 4x4 voxel-to-RAS matrix")
    nd = lab.ndim
    cols = aff[:3, :nd]
    voxel_ml = float(abs(np.linalg.det(aff[:3, :3])) if nd == 3 else np.linalg.norm(np.cross(*cols.T))) / 1000.0
    structure = ndimage.generate_binary_structure(nd, 1)
    out: dict[str, dict[str, Any]] = {}
    boxes = label_boxes(lab)
    for value in sorted(set(boxes) | set((names or {}).keys())):
        entry: dict[str, Any] = {"name": (names or {}).get(value, str(value))}
        box = boxes.get(value)
        if box is None:
            out[str(value)] = {**entry, "voxels": 0}
            continue
        mask = lab[box] == value
        idx = np.nonzero(mask)
        values = img[box][mask]
        n = int(values.size)
        offset = np.array([s.start for s in box], dtype=np.float64)
        ijk = np.stack(idx, axis=1).astype(np.float64) + offset
        world = ijk @ cols.T + aff[:3, 3]
        centroid = ijk.mean(axis=0) @ cols.T + aff[:3, 3]
        _, n_components = ndimage.label(mask, structure=structure)
        pct = np.percentile(values, PERCENTILES)
        entry.update({
            "voxels": n,
            "volume_ml": n * voxel_ml,
            "intensity": {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if n > 1 else 0.0,
                "min": float(values.min()),
                "max": float(values.max()),
                **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
            },
            "bbox_ras_mm": {"min": [float(v) for v in world.min(axis=0)],
                            "max": [float(v) for v in world.max(axis=0)]},
            "bbox_index": {"start": [int(s.start) for s in box], "stop": [int(s.stop) for s in box]},
            "centroid_ras_mm": [float(v) for v in centroid],
            "components": int(n_components),
        })
        out[str(value)] = entry
    return out
