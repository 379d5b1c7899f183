"""Abdominal CT phantom: liver, spleen, kidneys (RAS world coordinates)."""

from __future__ import annotations

from collections.abc import Sequence

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


def abdomen_ct(shape: Sequence[int] = (96, 96, 64), spacing: Sequence[float] = (1.5, 1.5, 2.5),
               orientation: Orientation = "LPS", seed: int = 0, *, noise_hu: float = 12.0) -> Phantom:
    """Abdominal CT phantom in HU with labels {1: liver, 2: spleen, 3: kidney_right, 4: kidney_left}.

    Body (subcutaneous fat -100 HU, muscle 45 HU), liver (~60 HU) on the patient's RIGHT (RAS
    x > 0), spleen (~50 HU) on the LEFT (RAS x < 0), contrast-enhanced kidneys (cortex ~150 HU)
    either side of the spine (cortical bone ~950 HU, cancellous ~450 HU), aorta and IVC, bowel
    gas pockets; outside is air (-1000 HU). Organ positions and sizes jitter and the whole
    anatomy is smoothly deformed per ``seed``; Gaussian noise of ``noise_hu`` HU.
    ``spacing`` is mm along i, j, k; see the module docstring for ``orientation``.
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.04)
    # normalised body units: a = half width (R-L), b = half depth (A-P), c = half height (S-I)
    a, b, c = 0.9 * half[0], 0.68 * half[1], half[2]
    j = lambda s: _jitter(rng, s)  # noqa: E731

    body = _ellipse(x, y, (0, 0), (a, b)) <= 1
    inner = _ellipse(x, y, (0, 0), (0.9 * a, 0.86 * b)) <= 1
    tissue = np.full(shape, HU["air"], np.float32)
    tissue[body] = HU["fat"]
    tissue[inner] = HU["muscle"]
    # visceral fat: a smooth random field thresholded inside the abdominal cavity
    cavity = _ellipse(x, y, (0, 0.05 * b), (0.78 * a, 0.7 * b)) <= 1
    tissue[cavity & (np.sin(x / a * 7 + rng.uniform(0, 6)) * np.sin(y / b * 6 + rng.uniform(0, 6)) > 0.55)] \
        = HU["fat"] + 20

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
        tissue[loop & cavity] = HU["bowel"]
        gas = _ellipsoid(x, y, z, bc + (0, 0.05 * b, 0), (0.05 * a, 0.05 * b, 0.1 * c)) <= 1
        tissue[gas & cavity] = HU["air"]

    tissue[aorta] = HU["aorta"]
    tissue[ivc] = HU["ivc"]
    tissue[liver] = HU["liver"]
    tissue[spleen] = HU["spleen"]
    tissue[kid_r] = HU["kidney"]
    tissue[kid_l] = HU["kidney"]
    tissue[kid_r & (kr_r < 0.35)] = HU["medulla"]
    tissue[kid_l & (kl_r < 0.35)] = HU["medulla"]
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
                   "CT", meta={"generator": "abdomen_ct", "seed": int(seed), "body_part": "ABDOMEN"})


# --------------------------------------------------------------------------------------------
# chest CT with nodules
# --------------------------------------------------------------------------------------------


