"""What every DICOM object derived from a source series (DICOM SEG, RT Structure Set) checks
before it is built: an integer label map on exactly the source grid, a name for every label value
present, a source whose identifiers can be referenced, and one source plane (or a missing slice
left empty) per plane k of the labels. The SEG and RTSTRUCT writers share it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.geometry import affine_of, as_numpy, spatial
from medseg.io.dicom.planes import INPLANE_TOL, grid_lps, match_planes
from medseg.io.dicom.source import DicomSource, SourcePlane, source_of


def label_array(labels: Any, source: Any, *, max_value: int | None = None, what: str = "") -> np.ndarray:
    """The labels as an integer (i, j, k) array on exactly the grid of ``source`` (shape, and the
    affine to 1e-3 / 0.1 of the smallest spacing): InputError for non-integer, negative or (with
    ``max_value``) too large values, GeometryError for another grid."""
    lab = spatial(as_numpy(labels), "labels", ndims=(3,))
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)) or not np.array_equal(lab, np.round(lab)):
            raise InputError("labels hold non-integer values; pass an integer label map, not probabilities")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind == "b":
        lab = lab.astype(np.uint8)
    elif lab.dtype.kind not in "iu":
        raise InputError(f"labels must be an integer array, got dtype {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise InputError("labels hold negative values; label values must be 0 (background) or positive")
    if max_value is not None and lab.size and int(lab.max()) > max_value:
        raise InputError(f"label value {int(lab.max())} is too large; {what}")
    src_shape = tuple(spatial(as_numpy(source), "source", ndims=(3,)).shape) if hasattr(source, "shape") else None
    if src_shape is not None and src_shape != lab.shape:
        raise GeometryError(f"label map shape {lab.shape} differs from the source's {src_shape}; "
                            "resample the labels to the source grid first")
    lab_aff, src_aff = affine_of(labels, "labels"), affine_of(source, "source")
    _, _, sp = grid_lps(src_aff)
    if not np.allclose(lab_aff[:3, :3], src_aff[:3, :3], atol=1e-3 * float(sp.min())) or \
            np.linalg.norm(lab_aff[:3, 3] - src_aff[:3, 3]) > INPLANE_TOL * float(sp.min()):
        raise GeometryError("the label map's affine differs from the source's; resample the labels to "
                            "the source grid first")
    return lab


def present_values(lab: np.ndarray, names: Mapping[int, str], needs: str) -> tuple[list[int], bool]:
    """(label values to write, whether the map was empty): the values present, or every named
    value > 0 for an all-zero map (an empty result is still a result). InputError when there is
    nothing to write (``needs`` says what the object needs), ConfigError for an unnamed value."""
    present = [int(v) for v in np.flatnonzero(np.bincount(lab.ravel())) if v != 0] if lab.size else []
    empty = not present
    if empty:
        present = sorted(v for v in names if v > 0)
        if not present:
            raise InputError(f"the label map is empty and label_names names no label; {needs}")
    missing = [v for v in present if v not in names]
    if missing:
        raise ConfigError(f"label values {missing} are in the label map but not in label_names; "
                          "name every label value")
    return present, empty


def source_planes(labels: Any, lab: np.ndarray, source: Any, *, what: str, object_name: str, on_missing: str,
                  not_writable: type[InputError]) -> tuple[DicomSource, list[SourcePlane | None]]:
    """The :class:`DicomSource` of ``source`` and, per plane k of ``lab``, its source plane (None
    at a missing slice of the source, which must then hold no label). ``not_writable`` (one line)
    when the source lacks identifiers the object must reference; GeometryError for another grid,
    labels on a missing slice (``on_missing`` says why that fails) or planes of another size."""
    src = source_of(source)
    problem = src.problem()
    if problem:
        raise not_writable(problem.replace("a DICOM SEG", object_name))
    meta = getattr(source, "meta", None) or {}
    may_miss = frozenset(int(k) for k in (meta.get("missing_slices") or []))
    planes = match_planes(affine_of(labels, "labels"), lab.shape, src.planes, what, may_miss)
    on_gap = [k for k, p in enumerate(planes) if p is None and np.any(lab[:, :, k])]
    if on_gap:
        raise GeometryError(f"labels on plane(s) k={on_gap}, where the source series has a missing "
                            f"slice; {on_missing}")
    ni, nj = lab.shape[:2]
    for d in sorted({p.ds_index for p in planes if p is not None}):
        ds = src.headers[d]
        if int(ds.Rows) != nj or int(ds.Columns) != ni:
            raise GeometryError(f"source images are {ds.Columns}x{ds.Rows} (columns x rows) but the label "
                                f"map plane is {ni}x{nj}; resample the labels to the source grid first")
    return src, planes
