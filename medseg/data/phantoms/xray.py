"""PA chest radiograph phantom with lung fields."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.data.phantoms._core import (
    Phantom,
    _jitter,
)
from medseg.errors import ConfigError


def xray_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """4x4 affine of a PA chest radiograph as displayed: i = patient's right -> left (RAS -x),
    j = superior -> inferior (RAS -z), k = unit normal towards posterior (RAS -y); centred."""
    si, sj = (float(v) for v in spacing)
    aff = np.zeros((4, 4))
    aff[:3, 0] = (-si, 0.0, 0.0)
    aff[:3, 1] = (0.0, 0.0, -sj)
    aff[:3, 2] = (0.0, -1.0, 0.0)
    aff[3, 3] = 1.0
    aff[:3, 3] = -aff[:3, :2] @ ((np.asarray(shape[:2], float) - 1) / 2.0)
    return aff


def _chord(x, z, centre, semi) -> np.ndarray:
    """Length (mm) along y of the chord through an axis-aligned ellipsoid at each (x, z)."""
    q = 1 - ((x - centre[0]) / semi[0]) ** 2 - ((z - centre[2]) / semi[2]) ** 2
    return 2 * semi[1] * np.sqrt(np.clip(q, 0, None))


def chest_xray(shape: Sequence[int] = (256, 256), spacing: Sequence[float] = (1.4, 1.4), seed: int = 0,
               *, noise: float = 20.0) -> Phantom:
    """PA chest radiograph (DX) with lung-field labels ``{1: lung_right, 2: lung_left}``.

    Display convention (that of a PA film on a light box, and of DICOM PatientOrientation
    ``L\\F``): the image is indexed ``(i, j)``; i (the pixel column, left to right on screen)
    runs from the patient's RIGHT to the patient's LEFT, j (the pixel row, top to bottom) from
    superior to inferior. So the right lung (label 1) has the SMALLER i. The affine
    (:func:`xray_affine`) maps i to RAS -x and j to RAS -z.

    The image is a Beer-Lambert projection along the antero-posterior axis of an analytic
    chest (torso, lungs above domed hemidiaphragms, heart bulging to the left, spine, ribs,
    clavicles), shown as log-attenuation ("bright = dense", MONOCHROME2), integers in
    [0, 4095]. Lung labels are the lung fields not covered by the heart or the diaphragm (the
    convention of the Montgomery / Shenzhen masks). ``spacing`` is mm along i, j.
    """
    s = tuple(int(v) for v in shape)
    if len(s) != 2 or min(s) < 16:
        raise ConfigError(f"shape must be two sizes of at least 16 pixels, got {tuple(shape)}")
    if len(spacing) != 2 or min(spacing) <= 0:
        raise ConfigError(f"spacing must be two positive numbers (mm), got {tuple(spacing)}")
    rng = np.random.default_rng(seed)
    affine = xray_affine(s, spacing)
    ii, jj = np.indices(s, dtype=np.float64)
    x0 = affine[0, 0] * ii + affine[0, 3]
    z0 = affine[2, 1] * jj + affine[2, 3]
    hx, hz = s[0] * spacing[0] / 2, s[1] * spacing[1] / 2
    # smooth in-plane warp
    w = [(rng.uniform(0.5, 1.5) * np.pi / (2 * hz), rng.uniform(0, 6), rng.uniform(-0.02, 0.02) * hx)
         for _ in range(2)]
    x = x0 + sum(am * np.sin(f * z0 + ph) for f, ph, am in w)
    z = z0 + sum(am * np.sin(f * x0 + ph) for f, ph, am in w)

    mu_soft, mu_lung, mu_bone = 0.02, 0.004, 0.05  # per mm
    ta = 0.78 * hx * (1 + rng.uniform(-0.04, 0.04))
    tb = 0.42 * ta
    torso = (z < 0.72 * hz) * 2 * tb * np.sqrt(np.clip(1 - (x / ta) ** 2, 0, None))
    shoulders = (z >= 0.72 * hz) * 2 * tb * np.sqrt(np.clip(1 - (x / ta) ** 2 - ((z - 0.72 * hz) / (0.2 * hz)) ** 2, 0, None))
    neck = (z >= 0.72 * hz) * 2 * 0.5 * tb * np.sqrt(np.clip(1 - (x / (0.22 * hx)) ** 2, 0, None))
    p = mu_soft * (torso + np.maximum(shoulders, neck))

    lung_semi = np.array([0.3 * hx, 0.75 * tb, 0.48 * hz])
    rl_c = np.array([0.32 * hx, 0.0, 0.12 * hz]) + _jitter(rng, 0.015) * (hx, 0, hz)
    ll_c = np.array([-0.32 * hx, 0.0, 0.1 * hz]) + _jitter(rng, 0.015) * (hx, 0, hz)
    rl_s = lung_semi * (1 + _jitter(rng, 0.05) * (1, 0, 1))
    ll_s = lung_semi * np.array([0.93, 1, 0.98]) * (1 + _jitter(rng, 0.05) * (1, 0, 1))
    dome_r = rl_c[2] - 0.72 * rl_s[2] + 0.35 * rl_s[2] * ((x - rl_c[0]) / rl_s[0]) ** 2
    dome_l = ll_c[2] - 0.78 * ll_s[2] + 0.35 * ll_s[2] * ((x - ll_c[0]) / ll_s[0]) ** 2
    # lungs do not cross the midline (mediastinum)
    chord_r = _chord(x, z, rl_c, rl_s) * (z > dome_r) * (x > 0.06 * hx)
    chord_l = _chord(x, z, ll_c, ll_s) * (z > dome_l) * (x < -0.06 * hx)
    heart_c = np.array([-0.1 * hx, 0.0, -0.22 * hz]) + _jitter(rng, 0.015) * (hx, 0, hz)
    heart_s = np.array([0.27 * hx, 0.5 * tb, 0.2 * hz]) * (1 + _jitter(rng, 0.05))
    heart = _chord(x, z, heart_c, heart_s)
    p += (mu_lung - mu_soft) * (chord_r + chord_l) + 0.006 * heart
    # spine (a column behind the mediastinum) and ribs / clavicles (thin bony bands)
    p += (mu_bone - mu_soft) * 2 * 0.05 * hx * np.sqrt(np.clip(1 - (x / (0.06 * hx)) ** 2, 0, None))
    for side in (1, -1):
        for r in range(10):
            zr = 0.62 * hz - r * 0.12 * hz + rng.uniform(-0.01, 0.01) * hz
            cent = zr - 0.22 * hz * (np.abs(x) / (0.7 * hx)) ** 2
            band = (np.abs(z - cent) < 0.022 * hz) & (side * x > 0.05 * hx) & (np.abs(x) < 0.72 * hx)
            p += 0.35 * band
        clav = (np.abs(z - (0.6 * hz + 0.12 * hz * np.abs(x) / (0.5 * hx))) < 0.025 * hz) & \
            (side * x > 0.06 * hx) & (np.abs(x) < 0.5 * hx)
        p += 0.5 * clav
    p = ndimage.gaussian_filter(p, 0.8)
    img = 4095.0 * (1 - np.exp(-p / 3.0))
    img += rng.normal(0, noise, s)
    image = np.clip(np.round(img), 0, 4095).astype(np.float32)

    label = np.zeros(s, np.uint8)
    label[(chord_r > 0) & (heart == 0)] = 1
    label[(chord_l > 0) & (heart == 0)] = 2
    return Phantom(image, label, affine, {1: "lung_right", 2: "lung_left"}, "DX",
                   meta={"generator": "chest_xray", "seed": int(seed), "body_part": "CHEST",
                         "view_position": "PA", "display": "i: patient right->left, j: superior->inferior"})


# --------------------------------------------------------------------------------------------
# fluorescence nuclei
# --------------------------------------------------------------------------------------------


