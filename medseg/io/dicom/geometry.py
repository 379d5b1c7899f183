"""From slices (or frames) with ImagePositionPatient/ImageOrientationPatient to one volume.

Slices are ordered by their position along the slice normal ``n = row x col`` (``dot(IPP, n)``),
never by InstanceNumber or by z. Refused with :class:`GeometryError`: a missing position or
orientation, mixed orientations (tolerance 1e-4), mixed Rows/Columns/PixelSpacing, duplicate
positions, uneven spacing, a gap (missing slice, unless ``allow_missing_slices``) and a gantry
tilt (slice offsets not along the normal: the grid is sheared and medseg does not resample it).

With ``allow_missing_slices=True`` a gap is accepted only when every spacing is an exact multiple
(1% tolerance) of the smallest one: the missing slices are filled with the volume's minimum value
and their k indices are listed in ``meta["missing_slices"]``; nothing is interpolated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import GeometryError, InputError

IOP_TOL = 1e-4
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Slice:
    """One 2D image plane of a series (a file, or one frame of a multi-frame file)."""

    name: str                      # file (or file#frame) name for messages
    ipp: np.ndarray | None         # ImagePositionPatient, LPS mm
    iop: np.ndarray | None         # ImageOrientationPatient (row dir, col dir), LPS
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) mm
    rows: int
    columns: int
    load: Callable[[], np.ndarray]  # returns the rescaled (rows, columns) plane (float32 or exact ints)
    sop_instance_uid: str = ""
    file: str = ""
    thickness: float | None = None
    fill: Callable[[np.ndarray], None] | None = None  # writes the plane into a (rows, columns) array


def _floats(value, n: int, what: str, name: str) -> np.ndarray:
    from medseg.io.dicom.headers import values

    items = values(value)
    if len(items) != n:
        raise GeometryError(f"{name}: {what} holds {len(items)} values; it must hold {n} finite numbers")
    try:
        arr = np.asarray([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise GeometryError(f"{name}: {what} is not numeric") from None
    if not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name}: {what} must hold {n} finite numbers")
    return arr


def _present(value) -> bool:
    from medseg.io.dicom.headers import values

    return len(values(value)) > 0


def check_grid(affine: np.ndarray, shape, what: str) -> None:
    """Refuse a voxel grid whose affine or spacing is not finite or is singular (huge positions
    or spacings overflow): :class:`GeometryError`. Valid geometry passes unchanged."""
    from medseg.io.safety import affine_usable

    if not affine_usable(affine):
        raise GeometryError(f"{what}: positions/spacing give a non-finite or singular voxel grid "
                            f"(shape {tuple(int(s) for s in shape)}); the geometry is corrupt")


def plane_vectors(iop: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction, column direction and normal (row x col) from an IOP, in LPS."""
    row, col = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        raise GeometryError(f"{name}: ImageOrientationPatient has a zero vector")
    row, col = row / nr, col / nc
    if abs(float(row @ col)) > 1e-3:
        raise GeometryError(f"{name}: ImageOrientationPatient row and column are not orthogonal")
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def assemble(slices: Sequence[Slice], *, allow_missing_slices: bool = False,
             what: str = "series", progress: bool = True,
             dtype: np.dtype | type = np.float32) -> tuple[np.ndarray, np.ndarray, dict]:
    """Stack ``slices`` into a (i, j, k) volume of ``dtype`` (float32 unless the caller knows the
    planes are exact integers of a smaller type) and its voxel->RAS affine.

    The volume is a Fortran-ordered view (i fastest in memory, as in NIfTI files).

    Returns (volume, affine_ras, info) where info holds "spacing" (mm, i j k), "order" (index in
    ``slices`` per k, or -1 for a filled missing slice) and "missing_slices".
    """
    if not slices:
        raise InputError(f"{what}: no image slices")
    first = slices[0]
    for s in slices:
        if s.ipp is None:
            raise GeometryError(f"{s.name}: slice without ImagePositionPatient; "
                                "cannot place it in space, so the series cannot be read as a volume")
        if s.iop is None:
            raise GeometryError(f"{s.name}: slice without ImageOrientationPatient; "
                                "cannot place it in space, so the series cannot be read as a volume")
        if s.pixel_spacing is None:
            raise GeometryError(f"{s.name}: slice without PixelSpacing; spacing in mm is unknown")
    iop0 = first.iop
    for s in slices[1:]:
        if np.max(np.abs(s.iop - iop0)) > IOP_TOL:
            raise GeometryError(f"{what}: mixed orientations ({first.name} and {s.name} differ in "
                                "ImageOrientationPatient); select one stack or split the series")
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise GeometryError(f"{what}: mixed image sizes ({first.name} {first.rows}x{first.columns}, "
                                f"{s.name} {s.rows}x{s.columns})")
        if np.max(np.abs(np.subtract(s.pixel_spacing, first.pixel_spacing))) > 1e-4:
            raise GeometryError(f"{what}: mixed PixelSpacing ({first.name} and {s.name} differ)")
    row, col, normal = plane_vectors(iop0, first.name)
    positions = np.array([float(s.ipp @ normal) for s in slices])
    order = np.argsort(positions, kind="stable")
    pos = positions[order]
    n = len(slices)
    grid = list(order)
    missing: list[int] = []
    if n == 1:
        thick = first.thickness
        sk = float(thick) if thick is not None and np.isfinite(thick) and 0 < thick < 1e6 else 1.0
    else:
        diffs = np.diff(pos)
        dup = np.where(diffs < 1e-3)[0]
        if dup.size:
            a, b = slices[order[dup[0]]], slices[order[dup[0] + 1]]
            raise GeometryError(f"{what}: duplicate slice position ({a.name} and {b.name} at "
                                f"{pos[dup[0]]:.3f} mm along the normal); the series mixes stacks "
                                "(echoes, time points) — select one")
        sk = float(np.min(diffs))
        ratios = diffs / sk
        steps = np.round(ratios)
        tol = np.maximum(0.01, 0.01 * sk) / sk
        if np.any(np.abs(ratios - steps) > tol):
            raise GeometryError(f"{what}: uneven slice spacing ({diffs.min():.3f} to {diffs.max():.3f} mm); "
                                "medseg does not resample irregular series")
        if np.any(steps > 1):
            gap = int(np.argmax(steps > 1))
            a, b = slices[order[gap]], slices[order[gap + 1]]
            if not allow_missing_slices:
                raise GeometryError(
                    f"{what}: missing slice(s) between {a.name} and {b.name} (gap {diffs[gap]:.3f} mm, "
                    f"spacing {sk:.3f} mm); pass allow_missing_slices=True to fill gaps")
            idx = np.concatenate([[0], np.cumsum(steps).astype(int)])
            grid = [-1] * (int(idx[-1]) + 1)
            for k, o in zip(idx, order, strict=True):
                grid[int(k)] = int(o)
            missing = [k for k, o in enumerate(grid) if o < 0]
        # Gantry tilt: every IPP must lie on the line origin + t * normal.
        p0 = slices[order[0]].ipp
        offsets = np.array([slices[o].ipp - p0 for o in order])
        along = offsets @ normal
        lateral = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
        worst = int(np.argmax(lateral))
        if lateral[worst] > max(0.01, 1e-3 * abs(along[worst])):
            angle = np.degrees(np.arctan2(lateral[worst], abs(along[worst]) or 1.0))
            raise GeometryError(
                f"{what}: slice positions are not along the slice normal (gantry tilt or sheared "
                f"stack, about {angle:.1f} degrees); medseg refuses sheared grids: resample the series "
                "to a tilt-corrected grid first")
    sr, sc = first.pixel_spacing  # between rows (along j), between columns (along i)
    lps = np.eye(4)
    lps[:3, 0] = row * sc
    lps[:3, 1] = col * sr
    lps[:3, 2] = normal * sk
    lps[:3, 3] = slices[grid[0]].ipp
    affine = LPS_TO_RAS @ lps
    check_grid(affine, (first.columns, first.rows, len(grid)), what)

    nk = len(grid)
    from medseg.io.dicom._progress import progress_iter

    # Planes are stored contiguously as (k, rows=j, columns=i) and returned as the (i, j, k) view
    # (Fortran order, like nibabel's and MONAI's own readers): no transposing copy.
    stack = np.empty((nk, first.rows, first.columns), dtype=dtype)
    for k in progress_iter(range(nk), total=nk, desc="reading slices", enabled=progress):
        o = grid[k]
        if o < 0:
            continue
        if slices[o].fill is not None:  # straight into the volume, no plane allocated
            slices[o].fill(stack[k])
            continue
        plane = slices[o].load()
        if plane.shape != (first.rows, first.columns):
            raise InputError(f"{slices[o].name}: pixel data is {plane.shape}, header says "
                             f"{first.rows}x{first.columns}")
        stack[k] = plane
    volume = stack.transpose(2, 1, 0)
    if missing:
        present = [k for k in range(nk) if grid[k] >= 0]
        volume[:, :, missing] = volume[:, :, present].min()
    info = {"spacing": (float(sc), float(sr), float(sk)), "order": grid, "missing_slices": missing}
    return volume, affine, info


def plane_slice(name: str, ds, *, ipp, iop, pixel_spacing, thickness, load: Callable[[], np.ndarray], file: str,
                rows_name: str | None = None) -> Slice:
    """The one way a :class:`Slice` is built: from the raw DICOM values of a plane (a classic
    file's top-level attributes, or one frame's functional groups), checked here. Rows, Columns and
    SOPInstanceUID come from ``ds``, named ``rows_name`` (default ``name``) in messages."""
    from medseg.io.dicom.headers import int_attr

    spacing = None
    if _present(pixel_spacing):
        sp = _floats(pixel_spacing, 2, "PixelSpacing", name)
        if np.any(sp <= 0):
            raise GeometryError(f"{name}: PixelSpacing must be > 0 mm")
        spacing = (float(sp[0]), float(sp[1]))
    return Slice(
        name=name,
        ipp=_floats(ipp, 3, "ImagePositionPatient", name) if _present(ipp) else None,
        iop=_floats(iop, 6, "ImageOrientationPatient", name) if _present(iop) else None,
        pixel_spacing=spacing,
        rows=int_attr(ds, "Rows", rows_name or name, 0),
        columns=int_attr(ds, "Columns", rows_name or name, 0),
        load=load,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        file=file,
        thickness=_thickness(thickness),
    )


def slice_from_header(ds, name: str, load: Callable[[], np.ndarray], file: str) -> Slice:
    """A :class:`Slice` from a classic single-frame header (IPP/IOP/PixelSpacing at top level)."""
    return plane_slice(name, ds, ipp=ds.get("ImagePositionPatient"), iop=ds.get("ImageOrientationPatient"),
                       pixel_spacing=ds.get("PixelSpacing"), thickness=ds.get("SliceThickness"), load=load,
                       file=file)


def _thickness(thick) -> float | None:
    """SliceThickness as a positive finite number, else None (it is only a fallback spacing)."""
    from medseg.io.dicom.headers import values

    items = values(thick)
    if len(items) != 1:
        return None
    try:
        value = float(items[0])
    except (TypeError, ValueError, OverflowError):
        return None
    return value if np.isfinite(value) and value > 0 else None
