"""Spine CT phantom labelled by vertebral level."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.data.phantoms._core import (
    HU,
    SPINE_LEVELS,
    Orientation,
    Phantom,
    _check_shape,
    _ellipse,
    _finish_ct,
    _world_grid,
)


def spine_ct(shape: Sequence[int] = (64, 64, 96), spacing: Sequence[float] = (1.25, 1.25, 1.5),
             orientation: Orientation = "LPS", seed: int = 0, *, noise_hu: float = 15.0) -> Phantom:
    """CT of a vertebral column (HU) labelled by level: ``{1: vertebra_T12, 2: vertebra_L1, ...,
    6: vertebra_L5}`` (:data:`SPINE_LEVELS`, the same mapping for every seed).

    Per seed: 3 to 6 consecutive levels (``meta["levels"]``, superior first, i.e. the first is
    at the largest RAS z), their start level, a smooth random curvature in the coronal
    (scoliosis) and sagittal (lordosis) planes, and small size changes. Each vertebra has a body
    (cortical shell ~950 HU, cancellous core ~450 HU) and posterior elements (pedicles, lamina,
    spinous process pointing posterior = -y in RAS, transverse processes); intervertebral discs
    (~90 HU) are unlabelled. The column runs along the patient's S-I axis.
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.02)
    a, b, c = half

    n = int(rng.integers(3, len(SPINE_LEVELS) + 1))
    start = int(rng.integers(0, len(SPINE_LEVELS) - n + 1))
    levels = list(SPINE_LEVELS[start:start + n])
    # column centre line: coronal (x) and sagittal (y) curvature as functions of z
    cx_amp, cx_ph = rng.uniform(-0.12, 0.12) * a, rng.uniform(0, np.pi)
    lordosis = rng.uniform(0.05, 0.2) * b
    xc = cx_amp * np.sin(np.pi * z / (2 * c) + cx_ph)
    yc = 0.2 * b + lordosis * (1 - (z / c) ** 2)  # lumbar lordosis: the middle lies anterior
    u, v = x - xc, y - yc

    tissue = np.full(shape, HU["muscle"], np.float32)
    body = _ellipse(x0, y0, (0, 0.1 * b), (1.3 * a, 1.25 * b)) <= 1
    tissue[_ellipse(x, y, (0.55 * a, -0.45 * b), (0.3 * a, 0.35 * b)) <= 1] = HU["fat"]
    tissue[_ellipse(x, y, (-0.55 * a, -0.45 * b), (0.3 * a, 0.35 * b)) <= 1] = HU["fat"]

    level_h = 1.9 * c / n
    top = 0.95 * c
    label = np.zeros(shape, np.uint8)
    bone = np.zeros(shape, bool)
    for idx, level in enumerate(levels):
        g = 1.0 + 0.04 * (SPINE_LEVELS.index(level)) + rng.uniform(-0.04, 0.04)
        z_hi = top - idx * level_h
        disc_h = 0.22 * level_h
        zb_hi, zb_lo = z_hi - disc_h / 2, z_hi - level_h + disc_h / 2
        zm = (zb_hi + zb_lo) / 2
        in_slab = (z <= zb_hi) & (z >= zb_lo)
        vb = _ellipse(u, v, (0, 0), (0.36 * a * g, 0.3 * b * g))
        body_m = in_slab & (vb <= 1)
        # posterior elements: arch around the canal, spinous and transverse processes
        cy = -0.42 * b * g
        canal_r = _ellipse(u, v, (0, cy), (0.14 * a, 0.13 * b))
        arch_m = (_ellipse(u, v, (0, cy), (0.26 * a * g, 0.24 * b * g)) <= 1) & (canal_r > 1)
        pe_slab = (z <= zm + 0.3 * level_h) & (z >= zm - 0.3 * level_h)
        spinous = (np.abs(u) < 0.06 * a) & (v < cy - 0.15 * b) & (v > -0.95 * b) \
            & (z - zm < 0.2 * level_h + 0.25 * (v - cy)) & (z - zm > -0.2 * level_h + 0.25 * (v - cy))
        transverse = (np.abs(v - cy) < 0.07 * b) & (np.abs(u) < 0.62 * a * g) & \
            (np.abs(z - zm) < 0.14 * level_h)
        post = pe_slab & (arch_m | transverse) | spinous
        vert = body_m | post
        value = SPINE_LEVELS.index(level) + 1
        label[vert] = value
        bone |= vert
        tissue[vert] = HU["cortical"]
        tissue[body_m & (vb <= 0.7) & (z <= zb_hi - 1.2 * min(spacing)) & (z >= zb_lo + 1.2 * min(spacing))] \
            = HU["cancellous"]
        disc = (vb <= 0.95) & (z > zb_hi) & (z < zb_hi + disc_h)
        tissue[disc & ~bone] = HU["disc"]
        tissue[(canal_r <= 1) & (z <= z_hi) & (z >= z_hi - level_h)] = HU["csf"]
    # the disc below the last vertebra
    tissue[(_ellipse(u, v, (0, 0), (0.34 * a, 0.28 * b)) <= 1) & (z < zb_lo) & (z > zb_lo - disc_h) & ~bone] \
        = HU["disc"]
    tissue[~body] = HU["air"]
    label[~body] = 0
    image = _finish_ct(tissue, rng, noise_hu)
    return Phantom(image, label, affine, {i + 1: f"vertebra_{lv}" for i, lv in enumerate(SPINE_LEVELS)},
                   "CT", meta={"generator": "spine_ct", "seed": int(seed), "body_part": "LSPINE",
                               "levels": levels})


# --------------------------------------------------------------------------------------------
# brain MR
# --------------------------------------------------------------------------------------------


