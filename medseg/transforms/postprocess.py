"""Label-map postprocessing per class, and instance labelling for cells.

All functions take a numpy integer label map on one grid (2D ``(i, j)`` or 3D ``(i, j, k)``) and
the voxel spacing in mm, and return a new array of the same shape and dtype. Sizes are physical:
``min_component_mm3`` is a volume in mm^3 (an area in mm^2 for 2D maps).

The ``postprocess`` dict of a model (``model_spec.json`` -> ``inference.postprocess``)::

    {"keep_largest_component": [1, 2] | true,     # true: every foreground class
     "fill_holes": [1] | true,
     "min_component_mm3": 50.0 | {"1": 50.0, "2": 10.0},
     "instance": {"foreground": [1], "boundary_class": 2 | null, "split": "watershed" | "none",
                  "min_distance_mm": 2.0, "min_size_mm3": 5.0},   # task "instance" only
     "vertebra_levels": {"levels": [1, 2, 3, 4, 5, 6],  # label values, superior (cranial) first
                         "opening_mm": 1.0, "min_size_mm3": 100.0, "min_fraction": 0.3,
                         "naming": "consecutive" | "vote"},
     "lung_field": {"input_window_hu": [-1000, 400], "closing_mm": 10.0, "min_fraction": 0.5}}

``vertebra_levels`` needs the label grid's voxel -> RAS affine (it orders vertebrae along the
patient's superior axis in world coordinates, never along an array axis). ``lung_field`` also
needs the image the network read (on the label grid): it keeps a lesion component only where it
lies in the lungs (:func:`keep_in_lung_field`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medseg.errors import ConfigError

_KEYS = {"keep_largest_component", "fill_holes", "min_component_mm3", "instance", "vertebra_levels", "lung_field"}
_INSTANCE_KEYS = {"foreground", "boundary_class", "split", "min_distance_mm", "min_size_mm3"}
_VERTEBRA_KEYS = {"levels", "opening_mm", "min_size_mm3", "min_fraction", "naming"}
_NAMINGS = ("consecutive", "vote")
_LUNG_KEYS = {"input_window_hu", "closing_mm", "min_fraction"}


def _structure(ndim: int):
    from scipy import ndimage

    return ndimage.generate_binary_structure(ndim, 1)


def _classes(selector: Any, present: Iterable[int]) -> list[int]:
    present = [int(c) for c in present if int(c) != 0]
    if selector is True:
        return present
    if selector in (None, False):
        return []
    if isinstance(selector, (int, np.integer)):
        return [int(selector)]
    if isinstance(selector, Sequence) and not isinstance(selector, str):
        return [int(c) for c in selector]
    raise ConfigError(f"postprocess: class selector must be true, an int or a list of ints, got {selector!r}")


def keep_largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Keep only the largest face-connected component of each class in ``classes`` (others -> 0)."""
    from scipy import ndimage

    out = labels.copy()
    for c in classes:
        mask = labels == c
        comp, n = ndimage.label(mask, structure=_structure(labels.ndim))
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            out[mask & (comp != int(np.argmax(sizes)) + 1)] = 0
    return out


def fill_holes(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Fill enclosed background holes of each class in ``classes`` (3D holes, not per slice).

    Only background (0) voxels are filled, so other classes are never overwritten.
    """
    from scipy import ndimage

    out = labels.copy()
    for c in classes:
        filled = ndimage.binary_fill_holes(labels == c, structure=_structure(labels.ndim))
        out[filled & (out == 0)] = c
    return out


def remove_small_components(labels: np.ndarray, spacing: Sequence[float],
                            min_mm3: float | Mapping[int, float], classes: Iterable[int] | None = None
                            ) -> np.ndarray:
    """Remove components smaller than ``min_mm3`` (mm^3; mm^2 in 2D) of each class (-> 0).

    ``min_mm3`` is one value for all ``classes`` or a mapping class -> minimum size.
    """
    from scipy import ndimage

    voxel = float(np.prod([float(s) for s in spacing[:labels.ndim]]))
    if voxel <= 0:
        raise ConfigError("postprocess: spacing must be positive mm values")
    if isinstance(min_mm3, Mapping):
        limits = {int(k): float(v) for k, v in min_mm3.items()}
    else:
        limits = {int(c): float(min_mm3) for c in (classes if classes is not None else np.unique(labels)) if c}
    out = labels.copy()
    for c, limit in limits.items():
        comp, n = ndimage.label(labels == c, structure=_structure(labels.ndim))
        if n == 0:
            continue
        sizes_mm3 = np.bincount(comp.ravel()) * voxel
        small = np.flatnonzero(sizes_mm3 < limit)
        small = small[small > 0]
        if small.size:
            out[np.isin(comp, small)] = 0
    return out


def label_instances(labels: np.ndarray, spacing: Sequence[float], *, foreground: Iterable[int] = (1,),
                    boundary_class: int | None = None, split: str = "watershed", min_distance_mm: float = 2.0,
                    min_size_mm3: float = 0.0) -> np.ndarray:
    """Turn a semantic map (foreground / optional boundary class) into instance IDs 1..N (int32).

    Connected components of the foreground classes are split by a watershed on the Euclidean
    distance transform (in mm, so anisotropic spacing is honoured) seeded at its local maxima
    at least ``min_distance_mm`` apart; boundary-class voxels separate cells and are assigned to
    the nearest instance afterwards. Instances smaller than ``min_size_mm3`` are dropped.
    """
    from scipy import ndimage
    from skimage.measure import label as sk_label
    from skimage.segmentation import watershed

    spacing = [float(s) for s in spacing[:labels.ndim]]
    fg = np.isin(labels, [int(c) for c in foreground])
    if split not in ("watershed", "none"):
        raise ConfigError(f"postprocess: instance split must be 'watershed' or 'none', got {split!r}")
    if split == "none" or not fg.any():
        inst = sk_label(fg, connectivity=1).astype(np.int32)
    else:
        from skimage.feature import peak_local_max

        dist = ndimage.distance_transform_edt(fg, sampling=spacing)
        min_vox = max(1, int(round(min_distance_mm / min(spacing))))
        components = sk_label(fg, connectivity=1)
        peaks = peak_local_max(dist, min_distance=min_vox, labels=components, exclude_border=False)
        markers = np.zeros(labels.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
        # components without a peak (tiny, flat) still get one marker
        missing = np.setdiff1d(np.unique(components[fg]), np.unique(components[markers > 0]))
        for cid in missing:
            idx = np.argwhere(components == cid)[0]
            markers[tuple(idx)] = markers.max() + 1
        inst = watershed(-dist, markers, mask=fg).astype(np.int32)
    if boundary_class is not None:
        boundary = labels == int(boundary_class)
        if boundary.any() and inst.max() > 0:
            dist_mm, nearest = ndimage.distance_transform_edt(inst == 0, sampling=spacing, return_indices=True)
            grow = inst[tuple(nearest)]
            inst = np.where(boundary & (dist_mm <= 2 * max(spacing)), grow, inst).astype(np.int32)
    if min_size_mm3 > 0 and inst.max() > 0:
        voxel = float(np.prod(spacing))
        sizes = np.bincount(inst.ravel()) * voxel
        small = np.flatnonzero(sizes < min_size_mm3)
        inst[np.isin(inst, small[small > 0])] = 0
    # renumber 1..N in order of first appearance
    ids = np.unique(inst)
    ids = ids[ids > 0]
    lut = np.zeros(int(inst.max()) + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[inst]


def _level_values(levels: Any) -> list[int]:
    if isinstance(levels, str) or not isinstance(levels, Sequence) or not levels:
        raise ConfigError("postprocess: vertebra_levels 'levels' must be a non-empty list of label values, "
                          "superior (cranial) first, e.g. [1, 2, 3, 4, 5, 6]")
    values = []
    for v in levels:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) <= 0:
            raise ConfigError(f"postprocess: vertebra_levels 'levels' must hold positive integers, got {v!r}")
        values.append(int(v))
    if len(set(values)) != len(values):
        raise ConfigError(f"postprocess: vertebra_levels 'levels' lists a value twice: {values}")
    return values


def vertebra_instances(mask: np.ndarray, spacing: Sequence[float], *, opening_mm: float = 1.0,
                       min_size_mm3: float = 100.0, min_fraction: float = 0.3) -> np.ndarray:
    """Split a 3D vertebra mask into instances 1..N (int32): connected components (face
    connectivity) after a morphological opening with a ball of radius ``opening_mm`` (mm, per-axis
    voxel radii from ``spacing``), which cuts thin bridges across the discs. Components smaller
    than ``min_size_mm3`` (mm^3) or than ``min_fraction`` x the median volume of the others (a
    posterior arch or process the opening cut off its body) are not instances; they and the other voxels of ``mask`` (trimmed by the opening,
    or small pieces) rejoin the nearest instance (distance in mm) when they are connected to one in
    ``mask`` (26-connectivity), else they are dropped (0)."""
    from scipy import ndimage

    sp = np.asarray([float(s) for s in spacing[:mask.ndim]], dtype=np.float64)
    if np.any(sp <= 0) or opening_mm < 0 or min_size_mm3 < 0 or not 0 <= min_fraction < 1:
        raise ConfigError("postprocess: vertebra_levels needs positive spacing (mm) and non-negative "
                          "opening_mm / min_size_mm3, and min_fraction in [0, 1)")
    mask = np.asarray(mask, dtype=bool)
    radius = opening_mm / sp
    core = mask
    if np.any(radius >= 1.0):
        half = np.floor(radius).astype(int)
        grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
        ball = sum((g / max(r, 1e-6)) ** 2 for g, r in zip(grids, radius, strict=True)) <= 1.0
        core = ndimage.binary_opening(mask, structure=ball)
    comp, n = ndimage.label(core, structure=_structure(mask.ndim))
    inst = np.zeros(mask.shape, dtype=np.int32)
    if n == 0:
        return inst
    sizes_mm3 = np.bincount(comp.ravel(), minlength=n + 1) * float(np.prod(sp))
    keep = np.flatnonzero(sizes_mm3 >= min_size_mm3)
    keep = keep[keep > 0]
    if keep.size:
        keep = keep[sizes_mm3[keep] >= min_fraction * float(np.median(sizes_mm3[keep]))]
    if keep.size == 0:
        return inst
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    inst = lut[comp]
    rest = mask & (inst == 0)
    if rest.any():
        # pieces touching an instance by an edge or a corner count as connected to it
        parents, _ = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
        owned = np.unique(parents[inst > 0])
        rejoin = rest & np.isin(parents, owned)
        if rejoin.any():
            _, nearest = ndimage.distance_transform_edt(inst == 0, sampling=sp, return_indices=True)
            inst[rejoin] = inst[tuple(ix[rejoin] for ix in nearest)]
    return inst


def vertebra_levels(labels: np.ndarray, spacing: Sequence[float], affine: np.ndarray, levels: Sequence[int],
                    *, opening_mm: float = 1.0, min_size_mm3: float = 100.0, min_fraction: float = 0.3,
                    naming: str = "consecutive") -> np.ndarray:
    """Relabel vertebrae with CONSECUTIVE levels, ordered along the patient's superior axis.

    The voxels labelled with any value of ``levels`` (label values, superior/cranial first, e.g.
    T12=1 ... L5=6) are split into vertebra instances (:func:`vertebra_instances`). Instances are
    ordered by the world S coordinate (RAS +z, from ``affine``: 4x4 voxel -> RAS mm of
    ``labels``) of their centroids, most superior first, and instance ``i`` gets
    ``levels[i + offset]``. The offset is the one that maximises the number of voxels whose new
    label equals the input (per-voxel network) label; ties go to the offset that names more
    instances, then to the smaller offset. Instances that fall above the first or below the last
    level for that offset (more instances than levels, e.g. a rib or the sacrum taken for a
    vertebra) become background (0), as do dropped small components. Other label values are left
    untouched. Returns a new array (same shape and dtype).

    ``naming="vote"``: the same instances, each named by the level most of its voxels have in
    ``labels`` (ties: the more superior level), with no consecutive order imposed; two instances may
    then share a level. For a network whose per-voxel levels are better than its instances.
    """
    values = _level_values(levels)
    if naming not in _NAMINGS:
        raise ConfigError(f"postprocess: vertebra_levels 'naming' must be one of {', '.join(_NAMINGS)}, got {naming!r}")
    if labels.ndim != 3:
        raise ConfigError(f"postprocess: vertebra_levels needs a 3D label map, got {labels.ndim}D")
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise ConfigError("postprocess: vertebra_levels needs the label grid's 4x4 voxel->RAS affine")
    fg = np.isin(labels, values)
    out = labels.copy()
    if not fg.any():
        return out
    inst = vertebra_instances(fg, spacing, opening_mm=opening_mm, min_size_mm3=min_size_mm3,
                              min_fraction=min_fraction)
    out[fg] = 0
    m = int(inst.max())
    if m == 0:
        return out
    # centroids (voxel index) -> world superior coordinate
    counts = np.bincount(inst.ravel(), minlength=m + 1)[1:].astype(np.float64)
    idx = np.nonzero(inst)
    ids = inst[idx]
    cent = np.stack([np.bincount(ids, weights=ix.astype(np.float64), minlength=m + 1)[1:] for ix in idx],
                    axis=1) / counts[:, None]
    sup = cent @ aff[2, :3] + aff[2, 3]
    order = np.argsort(-sup, kind="stable")  # order[r] = instance id - 1 at rank r (superior first)
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    # votes[r, j]: voxels of the instance at rank r that the input labels as levels[j]
    lut = np.full(int(max(values)) + 1, -1, dtype=np.int64)
    lut[values] = np.arange(len(values))
    lab_fg = labels[idx]
    col = lut[np.clip(lab_fg, 0, lut.size - 1)]
    col[lab_fg >= lut.size] = -1
    ok = col >= 0
    n_lv = len(values)
    votes = np.bincount(rank[ids[ok] - 1] * n_lv + col[ok], minlength=m * n_lv).reshape(m, n_lv)
    if naming == "vote":
        new = np.zeros(m + 1, dtype=labels.dtype)
        new[order + 1] = np.asarray(values, dtype=labels.dtype)[votes.argmax(axis=1)]
        out[fg] = new[inst[fg]]
        return out
    best = None
    for off in range(-(m - 1), n_lv):
        r = np.arange(m)
        valid = (r + off >= 0) & (r + off < n_lv)
        score = int(votes[r[valid], (r + off)[valid]].sum())
        key = (score, int(valid.sum()), -off)
        if best is None or key > best[0]:
            best = (key, off)
    off = best[1]
    new = np.zeros(m + 1, dtype=labels.dtype)
    for r in range(m):
        if 0 <= r + off < n_lv:
            new[order[r] + 1] = values[r + off]
    out[fg] = new[inst[fg]]
    return out


def lung_field(hu: np.ndarray, spacing: Sequence[float], affine: np.ndarray, *, closing_mm: float = 10.0
               ) -> np.ndarray:
    """The lungs as a lesion may lie in them, on a 3D CT in HU: the ``lung`` preset
    (:func:`medseg.classical.presets.lung_mask`: gas inside the body, large components), holes
    filled per axial slice (vessels, nodules), closed by a ball of ``closing_mm`` (lesions on the
    pleura, the mediastinum or the diaphragm). ``affine``: voxel -> RAS mm (finds the axial axis)."""
    import SimpleITK as sitk

    from medseg.classical._sitk import from_sitk, to_sitk
    from medseg.classical.presets import axial_axis, fill_slices, lung_mask

    axial = axial_axis(affine, hu.ndim)
    field = fill_slices(lung_mask(hu, spacing, axial), axial)
    radius = [int(np.floor(closing_mm / float(s))) for s in spacing]
    if field.any() and max(radius) >= 1:  # safeBorder (the default) pads, so the array's edge loses nothing
        field = from_sitk(sitk.BinaryMorphologicalClosing(to_sitk(field.astype(np.uint8), spacing), radius,
                                                          sitk.sitkBall)).astype(bool)
    return field


def keep_in_lung_field(labels: np.ndarray, hu: np.ndarray, spacing: Sequence[float], affine: np.ndarray, *,
                       closing_mm: float = 10.0, min_fraction: float = 0.5) -> np.ndarray:
    """Lesion components (each label, face connectivity) of which less than ``min_fraction`` of the
    voxels lie in the :func:`lung_field` of ``hu`` become background. Returns a new array."""
    from scipy import ndimage

    if labels.ndim != 3 or hu.shape != labels.shape:
        raise ConfigError(f"postprocess: lung_field needs a 3D label map and the image on its grid, got "
                          f"{labels.shape} and {hu.shape}")
    out = labels.copy()
    if not labels.any():
        return out
    field = lung_field(hu, spacing, affine, closing_mm=closing_mm)
    for v in np.unique(labels[labels > 0]):
        comp, n = ndimage.label(labels == v, structure=_structure(3))
        size = np.bincount(comp.ravel(), minlength=n + 1)
        inside = np.bincount(comp[field], minlength=n + 1)
        drop = inside < min_fraction * size
        drop[0] = False
        out[drop[comp]] = 0
    return out


def validate_postprocess(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a postprocess dict (ConfigError on unknown keys) and return a plain copy."""
    config = dict(config or {})
    bad = sorted(set(config) - _KEYS)
    if bad:
        raise ConfigError(f"postprocess: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(_KEYS))}")
    _section(config, "instance", _INSTANCE_KEYS, '{"foreground": [1], "split": "watershed"}')
    vl = _section(config, "vertebra_levels", _VERTEBRA_KEYS,
                  '{"levels": [1, 2, 3, 4, 5, 6], "opening_mm": 1.0, "min_size_mm3": 100.0}')
    if vl is not None:
        _level_values(vl.get("levels"))
        if vl.get("naming", "consecutive") not in _NAMINGS:
            raise ConfigError(f"postprocess: vertebra_levels 'naming' must be one of {', '.join(_NAMINGS)}")
        for key in ("opening_mm", "min_size_mm3", "min_fraction"):
            val = vl.get(key, 0.0)
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not np.isfinite(val) or val < 0:
                raise ConfigError(f"postprocess: vertebra_levels {key!r} must be a non-negative number")
        if float(vl.get("min_fraction", 0.0)) >= 1:
            raise ConfigError("postprocess: vertebra_levels 'min_fraction' must lie in [0, 1)")
    lf = _section(config, "lung_field", _LUNG_KEYS,
                  '{"input_window_hu": [-1000, 400], "closing_mm": 10.0, "min_fraction": 0.5}')
    if lf is not None:
        _input_window(lf)
        for key, hi in (("closing_mm", 100.0), ("min_fraction", 1.0)):
            val = lf.get(key, 0.5)
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 <= val <= hi:
                raise ConfigError(f"postprocess: lung_field {key!r} must be a number in [0, {hi:g}]")
    return config


def _section(config: Mapping[str, Any], name: str, known: set[str], example: str) -> Mapping[str, Any] | None:
    """``config[name]`` checked to be a mapping with only ``known`` keys (ConfigError), or None."""
    sec = config.get(name)
    if sec is None:
        return None
    if not isinstance(sec, Mapping):
        raise ConfigError(f"postprocess: {name!r} must be a mapping such as {example}")
    bad = sorted(set(sec) - known)
    if bad:
        raise ConfigError(f"postprocess: unknown {name} key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    return sec


def _input_window(lf: Mapping[str, Any]) -> tuple[float, float]:
    """The HU window that scaled the network input to 0..1 (``lung_field`` converts it back)."""
    w = lf.get("input_window_hu")
    if (not isinstance(w, Sequence) or isinstance(w, str) or len(w) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in w)
            or not w[0] < w[1]):
        raise ConfigError("postprocess: lung_field needs 'input_window_hu': [low, high], the HU window the "
                          "preset scaled to 0..1 (ct_lung: [-1000, 400])")
    return float(w[0]), float(w[1])


def apply_postprocess(labels: np.ndarray, spacing: Sequence[float], config: Mapping[str, Any] | None,
                      *, task: str = "semantic", affine: np.ndarray | None = None,
                      image: np.ndarray | None = None) -> np.ndarray:
    """Apply a model's postprocess dict: small components, vertebra levels, largest component,
    holes, instances.

    ``spacing`` is mm per voxel axis of ``labels``; ``affine`` (4x4 voxel -> RAS mm of ``labels``)
    is for operations that need world directions (``vertebra_levels``, ``lung_field``; None:
    ConfigError if one is configured). ``image``: the network input on the same grid (one channel,
    scaled 0..1 by the preset's window), for ``lung_field``.

    Order: ``min_component_mm3`` -> ``lung_field`` -> ``vertebra_levels`` -> ``keep_largest_component`` ->
    ``fill_holes`` -> ``instance`` (the last only for ``task="instance"``, or when ``instance`` is
    given).
    """
    config = validate_postprocess(config)
    present = np.unique(labels)
    out = labels
    if config.get("min_component_mm3") is not None:
        out = remove_small_components(out, spacing, config["min_component_mm3"], present)
    if config.get("lung_field") is not None:
        lf = config["lung_field"]
        if affine is None or image is None:
            raise ConfigError("postprocess: lung_field needs the label grid's voxel->RAS affine and the image the "
                              "network read (pass affine=... and image=...)")
        lo, hi = _input_window(lf)
        hu = lo + np.asarray(image, dtype=np.float32) * (hi - lo)
        out = keep_in_lung_field(out, hu, spacing, np.asarray(affine, dtype=np.float64),
                                 closing_mm=float(lf.get("closing_mm", 10.0)),
                                 min_fraction=float(lf.get("min_fraction", 0.5)))
    if config.get("vertebra_levels") is not None:
        if affine is None:
            raise ConfigError("postprocess: vertebra_levels needs the label grid's voxel->RAS affine "
                              "(pass affine=...)")
        vl = dict(config["vertebra_levels"])
        out = vertebra_levels(out, spacing, affine, vl["levels"], opening_mm=float(vl.get("opening_mm", 1.0)),
                              min_size_mm3=float(vl.get("min_size_mm3", 100.0)),
                              min_fraction=float(vl.get("min_fraction", 0.3)),
                              naming=str(vl.get("naming", "consecutive")))
    sel = _classes(config.get("keep_largest_component"), present)
    if sel:
        out = keep_largest_component(out, sel)
    sel = _classes(config.get("fill_holes"), present)
    if sel:
        out = fill_holes(out, sel)
    if task == "instance" or config.get("instance") is not None:
        inst = dict(config.get("instance") or {})
        out = label_instances(out, spacing, **inst)
    return out
