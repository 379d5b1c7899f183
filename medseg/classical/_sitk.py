"""numpy (i, j[, k]) <-> SimpleITK images with the voxel spacing, and the spacing of an affine.

SimpleITK's ``GetImageFromArray`` reads the LAST numpy axis as its x index, so an array indexed
``(i, j, k)`` as medseg's MetaTensors are is transposed on the way in and out: SimpleITK's index
``(x, y, z)`` is then medseg's ``(i, j, k)`` and seeds can be given in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spacing_of(affine: np.ndarray, n_spatial: int) -> tuple[float, ...]:
    """Voxel size in mm along each array axis (column norms of the affine)."""
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(s) for s in np.sqrt((a[:n_spatial, :n_spatial] ** 2).sum(0)))


def to_sitk(arr: np.ndarray, spacing: Sequence[float]):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr).T))
    img.SetSpacing([float(s) for s in spacing])
    return img


def from_sitk(img) -> np.ndarray:
    import SimpleITK as sitk

    return np.ascontiguousarray(sitk.GetArrayFromImage(img).T)
