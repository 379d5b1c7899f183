"""A model's declared domain, and the one-line flags an input or a result outside it raises.

A bundle declares in ``configs/medseg.json`` what it was made for (``"domain"``; a training run's
``model_spec.json`` may too)::

    "domain": {
      "modality": ["MR"],                         # DICOM Modality values the model expects
      "body_region": "head",                      # shown in the flags
      "fov_mm": {"min": [100, 100, 60], "max": [280, 300, 330]},
                                                  # extent of the input along R-L, A-P, S-I (RAS mm)
      "intensity_percentiles": {"1": [-1100, -500]},
                                                  # allowed range of the input's 1st/99th/... percentile
      "volume_ml": {"brain": [800, 2200]}         # plausible volume of each structure found (mL)
    }

:func:`check_input` looks at the image before the network runs, :func:`check_output` at the
labels it produced. Every flag is one line without header values (numbers and the model's own
names only). ``medseg segment``/``batch`` print them as warnings and record them in provenance
and the manifest; with ``--strict`` they refuse the case instead (:class:`OutOfDomainError`).
Nothing is declared, nothing is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.geometry import Geometry

_KEYS = {"modality", "body_region", "fov_mm", "intensity_percentiles", "volume_ml"}


class OutOfDomainError(InputError):
    """``--strict``: the input, or the result, lies outside the model's declared domain."""


def validate_domain(domain: Any) -> dict[str, Any]:
    """The domain dict checked for shape (ConfigError naming the bad key); ``{}`` for None."""
    if domain is None:
        return {}
    if not isinstance(domain, Mapping):
        raise ConfigError("model domain must be an object")
    unknown = set(domain) - _KEYS
    if unknown:
        raise ConfigError(f"model domain has unknown key(s) {', '.join(sorted(unknown))}")
    d = dict(domain)
    if "modality" in d and not (isinstance(d["modality"], list) and all(isinstance(m, str) for m in d["modality"])):
        raise ConfigError("model domain 'modality' must be a list of DICOM modality names")
    fov = d.get("fov_mm")
    if fov is not None and not (isinstance(fov, Mapping) and all(
            isinstance(fov.get(k), list) and len(fov[k]) == 3 for k in ("min", "max"))):
        raise ConfigError("model domain 'fov_mm' must hold 'min' and 'max', three mm values each (R-L, A-P, S-I)")
    for key in ("intensity_percentiles", "volume_ml"):
        ranges = d.get(key) or {}
        if not isinstance(ranges, Mapping) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
                for v in ranges.values()):
            raise ConfigError(f"model domain '{key}' must map names to [low, high]")
    return d


def world_extent_mm(image: Any) -> np.ndarray:
    """Extent (mm) of the image's voxel grid along R-L, A-P and S-I (its axis-aligned world box)."""
    grid = Geometry.of(image)
    aff, nd = grid.affine, grid.ndim
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in grid.shape], indexing="ij")).reshape(nd, -1)
    world = aff[:3, :nd] @ corners + aff[:3, 3:4]
    extent = world.max(axis=1) - world.min(axis=1)
    spacing = np.asarray(grid.spacing)  # a voxel's own size counts too (one slice is not 0 mm)
    return extent + np.abs(aff[:3, :nd] / spacing) @ spacing


def check_input(domain: Mapping[str, Any], image: Any) -> list[str]:
    """Flags for an input outside ``domain`` (see the module doc)."""
    flags: list[str] = []
    if not domain:
        return flags
    region = domain.get("body_region")
    what = f"the {region} model" if region else "this model"
    wanted = domain.get("modality")
    modality = str((getattr(image, "meta", {}) or {}).get("modality") or "")
    if wanted and modality not in ("", "unknown", "OT") and modality not in wanted:  # NIfTI: not known
        flags.append(f"input modality {modality} is not what {what} expects ({'/'.join(wanted)})")
    fov = domain.get("fov_mm")
    if fov and image.ndim - 1 == 3:
        ext = world_extent_mm(image)
        for axis, name in enumerate(("left-right", "anterior-posterior", "superior-inferior")):
            lo, hi = float(fov["min"][axis]), float(fov["max"][axis])
            if not lo <= ext[axis] <= hi:
                flags.append(f"input covers {ext[axis]:.0f} mm {name}, {what} expects {lo:.0f}-{hi:.0f} mm")
    pct = domain.get("intensity_percentiles") or {}
    if pct:
        values = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
        values = values[np.isfinite(values)]
        if values.size > 2_000_000:  # a fixed, seeded sample: the percentiles of a large volume
            values = np.random.default_rng(0).choice(values.ravel(), 2_000_000, replace=False)
        for q, (lo, hi) in sorted(pct.items(), key=lambda kv: float(kv[0])):
            v = float(np.percentile(values, float(q))) if values.size else float("nan")
            if not lo <= v <= hi:
                flags.append(f"the input's {_ordinal(q)} intensity percentile is {v:.4g}, {what} expects {lo:g} to "
                             f"{hi:g}")
    return flags


def _ordinal(q: str) -> str:
    n = int(float(q))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def check_output(domain: Mapping[str, Any], labels: Any, names: Mapping[int, str]) -> list[str]:
    """Flags for structures whose volume lies outside the declared plausible range (mL)."""
    ranges = (domain or {}).get("volume_ml") or {}
    if not ranges:
        return []
    arr = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    aff = np.asarray(labels.affine, dtype=np.float64)
    nd = arr.ndim - 1
    voxel_ml = float(abs(np.linalg.det(aff[:3, :3]))) / 1000.0 if nd == 3 else float("nan")
    counts = np.bincount(arr.ravel().astype(np.int64)) if arr.size else np.zeros(1, np.int64)
    flags = []
    for value, name in sorted(names.items()):
        if name not in ranges:
            continue
        lo, hi = ranges[name]
        ml = float(counts[value]) * voxel_ml if value < counts.size else 0.0
        if not lo <= ml <= hi:
            flags.append(f"{name} volume {ml:.1f} mL is outside the plausible {lo:g}-{hi:g} mL")
    return flags
