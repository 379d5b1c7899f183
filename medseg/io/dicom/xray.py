r"""Projection radiographs (CR, DX, MG, ...): one frame -> a 2D MetaTensor (1, i, j).

* ``i`` runs along the pixel rows (the column index of the pixel array), ``j`` down the columns,
  so ``out[0, i, j] == pixel_array[j, i]`` after rescale (and inversion, below).
* Spacing (mm): ``PixelSpacing`` when present (already calibrated at the patient); else
  ``ImagerPixelSpacing`` (at the detector) divided by ``EstimatedRadiographicMagnificationFactor``
  when that is present, else ``ImagerPixelSpacing`` as is; a value <= 0 (seen in anonymised files)
  counts as absent; with neither, 1.0 (unit-less) and ``meta["spacing_source"] = "default"`` (the
  project-wide value). ``meta["spacing_source"]`` always says which was used.
* MONOCHROME1 (low values bright) is inverted after rescale, ``out = lo + hi - value`` over the
  range of BitsStored, so that bright = dense in every output; ``meta["photometric_original"]``
  keeps the stored interpretation. No VOI LUT/window is applied.
* Directions come from PatientOrientation (0020,0020), which names the patient direction of
  increasing ``i`` (along a row) and ``j`` (down a column): letters L/R/A/P/H/F become RAS unit
  vectors (R = +x, A = +y, H = +z; an oblique value such as "LF" is their normalised sum), and the
  normal is ``i x j``. So a PA chest film stored ``L\F`` gets i -> patient's left (RAS -x) and
  j -> feet (RAS -z), and ``meta["orientation_known"]`` is True. Without a usable
  PatientOrientation the directions are the identity, ``meta["orientation_known"]`` is False and a
  warning says left/right is unknown: never trust that affine's sides.
* A projection has no position in the patient frame: the origin is 0 (no patient position is
  invented). ``meta["patient_orientation"]`` copies PatientOrientation when present.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np

from medseg.errors import GeometryError, InputError
from medseg.io.dicom.geometry import check_grid
from medseg.io.dicom.headers import int_attr, values
from medseg.io.dicom.pixels import _rescale, base_meta, file_label, load_frames
from medseg.io.dicom.series import SeriesInfo
from medseg.io.safety import GeometryWarning

log = logging.getLogger("medseg.io.dicom")

_PHOTOMETRIC = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
                          "PALETTE COLOR", "HSV", "ARGB", "CMYK", "YBR_PARTIAL_422"})
_RAS = {"R": (1.0, 0.0, 0.0), "L": (-1.0, 0.0, 0.0), "A": (0.0, 1.0, 0.0), "P": (0.0, -1.0, 0.0),
        "H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0)}


def orientation_directions(patient_orientation) -> np.ndarray | None:
    """3x3 matrix whose columns are the RAS directions of i, j and the normal, from
    PatientOrientation (e.g. ``["L", "F"]``); None when absent, malformed or not orthogonal."""
    items = [str(v).strip().upper() for v in values(patient_orientation)]
    if len(items) != 2 or not all(v and set(v) <= set(_RAS) for v in items):
        return None
    cols = []
    for v in items:
        vec = np.sum([_RAS[c] for c in v], axis=0)
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:  # e.g. "LR"
            return None
        cols.append(vec / norm)
    if abs(float(np.dot(cols[0], cols[1]))) > 1e-3:
        return None
    return np.stack([cols[0], cols[1], np.cross(cols[0], cols[1])], axis=1)


def _spacing(ds, name: str) -> tuple[float, float, str]:
    """(between rows, between columns) in mm and the source of the numbers."""
    def pair(key):
        v = values(ds.get(key))
        if len(v) != 2:
            return None
        try:
            a, b = float(v[0]), float(v[1])
        except (TypeError, ValueError, OverflowError):
            raise GeometryError(f"{name}: {key} is not numeric") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise GeometryError(f"{name}: {key} is not finite (NaN or infinite); the file is corrupt")
        if a <= 0 or b <= 0:
            log.warning("%s: %s is not > 0 mm (blanked?); ignoring it", name, key)
            return None
        return a, b

    ps = pair("PixelSpacing")
    if ps is not None:
        return ps[0], ps[1], "PixelSpacing"
    ips = pair("ImagerPixelSpacing")
    if ips is not None:
        mag = values(ds.get("EstimatedRadiographicMagnificationFactor"))
        try:
            mag = float(mag[0]) if len(mag) == 1 else None
        except (TypeError, ValueError, OverflowError):
            mag = None
        if mag and math.isfinite(mag) and mag > 0 and math.isfinite(ips[0] / mag) and ips[1] / mag > 0:
            return ips[0] / mag, ips[1] / mag, "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
        return ips[0], ips[1], "ImagerPixelSpacing"
    return 1.0, 1.0, "default"


def read_xray(info: SeriesInfo, path: Path):
    """Read the single radiograph of ``info`` (see module doc); returns (image, affine, meta)."""
    if len(info.headers) != 1:
        raise InputError(f"series {info.series_instance_uid} holds {len(info.headers)} radiographs; "
                         "read one file at a time (pass the file path)")
    h = info.headers[0]
    if h.n_frames != 1:
        raise InputError(f"{h.name}: {h.n_frames}-frame {info.modality} (cine); only single-frame "
                         "radiographs are supported")
    ds = h.ds
    frame = load_frames(h)[0].astype(np.float32)
    slope, intercept = _rescale(ds, h.name)
    frame = frame * np.float32(slope) + np.float32(intercept)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "MONOCHROME1":
        bits = int_attr(ds, "BitsStored", h.name) or int_attr(ds, "BitsAllocated", h.name, 16) or 16
        signed = (int_attr(ds, "PixelRepresentation", h.name, 0) or 0) == 1
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        r_lo, r_hi = sorted((lo * slope + intercept, hi * slope + intercept))
        frame = np.float32(r_lo + r_hi) - frame
    elif photometric != "MONOCHROME2":
        known = photometric if photometric in _PHOTOMETRIC else "(not a known value)"
        raise InputError(f"{h.name}: PhotometricInterpretation {known} is not greyscale")
    sr, sc, source = _spacing(ds, h.name)
    image = np.ascontiguousarray(frame.T)
    po = ds.get("PatientOrientation")
    directions = orientation_directions(po)
    affine = np.eye(4)
    if directions is None:
        warnings.warn(f"{h.name}: no usable PatientOrientation; left/right of this radiograph is unknown",
                      GeometryWarning, stacklevel=2)
        affine[:3, :3] = np.diag([sc, sr, 1.0])
    else:
        affine[:3, :3] = directions * np.array([sc, sr, 1.0])
    check_grid(affine, image.shape, h.name)
    meta = base_meta(info, path)
    meta.update({
        "spacing": (float(sc), float(sr)),
        "spacing_source": source,
        "photometric_original": photometric,
        "sop_instance_uids": [str(ds.get("SOPInstanceUID", ""))],
        "dicom_files": [file_label(h, info.source)],
        "projection": True,
        "orientation_known": directions is not None,
    })
    if values(po):
        meta["patient_orientation"] = [str(v) for v in values(po)]
    return image, affine, meta
