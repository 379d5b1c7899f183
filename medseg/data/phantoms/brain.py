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
             strip_margin_mm: float | None = None, clinical: bool = False, clean: bool = False) -> Phantom:
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

    ``clinical=True`` makes the head of a clinical scan rather than of a template (drawn from a
    second random stream, so the default phantom of a seed does not change): a layered scalp
    (skin, subcutaneous fat 1-3 times as bright as white matter, galea), temporalis
    muscles over the temporal bones, a face (orbital fat around the eyes, nasal cavity and
    maxillary sinuses full of air, facial muscle), grey / white contrast from weak (ratio 1.05,
    as on spin-echo or post-contrast T1) to strong, and with probability 0.5 gadolinium
    enhancement: bright dura along the inner table and the falx, superior sagittal sinus,
    cortical vessels in the sulcal CSF, choroid plexus in the ventricles and nasal mucosa.
    None of these structures is brain; the label is unchanged by them.

    ``clean=True`` returns the tissue signals as painted, before blur, bias field and noise (float,
    one constant per tissue except the cerebellar folia and the brainstem mixtures): the anatomy
    that :mod:`medseg.data.brain_synth` turns into a tissue map. The label is the same.
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
    crng = np.random.default_rng([int(seed), 7]) if clinical else None
    if crng is not None:  # weaker grey / white contrast allowed; fat and enhancement 1-3x WM (clinical T1)
        val["wm"] = val["gm"] * float(crng.uniform(1.05, 1.6))
        val["deep_gm"] = val["gm"] + float(crng.uniform(0.2, 0.6)) * (val["wm"] - val["gm"])
        val["fat"] = val["wm"] * float(crng.uniform(1.0, 3.0))
        val["enhance"] = val["wm"] * float(crng.uniform(1.2, 3.0))

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
    if crng is not None:
        _clinical_head(img, crng, val, sp, (x, y, z), hc, hs, bc, bs, d_out=d_out, csf_mm=csf_mm,
                       skull_mm=skull_mm, scalp_mm=scalp_mm, eyes=eyes, brain=brain | vent, sulci=sulci,
                       vent=vent, fissure=fissure)
    label = label_mask.astype(np.uint8)
    label[eyes] = 0

    meta = {"generator": "brain_mr", "seed": int(seed), "body_part": "HEAD", "csf_mm": csf_mm,
            "cortex_mm": cortex_mm, "strip_margin_mm": strip_margin_mm, "clinical": bool(clinical), "t1_values": val}
    stripped = _edt_mm(label > 0, sp) > strip_margin_mm if strip_margin_mm is not None else None
    if clean:
        if stripped is not None:
            img[stripped] = 0.0
        return Phantom(img, label, affine, {1: "brain"}, "MR", meta={**meta, "clean": True})
    img = ndimage.gaussian_filter(img, float(rng.uniform(0.5, 0.9)), mode="nearest")
    u = (x0 / half[0], y0 / half[1], z0 / half[2])
    bias = 1.0 + sum(float(rng.uniform(-0.15, 0.15)) * c for c in u) \
        + sum(float(rng.uniform(-0.1, 0.1)) * c * c for c in u)
    img *= np.asarray(bias, dtype=np.float32)
    n1 = rng.normal(0, noise, shape).astype(np.float32)
    n2 = rng.normal(0, noise, shape).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
    image = np.clip(np.round(img), 0, 4095).astype(np.float32)
    if stripped is not None:
        image[stripped] = 0.0
    return Phantom(image, label, affine, {1: "brain"}, "MR", meta=meta)


def _clinical_head(img, rng, val, sp, xyz, hc, hs, bc, bs, *, d_out, csf_mm, skull_mm, scalp_mm,
                   eyes, brain, sulci, vent, fissure) -> None:
    """Paint the structures of ``brain_mr(clinical=True)`` into ``img`` (in place); none is brain."""
    x, y, z = xyz
    bone_out = csf_mm + skull_mm  # outer table, mm from the brain
    skin_mm, galea_mm = float(rng.uniform(1.0, 2.5)), float(rng.uniform(1.0, 2.5))
    muscle = float(rng.uniform(0.25, 0.45)) * val["wm"]
    # temporalis: over the temporal squama, between bone and scalp fat, 6-14 mm thick
    tm_mm = float(rng.uniform(6.0, 14.0))
    fan = np.zeros(x.shape, np.float32)  # a fan-shaped muscle, thickest at its centre
    for s in (1, -1):
        e = _ellipsoid(x, y, z, bc + np.array([s * 0.9 * bs[0], 0.1 * bs[1], -0.3 * bs[2]]),
                       bs * np.array([0.5, 0.55, 0.5]))
        fan = np.maximum(fan, np.clip(1.0 - e, 0.0, 1.0))
    scalp_in = bone_out + np.maximum(galea_mm, tm_mm * fan)
    outer = scalp_in + scalp_mm
    head = img > 0
    grown = (d_out > bone_out) & (d_out <= outer) & ~head  # the muscle pushes the scalp outwards
    img[grown] = val["fat"]
    img[(d_out > bone_out) & (d_out <= scalp_in)] = muscle  # temporalis / galea
    # face: muscle block below and in front of the brain, air sinuses, bright orbital fat
    face = (_ellipsoid(x, y, z, hc + np.array([0.0, 0.62 * hs[1], -0.62 * hs[2]]),
                       hs * np.array([0.55, 0.42, 0.38])) <= 1) & (d_out > bone_out)
    img[face] = muscle
    orbit_fat = (_edt_mm(eyes, sp) <= float(rng.uniform(3.0, 6.0))) & ~eyes & (d_out > csf_mm + 1.0)
    img[orbit_fat] = val["fat"]
    air = _ellipsoid(x, y, z, hc + np.array([0.0, 0.78 * hs[1], -0.5 * hs[2]]), hs * np.array([0.07, 0.2, 0.22])) <= 1
    for s in (1, -1):
        air |= _ellipsoid(x, y, z, hc + np.array([s * 0.22 * hs[0], 0.62 * hs[1], -0.66 * hs[2]]),
                          hs * np.array([0.11, 0.13, 0.12]) * (1 + _jitter(rng, 0.15))) <= 1
    air &= d_out > bone_out
    if rng.uniform() < 0.5:  # gadolinium: enhancing structures, all outside the brain label
        enh = val["enhance"]
        mucosa = (_edt_mm(air, sp) <= 2.0) & ~air & face
        img[mucosa] = enh
        dura = (d_out > csf_mm - 1.0) & (d_out <= csf_mm)
        img[dura] = enh
        img[fissure & ~brain & (d_out <= csf_mm)] = enh  # falx
        sss = (_ellipse(x, z, (bc[0], bc[2] + bs[2] + csf_mm), (4.0, 4.0)) <= 1) & (d_out <= csf_mm + 1.0) & ~brain
        img[sss] = enh
        vessels = _plane_waves(rng, x, y, z, 12, (10.0, 25.0))
        img[(sulci | ((d_out > 0) & (d_out < csf_mm))) & (np.abs(vessels) < 0.08)] = enh
        plexus = vent & (_plane_waves(rng, x, y, z, 6, (6.0, 12.0)) > 1.0)
        img[plexus] = enh
    img[air] = 0.0
    inside = ndimage.distance_transform_edt(img > 0, sampling=sp)  # skin: the head's outer rim
    img[(inside > 0) & (inside <= skin_mm)] = muscle * float(rng.uniform(1.0, 1.4))


# --------------------------------------------------------------------------------------------
# chest radiograph
# --------------------------------------------------------------------------------------------


