"""numpy (i, j[, k]) <-> SimpleITK images with the voxel spacing, and the spacing of an affine.

SimpleITK's ``GetImageFromArray`` reads the LAST numpy axis as its x index, so an array indexed
``(i, j, k)`` as medseg's MetaTensors are is transposed on the way in and out: SimpleITK's index
``(x, y, z)`` is then medseg's ``(i, j, k)`` and seeds can be given in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.geometry import spacing_of  # noqa: F401 - the one implementation, importable here too


def to_sitk(arr: np.ndarray, spacing: Sequence[float]):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr).T))
    img.SetSpacing([float(s) for s in spacing])
    return img


def from_sitk(img) -> np.ndarray:
    import SimpleITK as sitk

    return np.ascontiguousarray(sitk.GetArrayFromImage(img).T)
