"""Chest CT phantom with lung nodules / masses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.data.phantoms._core import (
    HU,
    Orientation,
    Phantom,
    _check_shape,
    _ellipse,
    _ellipsoid,
    _finish_ct,
    _jitter,
    _world_grid,
)
from medseg.errors import ConfigError


def lung_ct(shape: Sequence[int] = (96, 96, 64), spacing: Sequence[float] = (1.5, 1.5, 2.5),
            orientation: Orientation = "LPS", seed: int = 0, *, lung_labels: bool = False,
            n_nodules: int | None = None, noise_hu: float = 12.0) -> Phantom:
    """Chest CT phantom in HU: thorax, lungs (~-850 HU), heart, ribs, spine and 1-3 nodules/masses.

    Labels ``{1: lung_nodule}`` (every nodule; ``meta["nodules"]`` lists each centre in RAS mm
    and radius in mm), or with ``lung_labels=True`` ``{1: lung_right, 2: lung_left}`` (nodules
    count as part of their lung). The right lung (patient's right, RAS x > 0) is the larger one;
    the heart bulges into the left. Nodules (~30 HU soft tissue, radius 0.10-0.34 of the lung's half
    width, at least 1.6 voxels: about 2.4-7.3 mm at the default field of view) lie fully inside one lung and never touch each other. ``n_nodules`` fixes
    their number (1-3 drawn from ``seed`` otherwise).
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.03)
    a, b, c = 0.9 * half[0], 0.68 * half[1], half[2]

    body = _ellipse(x, y, (0, 0), (a, b)) <= 1
    inner = _ellipse(x, y, (0, 0), (0.9 * a, 0.86 * b)) <= 1
    tissue = np.full(shape, HU["air"], np.float32)
    tissue[body] = HU["fat"]
    tissue[inner] = HU["muscle"]

    # ribs: a band in the chest wall, interrupted along z, sloping down towards the front
    wall = _ellipse(x, y, (0, 0), (0.84 * a, 0.78 * b))
    rib_phase = rng.uniform(0, 2 * np.pi)
    ribs = (wall <= 1) & (wall >= 0.8) & (np.sin((z + 0.25 * c * y / b) * 2 * np.pi / (0.42 * c) + rib_phase) > 0.35)
    ribs &= y > -0.7 * b

    lung_s = np.array([0.34 * a, 0.62 * b, 0.85 * c])
    rl_c = np.array([0.42 * a, -0.02 * b, 0.08 * c]) + _jitter(rng, 0.02) * (a, b, c)
    ll_c = np.array([-0.42 * a, -0.04 * b, 0.1 * c]) + _jitter(rng, 0.02) * (a, b, c)
    rl_s = lung_s * (1 + _jitter(rng, 0.05))
    ll_s = lung_s * np.array([0.92, 1.0, 0.97]) * (1 + _jitter(rng, 0.05))
    dome_r = -0.55 * c + 0.35 * c * ((x - rl_c[0]) / rl_s[0]) ** 2
    dome_l = -0.62 * c + 0.35 * c * ((x - ll_c[0]) / ll_s[0]) ** 2  # left hemidiaphragm lower
    lung_r = (_ellipsoid(x, y, z, rl_c, rl_s) <= 1) & (z > dome_r)
    lung_l = (_ellipsoid(x, y, z, ll_c, ll_s) <= 1) & (z > dome_l)
    heart_c = np.array([-0.12 * a, 0.28 * b, -0.3 * c]) + _jitter(rng, 0.02) * (a, b, c)
    heart = _ellipsoid(x, y, z, heart_c, (0.32 * a, 0.38 * b, 0.38 * c)) <= 1
    lung_l &= ~heart
    lung_r &= ~heart
    sp_c = (0.0, -0.6 * b)
    vb_r = _ellipse(x0, y0, sp_c, (0.12 * a, 0.17 * b))
    canal = _ellipse(x0, y0, (0.0, sp_c[1] - 0.25 * b), (0.05 * a, 0.08 * b)) <= 1
    arch = (_ellipse(x0, y0, (0.0, sp_c[1] - 0.25 * b), (0.1 * a, 0.14 * b)) <= 1) & ~canal
    aorta = _ellipse(x, y, (-0.1 * a, sp_c[1] + 0.28 * b), (0.06 * a, 0.08 * b)) <= 1
    trachea = (_ellipse(x, y, (0.0, 0.05 * b), (0.06 * a, 0.07 * b)) <= 1) & (z > 0.35 * c)
    lung_r &= _ellipse(x0, y0, sp_c, (0.22 * a, 0.3 * b)) > 1
    lung_l &= _ellipse(x0, y0, sp_c, (0.22 * a, 0.3 * b)) > 1

    # nodules: spheres fully inside one lung, apart from each other
    n = int(rng.integers(1, 4)) if n_nodules is None else int(n_nodules)
    if not 0 <= n <= 8:
        raise ConfigError(f"n_nodules must be between 0 and 8, got {n}")
    nodules: list[dict[str, Any]] = []
    nod = np.zeros(shape, bool)
    min_sp = float(min(spacing))
    tries = 0
    while len(nodules) < n:
        tries += 1
        if tries > 2000:
            raise ConfigError("cannot place the nodules: the field of view is too small")
        right = bool(rng.integers(0, 2))
        cen, semi, dome = (rl_c, rl_s, -0.55 * c) if right else (ll_c, ll_s, -0.62 * c)
        r = max(rng.uniform(0.1, 0.34) * semi[0], 1.6 * min_sp)
        u = rng.uniform(-1, 1, 3)
        if np.sum(u ** 2) > 1:
            continue
        p = cen + u * np.maximum(semi - r - 2 * min_sp, 0.0)
        if _ellipsoid(*p, cen, semi - r - 2 * min_sp) > 1 or p[2] - r < dome + 0.35 * c + 2 * min_sp:
            continue
        if _ellipsoid(*p, heart_c, (0.32 * a + r, 0.38 * b + r, 0.38 * c + r)) <= 1:
            continue
        if _ellipse(p[0], p[1], sp_c, (0.22 * a + r, 0.3 * b + r)) <= 1:
            continue
        if any(np.linalg.norm(p - q["centre_deformed"]) < r + q["radius_mm"] + 3 * min_sp for q in nodules):
            continue
        sphere = _ellipsoid(x, y, z, p, (r, r, r)) <= 1
        side = lung_r if right else lung_l
        if sphere.sum() < 4 or np.any(sphere & ~side):
            continue
        nod |= sphere
        nodules.append({"centre_deformed": p, "radius_mm": float(r), "lung": "right" if right else "left"})

    # pulmonary vessels: smooth random texture inside the lungs (image only)
    vessels = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.2)
    vessels = vessels > np.quantile(vessels, 0.93)

    tissue[aorta] = HU["heart"]
    tissue[heart] = HU["heart"]
    tissue[lung_r | lung_l] = HU["lung"]
    tissue[(lung_r | lung_l) & vessels] = -450.0
    tissue[trachea] = HU["air"]
    tissue[ribs & body] = HU["cortical"] - 150
    tissue[(vb_r <= 1) | arch] = HU["cortical"]
    tissue[vb_r <= 0.65] = HU["cancellous"]
    tissue[canal] = HU["csf"]
    tissue[nod] = HU["nodule"]
    tissue[~body] = HU["air"]

    label = np.zeros(shape, np.uint8)
    if lung_labels:
        label[lung_r | (nod & (x > 0))] = 1
        label[lung_l | (nod & (x <= 0))] = 2
        names = {1: "lung_right", 2: "lung_left"}
    else:
        label[nod] = 1
        names = {1: "lung_nodule"}
    # report each nodule's world centre (RAS mm) from its voxels
    lab_n, _ = ndimage.label(nod)
    out_nodules = []
    for q in nodules:
        sphere = _ellipsoid(x, y, z, q["centre_deformed"], (q["radius_mm"],) * 3) <= 1
        ijk = np.argwhere(sphere).mean(axis=0)
        out_nodules.append({"centre_ras_mm": [round(float(v), 3) for v in (affine @ np.r_[ijk, 1])[:3]],
                            "radius_mm": round(q["radius_mm"], 3), "lung": q["lung"],
                            "n_voxels": int(sphere.sum())})
    image = _finish_ct(tissue, rng, noise_hu)
    return Phantom(image, label, affine, names, "CT",
                   meta={"generator": "lung_ct", "seed": int(seed), "body_part": "CHEST",
                         "nodules": out_nodules})


# --------------------------------------------------------------------------------------------
# lumbar spine CT
# --------------------------------------------------------------------------------------------


