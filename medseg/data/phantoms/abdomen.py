"""Abdominal CT phantom: liver, spleen, kidneys (RAS world coordinates), in two contrast phases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

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

#: Soft-tissue values (HU) of :func:`abdomen_ct` per contrast phase. Air, bone and CSF come from
#: ``medseg.data.phantoms.HU`` (they do not enhance). Typical adult ranges behind the choices:
#:
#: - ``"portal_venous"`` (~70 s after an iodinated bolus, the phase of most public abdominal
#:   datasets: MSD Task09 Spleen, BTCV, most of TotalSegmentator): liver 100-120 HU, spleen
#:   110-130 HU (homogeneous by then, slightly above the liver), kidney cortex 160-200 HU and
#:   medulla 120-160 HU (entering the nephrographic phase), aorta 150-200 HU, infrarenal IVC
#:   120-160 HU, skeletal muscle 50-65 HU, fat -120 to -80 HU.
#: - ``"native"`` (no contrast): liver 55-65 HU, spleen 40-50 HU (a few HU below the liver),
#:   kidney 30-40 HU (no cortico-medullary difference), blood in the aorta / IVC 35-45 HU,
#:   muscle 40-60 HU, fat -120 to -80 HU. Spleen and muscle are then nearly equal: their
#:   boundary is barely visible, as on real native CT.
#:
#: ``visceral_fat`` is intra-abdominal fat streaks, ``bowel`` the loop contents (fluid / chyme).
PHASE_HU: Mapping[str, Mapping[str, float]] = {
    "portal_venous": {
        "fat": -100.0, "visceral_fat": -80.0, "muscle": 55.0, "bowel": 20.0,
        "liver": 105.0, "spleen": 120.0, "kidney_cortex": 180.0, "kidney_medulla": 140.0,
        "aorta": 170.0, "ivc": 140.0,
    },
    "native": {
        "fat": -100.0, "visceral_fat": -80.0, "muscle": 50.0, "bowel": 20.0,
        "liver": 60.0, "spleen": 48.0, "kidney_cortex": 32.0, "kidney_medulla": 30.0,
        "aorta": 40.0, "ivc": 40.0,
    },
}


def abdomen_ct(shape: Sequence[int] = (96, 96, 64), spacing: Sequence[float] = (1.5, 1.5, 2.5),
               orientation: Orientation = "LPS", seed: int = 0, *, noise_hu: float = 12.0,
               phase: str = "portal_venous") -> Phantom:
    """Abdominal CT phantom in HU with labels {1: liver, 2: spleen, 3: kidney_right, 4: kidney_left}.

    Body (subcutaneous fat, muscle), liver on the patient's RIGHT (RAS x > 0), spleen on the
    LEFT (RAS x < 0), kidneys (cortex and medulla) either side of the spine (cortical bone
    ~950 HU, cancellous ~450 HU), aorta and IVC, bowel loops with gas pockets; outside is air
    (-1000 HU). Soft-tissue HU follow the contrast ``phase``: ``"portal_venous"`` (default; liver
    105, spleen 120, kidney cortex 180 / medulla 140, aorta 170, IVC 140, muscle 55, fat -100) or
    ``"native"`` (liver 60, spleen 48, kidney 32 / 30, aorta and IVC 40, muscle 50); see
    :data:`PHASE_HU` for the literature ranges. Organ positions and sizes jitter and the whole
    anatomy is smoothly deformed per ``seed``; Gaussian noise of ``noise_hu`` HU. The label map
    (and the random stream) depend on ``seed`` and the grid only, never on ``phase``.
    ``spacing`` is mm along i, j, k; see the module docstring for ``orientation``.

    Raises:
        ConfigError: unknown ``phase``, or a bad shape / spacing / orientation.
    """
    if phase not in PHASE_HU:
        raise ConfigError(f"abdomen_ct phase {phase!r} is unknown; use one of {sorted(PHASE_HU)}")
    t = PHASE_HU[phase]
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.04)
    # normalised body units: a = half width (R-L), b = half depth (A-P), c = half height (S-I)
    a, b, c = 0.9 * half[0], 0.68 * half[1], half[2]
    j = lambda s: _jitter(rng, s)  # noqa: E731

    body = _ellipse(x, y, (0, 0), (a, b)) <= 1
    inner = _ellipse(x, y, (0, 0), (0.9 * a, 0.86 * b)) <= 1
    tissue = np.full(shape, HU["air"], np.float32)
    tissue[body] = t["fat"]
    tissue[inner] = t["muscle"]
    # visceral fat: a smooth random field thresholded inside the abdominal cavity
    cavity = _ellipse(x, y, (0, 0.05 * b), (0.78 * a, 0.7 * b)) <= 1
    tissue[cavity & (np.sin(x / a * 7 + rng.uniform(0, 6)) * np.sin(y / b * 6 + rng.uniform(0, 6)) > 0.55)] \
        = t["visceral_fat"]

    liver_c = np.array([0.38 * a, 0.08 * b, 0.3 * c]) + j(0.04) * (a, b, c)
    liver_s = np.array([0.4 * a, 0.55 * b, 0.5 * c]) * (1 + j(0.08))
    liver = _ellipsoid(x, y, z, liver_c, liver_s) <= 1
    # a flat medial-posterior cut makes it less of an egg
    liver &= (x - liver_c[0]) - 0.6 * (y - liver_c[1]) > -0.9 * liver_s[0]

    spleen_c = np.array([-0.52 * a, -0.28 * b, 0.38 * c]) + j(0.03) * (a, b, c)
    spleen_s = np.array([0.15 * a, 0.26 * b, 0.3 * c]) * (1 + j(0.1))
    spleen = _ellipsoid(x, y, z, spleen_c, spleen_s) <= 1

    kid_s = np.array([0.13 * a, 0.2 * b, 0.32 * c])
    kr_c = np.array([0.34 * a, -0.42 * b, -0.12 * c]) + j(0.03) * (a, b, c)  # right kidney lower
    kl_c = np.array([-0.34 * a, -0.42 * b, -0.02 * c]) + j(0.03) * (a, b, c)
    kr_s, kl_s = kid_s * (1 + j(0.08)), kid_s * (1 + j(0.08))
    kr_r = _ellipsoid(x, y, z, kr_c, kr_s)
    kl_r = _ellipsoid(x, y, z, kl_c, kl_s)
    kid_r, kid_l = kr_r <= 1, kl_r <= 1

    # spine: vertebral body, canal, posterior elements (not deformed with the soft tissue)
    sp_c = (0.0, -0.55 * b)
    vb_r = _ellipse(x0, y0, sp_c, (0.17 * a, 0.2 * b))
    canal = _ellipse(x0, y0, (0.0, sp_c[1] - 0.3 * b), (0.07 * a, 0.1 * b)) <= 1
    arch = (_ellipse(x0, y0, (0.0, sp_c[1] - 0.3 * b), (0.13 * a, 0.17 * b)) <= 1) & ~canal
    process = (np.abs(x0) < 0.035 * a) & (y0 < sp_c[1] - 0.4 * b) & (y0 > -0.95 * b)

    aorta = _ellipse(x, y, (-0.09 * a, sp_c[1] + 0.3 * b), (0.065 * a, 0.09 * b)) <= 1
    ivc = _ellipse(x, y, (0.13 * a, sp_c[1] + 0.32 * b), (0.07 * a, 0.08 * b)) <= 1

    # bowel: a few loops (tubes) and gas pockets in the anterior abdomen
    for _ in range(rng.integers(3, 6)):
        bc = np.array([rng.uniform(-0.4, 0.4) * a, rng.uniform(0.1, 0.5) * b, rng.uniform(-0.8, 0.2) * c])
        loop = _ellipsoid(x, y, z, bc, (0.12 * a, 0.12 * b, 0.3 * c)) <= 1
        tissue[loop & cavity] = t["bowel"]
        gas = _ellipsoid(x, y, z, bc + (0, 0.05 * b, 0), (0.05 * a, 0.05 * b, 0.1 * c)) <= 1
        tissue[gas & cavity] = HU["air"]

    tissue[aorta] = t["aorta"]
    tissue[ivc] = t["ivc"]
    tissue[liver] = t["liver"]
    tissue[spleen] = t["spleen"]
    tissue[kid_r] = t["kidney_cortex"]
    tissue[kid_l] = t["kidney_cortex"]
    tissue[kid_r & (kr_r < 0.35)] = t["kidney_medulla"]
    tissue[kid_l & (kl_r < 0.35)] = t["kidney_medulla"]
    bone = (vb_r <= 1) | arch | process
    tissue[bone] = HU["cortical"]
    tissue[(vb_r <= 0.7)] = HU["cancellous"]
    tissue[canal] = HU["csf"]
    tissue[~body] = HU["air"]

    label = np.zeros(shape, np.uint8)
    label[liver] = 1
    label[spleen] = 2
    label[kid_r] = 3
    label[kid_l] = 4
    label[bone | canal | ~body] = 0
    image = _finish_ct(tissue, rng, noise_hu)
    return Phantom(image, label, affine, {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"},
                   "CT", meta={"generator": "abdomen_ct", "seed": int(seed), "body_part": "ABDOMEN",
                               "phase": phase})

