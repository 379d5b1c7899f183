"""Matching the planes of a voxel grid to DICOM planes by their place in space (LPS mm), never by
their order: the one implementation the SEG writer and reader and the RTSTRUCT writer use.

A grid plane ``k`` and a DICOM plane match when the plane's position lies within 0.2 of a slice
spacing of the grid's plane ``k`` along the normal and within 0.1 of the smallest in-plane spacing
across it. (highdicom's own volume helpers sort and regularise a whole stack; here each plane is
matched on its own, so a missing source slice, a shuffled SEG or a frame of another grid are told
apart, each with its own message.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.errors import GeometryError
from medseg.geometry import spacing_of
from medseg.io.dicom.source import SourcePlane

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)
# Position tolerances, as fractions of the spacing: along the slice normal / within the plane.
NORMAL_TOL = 0.2
INPLANE_TOL = 0.1


def grid_lps(affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LPS affine, unit vectors of i/j/k as columns, spacings in mm) of a RAS affine."""
    lps = LPS @ affine_ras
    spacing = np.asarray(spacing_of(lps, 3))
    if np.any(spacing <= 0):
        raise GeometryError("the affine has a zero-length axis; the grid is degenerate")
    return lps, lps[:3, :3] / spacing, spacing


class GridPlanes:
    """The planes k of a grid (RAS ``affine``, ``nk`` planes) in LPS, with the match tolerances."""

    def __init__(self, affine_ras: np.ndarray, nk: int) -> None:
        self.lps, self.units, self.spacing = grid_lps(affine_ras)
        self.origins = (self.lps @ np.c_[np.zeros((nk, 2)), np.arange(nk, dtype=float), np.ones(nk)].T).T[:, :3]
        self.normal_tol = NORMAL_TOL * float(self.spacing[2])
        self.inplane_tol = INPLANE_TOL * float(min(self.spacing[0], self.spacing[1]))

    def nearest(self, points: np.ndarray, target: np.ndarray) -> tuple[int, float, float, bool]:
        """(index of the point of ``points`` nearest ``target``, its distance along the grid normal
        and across it in mm, whether both are within the tolerances)."""
        normal = self.units[:, 2]
        delta = np.asarray(points) - np.asarray(target)
        along_signed = delta @ normal
        along = np.abs(along_signed)
        across = np.linalg.norm(delta - np.outer(along_signed, normal), axis=1)
        best = int(np.argmin(along + across))
        ok = along[best] <= self.normal_tol and across[best] <= self.inplane_tol
        return best, float(along[best]), float(across[best]), bool(ok)

    def follows(self, row_dir: np.ndarray, col_dir: np.ndarray) -> bool:
        """True when a plane's row/column directions are the grid's i/j axes (to 0.999)."""
        return float(row_dir @ self.units[:, 0]) >= 0.999 and float(col_dir @ self.units[:, 1]) >= 0.999


def match_planes(affine_ras: np.ndarray, shape: tuple[int, int, int], planes: Sequence[SourcePlane],
                 what: str, may_miss: frozenset[int] = frozenset()) -> list[SourcePlane | None]:
    """For each k of the grid, the source plane at the same place in space (GeometryError if any k
    has none, a plane is matched twice, or orientations differ). Planes k in ``may_miss`` (missing
    slices of the source) get None when no source plane lies there."""
    if not len(planes):
        raise GeometryError(f"{what}: the source has no image planes to match")
    grid = GridPlanes(affine_ras, shape[2])
    positions = np.array([p.position for p in planes])
    used: dict[int, int] = {}
    out: list[SourcePlane | None] = []
    for k in range(shape[2]):
        best, along, across, ok = grid.nearest(positions, grid.origins[k])
        if not ok:
            if k in may_miss:
                out.append(None)
                continue
            raise GeometryError(
                f"{what}: no source slice at plane k={k} (nearest is {along:.3g} mm off along the "
                f"normal, {across:.3g} mm in-plane); the label map is not on the source grid")
        if best in used:
            raise GeometryError(f"{what}: planes k={used[best]} and k={k} fall on the same source slice; "
                                "the slice spacing of the label map does not match the source")
        plane = planes[best]
        if not grid.follows(plane.row_dir, plane.col_dir):
            raise GeometryError(f"{what}: the label map's i/j axes do not follow the source's "
                                "ImageOrientationPatient; resample it back to the source grid first")
        used[best] = k
        out.append(plane)
    return out
