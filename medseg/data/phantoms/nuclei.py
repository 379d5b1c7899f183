"""Fluorescence nuclei phantom (2D instances)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.data.phantoms._core import (
    Phantom,
)
from medseg.errors import ConfigError


def nuclei_2d(shape: Sequence[int] = (256, 256), n: int = 40, seed: int = 0, *,
              touching: float = 0.5) -> Phantom:
    """Fluorescence-like nuclei: ``image`` (float32 counts), ``instances`` (uint16, 1..N, each
    nucleus one id, touching nuclei split along their contact line) and the semantic
    ``label`` ``{1: nucleus}``. About ``touching`` of the nuclei are placed against a
    neighbour. ``meta["n_instances"]`` is N. Pixel units (no physical size): the affine is the
    identity (spacing 1).
    """
    s = tuple(int(v) for v in shape)
    if len(s) != 2 or min(s) < 32:
        raise ConfigError(f"shape must be two sizes of at least 32 pixels, got {tuple(shape)}")
    if not 1 <= n <= 2000:
        raise ConfigError(f"n must be between 1 and 2000 nuclei, got {n}")
    rng = np.random.default_rng(seed)
    scale = min(s) / 256.0
    nuclei: list[tuple[float, float, float, float, float]] = []  # ci, cj, r1, r2, angle
    tries = 0
    while len(nuclei) < n and tries < 50 * n:
        tries += 1
        r1 = rng.uniform(6, 10) * max(scale, 0.5)
        r2 = r1 * rng.uniform(0.65, 1.0)
        ang = rng.uniform(0, np.pi)
        if nuclei and rng.uniform() < touching:
            oi, oj, o1, o2, _ = nuclei[int(rng.integers(len(nuclei)))]
            t = rng.uniform(0, 2 * np.pi)
            dist = (0.5 * (o1 + o2) + 0.5 * (r1 + r2)) * rng.uniform(0.8, 0.92)
            ci, cj = oi + dist * np.cos(t), oj + dist * np.sin(t)
        else:
            ci, cj = rng.uniform(0, s[0]), rng.uniform(0, s[1])
        if not (r1 <= ci < s[0] - r1 and r1 <= cj < s[1] - r1):
            continue
        if any(np.hypot(ci - a, cj - b) < 0.7 * (0.5 * (r1 + r2) + 0.5 * (a1 + a2)) for a, b, a1, a2, _ in nuclei):
            continue
        nuclei.append((ci, cj, r1, r2, ang))

    best = np.full(s, np.inf, np.float32)
    inst = np.zeros(s, np.uint16)
    for idx, (ci, cj, r1, r2, ang) in enumerate(nuclei, start=1):
        lo_i, hi_i = int(max(0, ci - r1 - 2)), int(min(s[0], ci + r1 + 3))
        lo_j, hi_j = int(max(0, cj - r1 - 2)), int(min(s[1], cj + r1 + 3))
        gi, gj = np.mgrid[lo_i:hi_i, lo_j:hi_j].astype(np.float32)
        di, dj = gi - ci, gj - cj
        u = di * np.cos(ang) + dj * np.sin(ang)
        v = -di * np.sin(ang) + dj * np.cos(ang)
        dist = (u / r1) ** 2 + (v / r2) ** 2
        sub_best = best[lo_i:hi_i, lo_j:hi_j]
        take = (dist <= 1) & (dist < sub_best)
        sub_best[take] = dist[take]
        inst[lo_i:hi_i, lo_j:hi_j][take] = idx
    # drop fragments (< 12 px) and renumber 1..N in order of appearance
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    keep = ids[counts >= 12]
    lut = np.zeros(len(nuclei) + 1, np.uint16)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.uint16)
    inst = lut[inst]

    bright = np.concatenate([[0.0], rng.uniform(0.45, 1.0, len(keep))]).astype(np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal(s).astype(np.float32), 1.5)
    signal = bright[inst] * (1 + 1.5 * texture) * 2500.0 * (inst > 0)
    signal = ndimage.gaussian_filter(signal, 1.0) + 120.0
    image = rng.poisson(np.clip(signal, 0, None)).astype(np.float32)
    label = (inst > 0).astype(np.uint8)
    affine = np.eye(4)
    return Phantom(image, label, affine, {1: "nucleus"}, "microscopy", instances=inst,
                   meta={"generator": "nuclei_2d", "seed": int(seed), "n_instances": int(len(keep))})


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


