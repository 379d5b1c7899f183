"""Spine CT phantom labelled by vertebral level, with the landmarks that name the levels."""

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

#: HU of the unlabelled landmark bone (ribs, sacrum, iliac wings): thin-cortex, mostly trabecular
#: bone, dimmer than the labelled vertebrae (cortical shell 950 HU), so that a bone threshold above
#: 300 HU still selects the labelled column; a network has to tell the landmarks by shape and place.
LANDMARK_HU = {"rib": 210.0, "sacrum": 210.0, "ilium": 210.0}

_DISC = 0.22  # disc height as a fraction of one level (vertebra + disc)


def spine_ct(shape: Sequence[int] = (64, 64, 96), spacing: Sequence[float] = (1.25, 1.25, 1.5),
             orientation: Orientation = "LPS", seed: int = 0, *, noise_hu: float = 15.0) -> Phantom:
    """CT of a lumbar vertebral column (HU) labelled by level: ``{1: vertebra_T12, 2: vertebra_L1,
    ..., 6: vertebra_L5}`` (:data:`SPINE_LEVELS`, the same mapping for every seed).

    Per seed: 3 to 6 consecutive levels (``meta["levels"]``, superior first, i.e. the first is at
    the largest RAS z), a smooth random curvature in the coronal (scoliosis) and sagittal
    (lordosis) planes, and small size changes (+4 % per level downwards, +-4 % jitter). Each
    vertebra has a body (cortical shell ~950 HU, cancellous core ~450 HU) and posterior elements
    (pedicles, lamina, spinous process pointing posterior = -y in RAS, transverse processes);
    intervertebral discs (~90 HU) are unlabelled. The column runs along the patient's S-I axis
    and is scaled to the field of view (S-I extent of the grid).

    Landmarks (what names the levels, as on a clinical lumbar CT), unlabelled (0), in world
    coordinates and dimmer than the vertebrae (:data:`LANDMARK_HU`, ~210 HU):

    * **ribs** when T12 is in view: a pair of curved rib stubs leaving the tips of T12's
      transverse processes, running laterally, anteriorly and inferiorly (the 12th ribs);
    * **sacrum** when L5 is in view: below the L5/S1 disc, S1 with a body wider than L5's and
      tilted posteriorly, its alae, the sacral canal, and a hint of the iliac wings at the lateral
      edges of the field of view (crest below L5's transverse processes).

    Field of view: every phantom shows at least one landmark: the column starts at T12 (ribs in
    view), ends at L5 (sacrum in view), or both (6 levels). At the other end the field of view
    cuts the column in the disc beyond the last labelled level (no partial vertebrae).
    ``meta["landmarks"]`` lists ``"ribs"`` and/or ``"sacrum"``.
    """
    shape = _check_shape(shape, 3)
    rng, affine, half, (x0, y0, z0), (x, y, z) = _world_grid(shape, spacing, orientation, seed, 0.02)
    a, b, c = half

    n = int(rng.integers(3, len(SPINE_LEVELS) + 1))
    if n == len(SPINE_LEVELS):
        start = 0
    else:
        start = 0 if rng.random() < 0.5 else len(SPINE_LEVELS) - n
    levels = list(SPINE_LEVELS[start:start + n])
    ribs = start == 0
    sacrum = start + n == len(SPINE_LEVELS)
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

    # S-I layout in units of one level: a margin above (disc above T12, or the cut), the levels,
    # and below either the sacrum (part of S1 in view) or the cut in the next disc
    room_top = 0.15
    room_bottom = rng.uniform(0.55, 0.95) if sacrum else 0.15
    level_h = 1.94 * c / (room_top + n + room_bottom)
    top = 0.97 * c - room_top * level_h
    disc_h = _DISC * level_h
    label = np.zeros(shape, np.uint8)
    bone = np.zeros(shape, bool)
    landmark = np.zeros(shape, np.float32)  # HU of landmark bone, 0 elsewhere
    g = 1.0
    for idx, level in enumerate(levels):
        g = 1.0 + 0.04 * (SPINE_LEVELS.index(level)) + rng.uniform(-0.04, 0.04)
        z_hi = top - idx * level_h
        zb_hi, zb_lo = z_hi - disc_h / 2, z_hi - level_h + disc_h / 2
        zm = (zb_hi + zb_lo) / 2
        in_slab = (z <= zb_hi) & (z >= zb_lo)
        vb = _ellipse(u, v, (0, 0), (0.4 * a * g, 0.32 * b * g))
        body_m = in_slab & (vb <= 1)
        # posterior elements: arch around the canal, spinous and transverse processes
        cy = -0.42 * b * g
        canal_r = _ellipse(u, v, (0, cy), (0.14 * a, 0.13 * b))
        arch_m = (_ellipse(u, v, (0, cy), (0.26 * a * g, 0.24 * b * g)) <= 1) & (canal_r > 1)
        pe_slab = (z <= zm + 0.3 * level_h) & (z >= zm - 0.3 * level_h)
        spinous = (np.abs(u) < 0.06 * a) & (v < cy - 0.15 * b) & (v > -0.95 * b) \
            & (z - zm < 0.2 * level_h + 0.25 * (v - cy)) & (z - zm > -0.2 * level_h + 0.25 * (v - cy)) \
            & (z >= zb_lo)
        tp_half = 0.62 * a * g  # half span of the transverse processes
        transverse = (np.abs(v - cy) < 0.07 * b) & (np.abs(u) < tp_half) & (np.abs(z - zm) < 0.14 * level_h)
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
        if level == "T12":
            _ribs(landmark, u, v, z, a, b, zm, cy, tp_half, level_h)
    # the disc below the last vertebra
    zb_lo = top - n * level_h + disc_h / 2
    tissue[(_ellipse(u, v, (0, 0), (0.38 * a * g, 0.3 * b * g)) <= 1) & (z < zb_lo) & (z > zb_lo - disc_h)
           & ~bone] = HU["disc"]
    if sacrum:
        _sacrum(landmark, tissue, u, v, z, a, b, zb_lo - disc_h, g, level_h)
    lm = (landmark > 0) & ~bone
    tissue[lm] = landmark[lm]
    tissue[~body] = HU["air"]
    label[~body] = 0
    image = _finish_ct(tissue, rng, noise_hu)
    landmarks = (["ribs"] if ribs else []) + (["sacrum"] if sacrum else [])
    return Phantom(image, label, affine, {i + 1: f"vertebra_{lv}" for i, lv in enumerate(SPINE_LEVELS)},
                   "CT", meta={"generator": "spine_ct", "seed": int(seed), "body_part": "LSPINE",
                               "levels": levels, "landmarks": landmarks})


def _ribs(out: np.ndarray, u, v, z, a: float, b: float, zm: float, cy: float, tp_half: float,
          level_h: float) -> None:
    """The 12th ribs: from the transverse process tips (|u| = ``tp_half``, v = ``cy``, z = ``zm``)
    laterally to the edge of the view, curving anteriorly (+v) and inferiorly (-z)."""
    reach = max(0.97 * a - 0.85 * tp_half, 1e-3)
    t = (np.abs(u) - 0.85 * tp_half) / reach  # 0 at the costotransverse joint, 1 at the lateral edge
    along = (t >= 0) & (t <= 1.1)
    tc = np.clip(t, 0, 1.1)
    v_c = cy + 0.05 * b + 0.55 * b * tc ** 2
    z_c = zm - 0.35 * level_h * tc
    r = 0.045 * (a + b)  # tube radius, mm
    rib = along & (((v - v_c) / (0.9 * r)) ** 2 + ((z - z_c) / r) ** 2 <= 1)
    out[rib] = LANDMARK_HU["rib"]


def _sacrum(out: np.ndarray, tissue: np.ndarray, u, v, z, a: float, b: float, z_s: float, g: float,
            level_h: float) -> None:
    """S1 below the L5/S1 disc (top at ``z_s``): body wider than L5 and tilted posteriorly, alae,
    sacral canal; and the iliac wings at the lateral edges (crest a third of a level above S1)."""
    dz = z_s - z  # depth below the top of S1 (mm)
    below = dz >= 0
    vs = v + 0.45 * dz  # the sacrum slopes posteriorly going down
    gs = 1.08 * g
    s_body = _ellipse(u, vs, (0, 0), (0.42 * a * gs, 0.3 * b * gs)) <= 1
    alae = (np.abs(u) <= 0.8 * a) & (vs > -0.32 * b) & (vs < 0.12 * b) \
        & (dz <= 0.5 * level_h * (1 - 0.5 * np.abs(u) / (0.8 * a)))
    canal = _ellipse(u, vs, (0, -0.42 * b), (0.14 * a, 0.08 * b)) <= 1
    roof = _ellipse(u, vs, (0, -0.42 * b), (0.32 * a, 0.2 * b)) <= 1
    s1 = below & (s_body | alae | roof) & ~canal
    out[s1] = LANDMARK_HU["sacrum"]
    tissue[below & canal] = HU["csf"]
    # iliac wings: thin oblique plates at the lateral edges, lateral to the sacroiliac joints
    p0, p1 = np.array([0.82 * a, -0.45 * b]), np.array([0.98 * a, 0.2 * b])
    d = p1 - p0
    au = np.abs(u)
    s = np.clip(((au - p0[0]) * d[0] + (v - p0[1]) * d[1]) / float(d @ d), 0, 1)
    dist = np.hypot(au - (p0[0] + s * d[0]), v - (p0[1] + s * d[1]))
    ilium = (dist <= 0.035 * (a + b)) & (z <= z_s + 0.3 * level_h)
    out[ilium] = LANDMARK_HU["ilium"]
