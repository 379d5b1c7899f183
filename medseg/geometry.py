"""Where an image's voxels lie in the world: one ``Geometry`` value and the array helpers every
package needs to get at it (numpy; nibabel only for orientation codes; no torch or MONAI).

``Geometry`` holds the voxel -> RAS mm affine (4x4, float64) and the spatial shape; spacing (mm
per voxel axis), axis orientation codes (``"LPS"``: the world direction each voxel axis points
to, RAS+ convention) and the dimensionality are properties computed from them, so no module
recomputes ``norm(affine[:3, :n])`` on its own. It lives at the top of the package (like
:mod:`medseg.errors`) because io, metrics and inference all need it and must not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import GeometryError, InputError


def as_numpy(x: Any) -> np.ndarray:
    """A numpy array of a torch tensor (detached, on the CPU), a MetaTensor, a Volume or an array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def affine_of(x: Any, what: str = "the image", *, affine: Any = None, invertible: bool = False) -> np.ndarray:
    """The 4x4 float64 voxel -> RAS mm affine of ``x`` (or ``affine`` when given).

    GeometryError naming ``what`` when there is none or it is not 4x4; with ``invertible`` also
    when it is not finite or its 3x3 block is singular."""
    aff = getattr(x, "affine", None) if affine is None else affine
    if aff is None:
        raise GeometryError(f"{what} has no affine; pass a MetaTensor read by medseg.io.load "
                            "or affine=<4x4 voxel->RAS mm matrix>")
    aff = as_numpy(aff).astype(np.float64)
    if aff.shape != (4, 4):
        raise GeometryError(f"{what} affine must be 4x4, got shape {aff.shape}")
    if invertible and (not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12):
        raise GeometryError(f"the affine of {what} must be a finite, invertible 4x4 matrix")
    return aff


def spatial(arr: np.ndarray, what: str, *, ndims: tuple[int, ...] = (2, 3), multi_channel: bool = False
            ) -> np.ndarray:
    """Drop the channel axis: ``(1, i, j[, k])`` -> ``(i, j[, k])``; an array already spatial
    (``ndims`` axes) comes back as is. A 3D image with several channels gives channel 0 when
    ``multi_channel`` (images), else InputError (label maps); any other shape: InputError."""
    if arr.ndim == 4 and 3 in ndims:
        if arr.shape[0] != 1 and not multi_channel:
            raise InputError(f"{what} has {arr.shape[0]} channels; pass one integer label map "
                             "(take the argmax of one-hot or probability maps first)")
        return arr[0]
    if arr.ndim == 3 and arr.shape[0] == 1 and 2 in ndims:
        return arr[0]
    if arr.ndim in ndims:
        return arr
    shapes = " or ".join(f"(1, {', '.join('ijk'[:d])}) or ({', '.join('ijk'[:d])})" for d in ndims)
    raise InputError(f"{what} must have shape {shapes}, got {tuple(arr.shape)}")


def spacing_of(affine: np.ndarray, ndim: int = 3) -> tuple[float, ...]:
    """Voxel size in mm along each of the first ``ndim`` voxel axes (column norms of the affine)."""
    aff = np.asarray(affine, dtype=np.float64)
    rows = 3 if aff.shape[0] == 4 else aff.shape[0] - 1
    return tuple(float(s) for s in np.linalg.norm(aff[:rows, :ndim], axis=0))


def orientation_code(affine: np.ndarray, ndim: int = 3) -> str:
    """Axis codes of a RAS affine, e.g. ``"RAS"`` or ``"LPS"`` (nibabel's ``aff2axcodes``).

    Each letter is the world direction each voxel axis (i, j, k) points to, RAS+ convention.
    """
    import nibabel as nib

    codes = nib.orientations.aff2axcodes(np.asarray(affine, dtype=np.float64))
    return "".join(c if c is not None else "?" for c in codes[:ndim])


@dataclass(frozen=True, eq=False)
class Geometry:
    """A spatial grid: voxel -> RAS mm ``affine`` (4x4) and spatial ``shape`` ``(i, j[, k])``."""

    affine: np.ndarray
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        aff = affine_of(None, "the grid", affine=self.affine)
        object.__setattr__(self, "affine", aff)
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) not in (2, 3):
            raise GeometryError(f"a grid has 2 or 3 spatial axes, got shape {self.shape}")

    @classmethod
    def of(cls, image: Any, what: str = "the image") -> Geometry:
        """The grid of a channel-first image (MetaTensor, Volume): ``shape[1:]`` and its affine."""
        return cls(affine_of(image, what), tuple(int(s) for s in image.shape[1:]))

    @property
    def ndim(self) -> int:
        """Spatial dimensions (2 or 3)."""
        return len(self.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """mm per voxel along i, j[, k]."""
        return spacing_of(self.affine, self.ndim)

    @property
    def orientation(self) -> str:
        """World direction of each voxel axis, e.g. ``"LPS"`` (RAS+ letters)."""
        return orientation_code(self.affine, self.ndim)

    def same_grid(self, other: Geometry, atol_mm: float = 1e-4) -> bool:
        """Same shape and affine (to ``atol_mm``)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol_mm, rtol=0))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and self.shape == other.shape and bool(
            np.array_equal(self.affine, other.affine))

    def __hash__(self) -> int:
        return hash((self.shape, self.affine.tobytes()))

    def to_json(self) -> dict[str, Any]:
        """``{"shape", "spacing_mm", "orientation", "affine"}`` (plain lists)."""
        return {"shape": list(self.shape), "spacing_mm": list(self.spacing), "orientation": self.orientation,
                "affine": self.affine.tolist()}
