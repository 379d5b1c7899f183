"""``Volume``: what every reader produces before torch or MONAI is involved.

numpy voxels (channel first), a 4x4 voxel -> RAS+ mm affine and the reader's ``meta`` (see
:mod:`medseg.io` for the keys). Commands that only read and write files (``info``, ``convert``,
``evaluate``, ``report``) work on a ``Volume`` and never import torch or MONAI;
:func:`medseg.io.load` turns it into the :class:`monai.data.MetaTensor` the network side uses.

It behaves like a read-only MetaTensor where the metric and writer helpers look: ``.shape``,
``.affine`` (numpy float64), ``.meta``, ``.ndim``, ``.dtype`` and ``numpy.asarray(volume)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(eq=False)
class Volume:
    """Channel-first voxels ``(C, i, j[, k])`` with their voxel -> RAS mm affine and reader meta."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def numpy(self) -> np.ndarray:
        """The voxels (no copy), as ``MetaTensor.numpy()`` gives them."""
        return self.array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.array if dtype is None else self.array.astype(dtype, copy=False)
