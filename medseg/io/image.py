"""``Image`` and ``LabelMap``: voxels on a :class:`~medseg.geometry.Geometry`, typed by what they
hold, and the one path from a reader's :class:`~medseg.io.volume.Volume` to a MONAI MetaTensor.

* ``Image`` (intensities) and ``LabelMap`` (integer labels) differ in how they may be resampled:
  ``Image.interpolation`` is ``"linear"``, ``LabelMap.interpolation`` is ``"nearest"`` (TorchIO's
  ScalarImage / LabelMap distinction), so code that resamples asks the type instead of guessing.
* Both wrap what the readers give (a MetaTensor, a Volume, or a numpy/torch array with an
  affine): ``.tensor`` is the MetaTensor the network side and the existing callers use,
  ``.geometry`` the grid, ``.meta`` the reader's keys (see :mod:`medseg.io`), and ``.dicom`` the
  :class:`~medseg.io.dicom.source.DicomSource` of an image read from DICOM (None otherwise): the
  source a SEG or RT Structure Set references, carried in memory.
* :func:`volume_meta` fills the meta keys every reader's output carries; :func:`to_metatensor`
  is the only place a Volume becomes a MetaTensor (``load``, ``read_dicom``, ``read_dicom_seg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medseg.errors import InputError
from medseg.geometry import Geometry, affine_of, as_numpy
from medseg.io.volume import Volume

__all__ = ["Image", "LabelMap", "to_image", "to_metatensor", "volume_meta"]


def volume_meta(array: np.ndarray, affine: np.ndarray, meta: dict[str, Any], path: Path | str) -> dict[str, Any]:
    """The reader's ``meta`` with the keys every medseg reader sets: ``space``, ``filename_or_obj``,
    ``spatial_shape``, ``original_affine`` (what MONAI's writers and inverses read),
    ``original_channel_dim``. The reader's own keys win."""
    spatial = tuple(int(s) for s in array.shape[1:])
    return {
        "space": "RAS",
        "filename_or_obj": str(path),
        "spatial_shape": np.asarray(spatial),
        "original_affine": np.asarray(affine, dtype=np.float64).copy(),
        "original_channel_dim": 0,
        **{k: v for k, v in meta.items() if k != "affine"},
    }


def to_metatensor(volume: Volume):
    """The :class:`monai.data.MetaTensor` of ``volume``: the same voxels (no copy unless numpy's
    strides are negative or the array is read-only: torch takes neither), float64 affine, meta."""
    import torch
    from monai.data import MetaTensor

    array = volume.array
    if any(st < 0 for st in array.strides) or not array.flags.writeable:
        array = np.array(array, order="K")  # one copy, keeping the memory order
    return MetaTensor(torch.from_numpy(array), affine=torch.as_tensor(volume.affine, dtype=torch.float64),
                      meta=dict(volume.meta))


@dataclass(frozen=True, eq=False)
class Image:
    """Channel-first voxels ``(C, i, j[, k])`` (a torch tensor or numpy array) on ``geometry``."""

    data: Any
    geometry: Geometry
    meta: dict[str, Any] = field(default_factory=dict)

    #: how this image may be resampled (``"linear"``; a :class:`LabelMap` says ``"nearest"``)
    interpolation: ClassVar[str] = "linear"
    kind: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.data.shape)
        if shape[1:] != self.geometry.shape:
            raise InputError(f"voxels {shape} do not fit the grid {self.geometry.shape} (channel first)")

    @classmethod
    def of(cls, x: Any, affine: Any = None) -> Image:
        """Wrap a MetaTensor, a Volume or an Image (its affine and meta), or an array with ``affine``."""
        if isinstance(x, Image):
            return cls(x.data, x.geometry, x.meta)
        aff = affine_of(x, "the image", affine=affine)
        return cls(x, Geometry(aff, tuple(int(s) for s in x.shape[1:])), dict(getattr(x, "meta", None) or {}))

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> RAS mm (4x4 float64)."""
        return self.geometry.affine

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.geometry.spacing

    @property
    def dicom(self):
        """The :class:`~medseg.io.dicom.source.DicomSource` the image was read from, None when it
        was not read from DICOM (or ``meta["dicom_files"]`` names other files now)."""
        from medseg.io.dicom.source import DicomSource

        src = self.meta.get("dicom_source")
        if isinstance(src, DicomSource) and src.describes(self.meta.get("dicom_files") or []):
            return src
        return None

    def numpy(self) -> np.ndarray:
        return as_numpy(self.data)

    def to_volume(self) -> Volume:
        """The numpy :class:`~medseg.io.volume.Volume` (no torch needed)."""
        return Volume(self.numpy(), self.affine.copy(), dict(self.meta))

    @property
    def tensor(self):
        """The MetaTensor (sharing the voxels), as :func:`medseg.io.load` returns it."""
        from monai.data import MetaTensor

        if isinstance(self.data, MetaTensor):
            return self.data
        return to_metatensor(Volume(self.numpy(), self.affine, self.meta))


class LabelMap(Image):
    """Integer label values (0 background) on a grid: resampled with nearest neighbour only."""

    interpolation: ClassVar[str] = "nearest"
    kind: ClassVar[str] = "label"

    def __post_init__(self) -> None:
        super().__post_init__()
        dtype = str(getattr(self.data, "dtype", ""))
        if "float" in dtype or "complex" in dtype:
            raise InputError(f"a label map holds integers, got {dtype}; read it with kind='label'")


def to_image(x: Any, affine: Any = None) -> Image:
    """An :class:`Image`, or a :class:`LabelMap` when ``meta["kind"]`` says ``"label"``."""
    meta = x.meta if isinstance(x, Image) else (getattr(x, "meta", None) or {})
    cls = LabelMap if meta.get("kind") == "label" else Image
    return cls.of(x, affine)
