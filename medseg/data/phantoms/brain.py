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
from medseg.errors import ConfigError

#: T1 signal ranges (arbitrary units, before bias field and noise) drawn per seed; any T1 orders
#: them CSF < grey matter < white matter, with fat bright and cortical bone dark.
T1_RANGES: dict[str, tuple[float, float]] = {
    "csf": (80.0, 220.0), "gm": (380.0, 500.0), "wm": (620.0, 780.0), "deep_gm": (480.0, 580.0),
    "fat": (550.0, 750.0), "muscle": (250.0, 350.0), "bone": (40.0, 80.0), "diploe": (250.0, 350.0),
    "eye": (90.0, 150.0),
}


def _edt_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) from each voxel outside ``mask`` to the mask (0 inside)."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing)


def _plane_waves(rng: np.random.Generator, x, y, z, n: int, wavelength_mm: tuple[float, float]) -> np.ndarray:
    """Sum of ``n`` random plane waves in WORLD coordinates (mm), normalised to unit RMS: the same
    field whatever the voxel orientation."""
    f = np.zeros(x.shape, np.float32)
    for _ in range(n):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        k = 2 * np.pi / rng.uniform(*wavelength_mm)
        f += np.cos(k * (d[0] * x + d[1] * y + d[2] * z) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return f / np.sqrt(n / 2)


def brain_mr(shape: Sequence[int] = (80, 96, 80), spacing: Sequence[float] = (2.0, 2.0, 2.0),
             orientation: Orientation = "RAS", seed: int = 0, *, noise: float = 15.0,
             strip_margin_mm: float | None = None) -> Phantom:
    """T1-weighted head MR phantom (integer arbitrary units, 0..~1000) with labels ``{1: brain}``.

    Anatomy (world RAS mm, so the same for every ``orientation``): cerebrum with gyri, sulci (CSF
    clefts lined by a 2.5-4 mm cortical grey-matter ribbon that follows every surface), white
    matter, deep grey nuclei, lateral ventricles, interhemispheric fissure, temporal lobes
    reaching down into the middle cranial fossa, a cerebellum with folia (mixed grey / white
    texture) under a CSF tentorium, and a brainstem that continues as the spinal cord through
    the foramen magnum to the bottom of the field of view. Around the brain: an extra-axial CSF
    layer (1.5-5 mm, drawn per seed), skull (cortical tables dark, diploe brighter) following the
    brain's shape, scalp fat, neck muscle below the skull, and the eyes anterior. Tissue signals
    are drawn per seed from :data:`T1_RANGES`; a smooth multiplicative bias field (linear +
    quadratic, up to about +-25 %), partial-volume blur (0.5-0.9 voxel) and Rician noise
    (``noise``) follow.

    Label 1 = brain: grey and white matter, deep grey, ventricles, cerebellum, brainstem and cord
    inside the field of view, with enclosed holes filled (the convention of a GM + WM probability
    > 0.5 mask with holes filled); sulcal and extra-axial CSF open to the surface are NOT brain.

    ``strip_margin_mm``: when given, every voxel farther than this (mm) from the brain label is
    set to exactly 0, as in skull-stripped / template data (a margin near the CSF thickness keeps
    the whole intracranial CSF, as the MNI152 template does).
    """
    shape = _check_shape(shape, 3)
    sp = np.asarray(spacing, dtype=np.float64)
    if strip_margin_mm is not None and not strip_margin_mm >= 0:
        raise ConfigError(f"strip_margin_mm must be >= 0 (mm), got {strip_margin_mm}")
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.03)
    hs = np.array([0.88 * half[0], 0.9 * half[1], 0.85 * half[2]])
    hc = np.array([0.0, 0.0, -0.05 * half[2]])
    val = {k: float(rng.uniform(*r)) for k, r in T1_RANGES.items()}
    csf_mm = float(rng.uniform(1.5, 5.0))
    skull_mm = float(rng.uniform(5.0, 8.0))
    scalp_mm = float(rng.uniform(4.0, 8.0))
    cortex_mm = float(rng.uniform(2.5, 4.0))

    bc = hc + np.array([0.0, -0.02 * hs[1], 0.12 * hs[2]])
    bs = hs * np.array([0.78, 0.8, 0.66]) * (1 + _jitter(rng, 0.03))
    rr = np.sqrt((x - bc[0]) ** 2 + (y - bc[1]) ** 2 + (z - bc[2]) ** 2) + 1e-3
    theta, phi = np.arccos(np.clip((z - bc[2]) / rr, -1, 1)), np.arctan2(y - bc[1], x - bc[0])
    f1, f2 = rng.integers(9, 14), rng.integers(7, 11)
    gyri = 0.05 * np.sin(f1 * phi + rng.uniform(0, 6)) * np.sin(f2 * theta + rng.uniform(0, 6))
    cerebrum = _ellipsoid(x, y, z, bc, bs) <= 1 + gyri
    # temporal lobes: lateral, anterior-inferior, down into the middle cranial fossa
    for s in (1, -1):
        tc = bc + np.array([s * 0.6 * bs[0], 0.15 * bs[1], -0.55 * bs[2]])
        cerebrum |= _ellipsoid(x, y, z, tc, bs * np.array([0.33, 0.5, 0.4]) * (1 + _jitter(rng, 0.08))) <= 1
    cc = bc + np.array([0.0, -0.58 * bs[1], -0.75 * bs[2]])
    cs = bs * np.array([0.62, 0.36, 0.34]) * (1 + _jitter(rng, 0.06))
    cereb = _ellipsoid(x, y, z, cc, cs) <= 1
    # tentorium / transverse fissure: a CSF layer between cerebrum and cerebellum
    tent_mm = float(rng.uniform(1.5, 3.0))
    cerebrum &= _edt_mm(cereb, sp) > tent_mm
    sc = (bc[0], bc[1] - 0.2 * bs[1])
    stem_r = np.where(z > cc[2], 0.13, 0.13 - 0.05 * np.clip((cc[2] - z) / (0.6 * bs[2]), 0, 1))
    stem = (_ellipse(x, y, sc, (stem_r * bs[0], stem_r * bs[1] * 1.1)) <= 1) & (z < bc[2] - 0.2 * bs[2])
    fissure = (np.abs(x - bc[0]) < max(1.2, 0.6 * float(sp.min()))) & (z > bc[2] - 0.1 * bs[2])
    cerebrum &= ~fissure
    eyes = np.zeros(shape, bool)
    for s in (1, -1):
        eyes |= _ellipsoid(x, y, z, hc + np.array([s * 0.33 * hs[0], 0.8 * hs[1], -0.3 * hs[2]]),
                           (0.12 * hs[0],) * 3) <= 1
    orbit = _edt_mm(eyes, sp) <= 4.0
    cerebrum &= ~orbit
    cereb &= ~orbit

    # sulci: CSF clefts where a world-space random field is near zero, within reach of the surface
    outer = cerebrum | cereb
    depth = ndimage.distance_transform_edt(outer, sampling=sp)
    field = _plane_waves(rng, x, y, z, 24, (18.0, 40.0))
    sulc_depth = float(rng.uniform(8.0, 14.0))
    sulci = cerebrum & (np.abs(field) < rng.uniform(0.10, 0.16)) & (depth < sulc_depth)
    cerebrum &= ~sulci
    brain = cerebrum | cereb | stem
    vent = np.zeros(shape, bool)
    for s in (1, -1):
        vent |= _ellipsoid(x, y, z, bc + np.array([s * 0.13 * bs[0], 0.02 * bs[1], 0.08 * bs[2]]),
                           bs * np.array([0.08, 0.38, 0.14]) * (1 + _jitter(rng, 0.15))) <= 1
    deep = np.zeros(shape, bool)
    for s in (1, -1):
        deep |= _ellipsoid(x, y, z, bc + np.array([s * 0.28 * bs[0], 0.0, -0.08 * bs[2]]),
                           bs * np.array([0.12, 0.2, 0.12])) <= 1
    label_mask = ndimage.binary_fill_holes(brain | vent)

    # layers outside the brain follow its shape (distances in mm)
    d_out = _edt_mm(brain | vent, sp)
    intracranial = d_out <= csf_mm
    skull = (d_out <= csf_mm + skull_mm) & ~intracranial
    diploe = (d_out > csf_mm + 0.3 * skull_mm) & (d_out < csf_mm + 0.7 * skull_mm)
    head = (d_out <= csf_mm + skull_mm + scalp_mm) | (_ellipsoid(x, y, z, hc, hs) <= 1)
    neck = (_ellipse(x, y, (hc[0], hc[1] - 0.1 * hs[1]), (0.55 * hs[0], 0.6 * hs[1])) <= 1) & (z < cc[2])
    head |= neck
    cord_canal = (d_out <= 2.5) & (z < cc[2] - 0.5 * cs[2])  # CSF around the cord
    in_brain = ndimage.distance_transform_edt(brain, sampling=sp)

    img = np.zeros(shape, np.float32)
    img[head] = val["fat"]
    img[neck & ~(d_out <= csf_mm + skull_mm + scalp_mm)] = val["muscle"]
    img[skull] = val["bone"]
    img[skull & diploe & (z > cc[2])] = val["diploe"]
    img[intracranial | cord_canal] = val["csf"]
    img[brain] = val["gm"]
    img[cerebrum & (in_brain > cortex_mm)] = val["wm"]
    img[deep] = val["deep_gm"]
    # cerebellum: folia give a fine grey / white mixture, with a white core (arbor vitae)
    folia = 0.5 + 0.5 * np.sin(2 * np.pi * rr / rng.uniform(3.0, 5.0))
    img[cereb] = (val["gm"] + (val["wm"] - val["gm"]) * 0.35 * folia)[cereb]
    img[cereb & (in_brain > 2.5 * cortex_mm)] = val["wm"]
    img[stem] = 0.3 * val["gm"] + 0.7 * val["wm"]
    img[vent] = val["csf"]
    img[eyes] = val["eye"]
    label = label_mask.astype(np.uint8)
    label[eyes] = 0

    img = ndimage.gaussian_filter(img, float(rng.uniform(0.5, 0.9)), mode="nearest")
    u = (x0 / half[0], y0 / half[1], z0 / half[2])
    bias = 1.0 + sum(float(rng.uniform(-0.15, 0.15)) * c for c in u) \
        + sum(float(rng.uniform(-0.1, 0.1)) * c * c for c in u)
    img *= np.asarray(bias, dtype=np.float32)
    n1 = rng.normal(0, noise, shape).astype(np.float32)
    n2 = rng.normal(0, noise, shape).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
    image = np.clip(np.round(img), 0, 4095).astype(np.float32)
    if strip_margin_mm is not None:
        image[_edt_mm(label > 0, sp) > strip_margin_mm] = 0.0
    return Phantom(image, label, affine, {1: "brain"}, "MR",
                   meta={"generator": "brain_mr", "seed": int(seed), "body_part": "HEAD",
                         "csf_mm": csf_mm, "cortex_mm": cortex_mm, "strip_margin_mm": strip_margin_mm,
                         "t1_values": val})


# --------------------------------------------------------------------------------------------
# chest radiograph
# --------------------------------------------------------------------------------------------


