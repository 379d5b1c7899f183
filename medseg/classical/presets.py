"""CT presets on Hounsfield units: bone, lung, air, body outline (``--method preset:NAME``).

The thresholds are the usual textbook values; each preset is a threshold (SimpleITK
``BinaryThreshold``) followed by standard morphology, and expects CT in HU:

* ``bone``: HU >= 250 (trabecular and cortical bone; contrast-filled vessels above 250 HU are
  included too, as with any pure threshold), components under 0.1 mL removed.
* ``body``: HU > -500, the largest connected component, holes filled slice by slice along the
  axial axis (so lungs and bowel gas are inside the outline).
* ``air``: HU <= -400: every gas-filled voxel (outside air, lungs, airways, bowel gas).
* ``lung``: gas (HU <= -400) inside the body outline, not connected to the air outside the body,
  keeping the components of at least 10 % of the largest one's volume (both lungs, the airways
  joined to them) and at least 5 mL; bowel gas pockets are smaller and dropped.

The axial axis is the array axis most aligned with the patient's superior direction (from the
affine); without an affine, the last axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.classical._sitk import from_sitk, to_sitk
from medseg.errors import ConfigError

PRESETS = {
    "bone": "HU >= 250, components under 0.1 mL removed",
    "body": "HU > -500, largest component, holes filled per axial slice",
    "air": "HU <= -400 (all gas: outside air, lungs, bowel gas)",
    "lung": "gas (HU <= -400) inside the body outline, components >= 10% of the largest and >= 5 mL",
}


def _threshold(arr: np.ndarray, spacing, lo: float, hi: float) -> np.ndarray:
    import SimpleITK as sitk

    out = sitk.BinaryThreshold(to_sitk(arr, spacing), lowerThreshold=lo, upperThreshold=hi, insideValue=1,
                               outsideValue=0)
    return from_sitk(out).astype(bool)


def _components(mask: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(connected-component ids, voxels per id; index 0 = background) by SimpleITK."""
    import SimpleITK as sitk

    cc = from_sitk(sitk.ConnectedComponent(to_sitk(mask.astype(np.uint8), spacing), True))
    return cc, np.bincount(cc.ravel())


def fill_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    """Holes of a binary mask filled in each slice across ``axis`` (2D: the whole image)."""
    import SimpleITK as sitk

    if mask.ndim == 2:
        return from_sitk(sitk.BinaryFillhole(to_sitk(mask.astype(np.uint8), (1, 1)))).astype(bool)
    moved = np.moveaxis(mask, axis, -1)
    out = np.empty_like(moved, dtype=bool)
    for k in range(moved.shape[-1]):
        out[..., k] = from_sitk(sitk.BinaryFillhole(to_sitk(moved[..., k].astype(np.uint8), (1, 1)))).astype(bool)
    return np.moveaxis(out, -1, axis)


def body_mask(arr: np.ndarray, spacing: Sequence[float], axial_axis: int) -> np.ndarray:
    mask = _threshold(arr, spacing, -500.0 + 1e-3, float(np.finfo(np.float32).max))
    cc, counts = _components(mask, spacing)
    if counts.size <= 1:
        return mask
    largest = int(np.argmax(counts[1:])) + 1
    return fill_slices(cc == largest, axial_axis)


def lung_mask(arr: np.ndarray, spacing: Sequence[float], axial_axis: int, body: np.ndarray | None = None
              ) -> np.ndarray:
    """The ``lung`` preset: gas (HU <= -400) inside the body outline (``body``: computed when None),
    components of at least 10 % of the largest one's volume and at least 5 mL."""
    if body is None:
        body = body_mask(arr, spacing, axial_axis)
    gas = _threshold(arr, spacing, -float(np.finfo(np.float32).max), -400.0) & body
    cc, counts = _components(gas, spacing)
    if counts.size <= 1:
        return np.zeros(arr.shape, bool)
    ml = counts * (float(np.prod(spacing)) / 1000.0)
    ml[0] = 0
    keep = (ml >= 0.1 * ml.max()) & (ml >= 5.0)
    return keep[cc]


def axial_axis(affine: np.ndarray | None, ndim: int) -> int:
    """The array axis most aligned with the patient's superior direction; the last without an affine."""
    return int(np.argmax(np.abs(np.asarray(affine)[2, :ndim]))) if affine is not None and ndim == 3 else ndim - 1


def run_preset(name: str, arr: np.ndarray, spacing: Sequence[float], affine: np.ndarray | None = None):
    from medseg.classical.methods import Result

    key = str(name).strip().lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown CT preset {key!r}; choose from {', '.join(PRESETS)}")
    axial = axial_axis(affine, arr.ndim)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    big = float(np.finfo(np.float32).max)
    params = {"preset": key, "rule": PRESETS[key], "axial_axis": axial}
    if key == "bone":
        mask = _threshold(arr, spacing, 250.0, big)
        cc, counts = _components(mask, spacing)
        keep = counts * voxel_ml >= 0.1
        keep[0] = False
        return Result(keep[cc].astype(np.uint8), {1: "bone"}, params=params)
    if key == "air":
        return Result(_threshold(arr, spacing, -big, -400.0).astype(np.uint8), {1: "air"}, params=params)
    body = body_mask(arr, spacing, axial)
    if key == "body":
        return Result(body.astype(np.uint8), {1: "body"}, params=params)
    return Result(lung_mask(arr, spacing, axial, body).astype(np.uint8), {1: "lung"}, params=params)
