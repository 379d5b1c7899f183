"""T1 MR head phantom with a brain label."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.data.phantoms._core import (
    Orientation,
    Phantom,
    _check_shape,
    _ellipse,
    _ellipsoid,
    _jitter,
    _world_grid,
)


def brain_mr(shape: Sequence[int] = (80, 96, 80), spacing: Sequence[float] = (2.0, 2.0, 2.0),
             orientation: Orientation = "RAS", seed: int = 0, *, noise: float = 15.0) -> Phantom:
    """T1-weighted head MR phantom (integer arbitrary units, 0..~1000) with labels ``{1: brain}``.

    Scalp (bright fat), skull (dark cortical bone, brighter diploe), extra-axial CSF (dark),
    cortical grey matter with gyri (~450), white matter (~700), lateral ventricles (CSF),
    cerebellum, interhemispheric fissure, and the eyes anterior (RAS +y). The brain label is
    GM + WM + ventricles + cerebellum (no extra-axial CSF). A smooth multiplicative bias field
    and Rician noise (``noise``) vary with ``seed``.
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.03)
    hs = np.array([0.88 * half[0], 0.9 * half[1], 0.85 * half[2]])
    hc = np.array([0.0, 0.0, -0.05 * half[2]])

    head = _ellipsoid(x, y, z, hc, hs)
    skull_out = _ellipsoid(x, y, z, hc, hs * 0.93)
    skull_in = _ellipsoid(x, y, z, hc, hs * 0.85)
    bc = hc + np.array([0.0, -0.02 * hs[1], 0.06 * hs[2]])
    bs = hs * np.array([0.8, 0.8, 0.74]) * (1 + _jitter(rng, 0.03))
    brain_r = _ellipsoid(x, y, z, bc, bs)
    # gyri: modulate the cortical surface with sines of the direction
    rr = np.sqrt((x - bc[0]) ** 2 + (y - bc[1]) ** 2 + (z - bc[2]) ** 2) + 1e-3
    theta, phi = np.arccos(np.clip((z - bc[2]) / rr, -1, 1)), np.arctan2(y - bc[1], x - bc[0])
    f1, f2 = rng.integers(9, 14), rng.integers(7, 11)
    gyri = 0.06 * np.sin(f1 * phi + rng.uniform(0, 6)) * np.sin(f2 * theta + rng.uniform(0, 6))
    cerebrum = brain_r <= 1 + gyri - 0.06
    cereb = _ellipsoid(x, y, z, bc + np.array([0, -0.5 * bs[1], -0.62 * bs[2]]),
                       bs * np.array([0.55, 0.35, 0.3])) <= 1
    stem = (_ellipse(x, y, (bc[0], bc[1] - 0.15 * bs[1]), (0.12 * bs[0], 0.14 * bs[1])) <= 1) & \
        (z < bc[2] - 0.2 * bs[2]) & (z > bc[2] - 1.1 * bs[2])
    fissure = (np.abs(x - bc[0]) < max(1.2, 0.6 * float(min(spacing)))) & (z > bc[2] + 0.3 * bs[2])
    cerebrum &= ~fissure
    wm = (brain_r <= (0.72 + gyri * 0.5) ** 2) & cerebrum
    vent = np.zeros(shape, bool)
    for s in (1, -1):
        vent |= _ellipsoid(x, y, z, bc + np.array([s * 0.13 * bs[0], 0.02 * bs[1], 0.1 * bs[2]]),
                           bs * np.array([0.08, 0.35, 0.12])) <= 1
    brain = cerebrum | cereb | stem
    eyes = np.zeros(shape, bool)
    for s in (1, -1):
        eyes |= _ellipsoid(x, y, z, hc + np.array([s * 0.33 * hs[0], 0.78 * hs[1], -0.3 * hs[2]]),
                           (0.12 * hs[0],) * 3) <= 1

    img = np.zeros(shape, np.float32)
    img[head <= 1] = 600.0  # scalp / subcutaneous fat
    img[skull_out <= 1] = 60.0  # cortical bone
    img[(skull_out <= 0.97) & (skull_in > 1.04)] = 300.0  # diploe
    img[skull_in <= 1] = 150.0  # CSF
    img[brain] = 450.0
    img[wm | (cereb & (_ellipsoid(x, y, z, bc + np.array([0, -0.5 * bs[1], -0.62 * bs[2]]),
                                  bs * np.array([0.3, 0.18, 0.15])) <= 1))] = 700.0
    img[stem] = 650.0
    img[vent] = 150.0
    img[eyes] = 120.0
    label = np.zeros(shape, np.uint8)
    label[brain | vent] = 1
    label[eyes] = 0
    img = ndimage.gaussian_filter(img, 0.6, mode="nearest")
    gx, gy, gz = (rng.uniform(-0.15, 0.15) for _ in range(3))
    img *= (1 + gx * x0 / half[0] + gy * y0 / half[1] + gz * z0 / half[2]).astype(np.float32)
    n1 = rng.normal(0, noise, shape).astype(np.float32)
    n2 = rng.normal(0, noise, shape).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
    image = np.clip(np.round(img), 0, 4095).astype(np.float32)
    return Phantom(image, label, affine, {1: "brain"}, "MR",
                   meta={"generator": "brain_mr", "seed": int(seed), "body_part": "HEAD"})


# --------------------------------------------------------------------------------------------
# chest radiograph
# --------------------------------------------------------------------------------------------


