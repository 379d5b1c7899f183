"""spine_ct phantom: levels ordered along world S-I in any grid, and the landmarks that name them
(12th ribs beside T12, sacrum below L5, at least one of them in every field of view).

The landmarks are unlabelled, so they are found here from the IMAGE alone (bone-like HU outside
the labels, away from the labelled bone's partial-volume rim) and placed in world coordinates
with nibabel's ``apply_affine`` (independent of the generator's own maths).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.data.phantoms import SPINE_LEVELS, spine_ct


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = {"x": (1, 2), "y": (0, 2), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


OBLIQUE = _rot("z", 20) @ _rot("x", 12) @ np.diag([-1.0, -1.0, 1.0])  # a tilted LPS grid
# (seed, orientation): ribs-only, sacrum-only and both-landmark phantoms, in several grids
CASES = [(3, "PIL"), (5, "RAS"), (1, "LPS"), (9003, OBLIQUE), (9002, "PIL"), (7001, "ASR")]


def _grid(orientation) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape and spacing covering 80 x 80 x 144 mm (R-L, A-P, S-I) for axis codes; oblique: LPS-like."""
    if isinstance(orientation, str):
        size = {"R": (64, 1.25), "L": (64, 1.25), "A": (64, 1.25), "P": (64, 1.25), "S": (96, 1.5), "I": (96, 1.5)}
        return tuple(size[c][0] for c in orientation), tuple(size[c][1] for c in orientation)  # type: ignore[return-value]
    return (64, 64, 96), (1.25, 1.25, 1.5)


def _world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, np.argwhere(mask))


def _landmark_components(ph) -> list[np.ndarray]:
    """World coordinates (N x 3, RAS mm) of each piece of unlabelled bone seen in the image."""
    spacing = np.linalg.norm(ph.affine[:3, :3], axis=0)
    away = ndimage.distance_transform_edt(ph.label == 0, sampling=spacing) > 3.0  # beyond the rim
    bone = (ph.image > 170.0) & away  # muscle 45, disc 90 (+ noise) stay below 170 HU
    comp, n = ndimage.label(bone)
    sizes = np.bincount(comp.ravel())
    return [_world(comp == c, ph.affine) for c in range(1, n + 1) if sizes[c] >= 30]


@pytest.fixture(scope="module", params=CASES,
                ids=[f"{s}-{o if isinstance(o, str) else 'oblique'}" for s, o in CASES])
def case(request):
    """The phantom of one (seed, orientation) of CASES, generated once for every test that uses it."""
    seed, orientation = request.param
    shape, spacing = _grid(orientation)
    return spine_ct(shape, spacing, orientation, seed=seed)


def test_levels_ordered_along_world_superior(case):
    ph = case
    levels = ph.meta["levels"]
    present = [int(v) for v in np.unique(ph.label) if v]
    assert present == [SPINE_LEVELS.index(lv) + 1 for lv in levels]
    assert 3 <= len(present) <= 6 and present == list(range(present[0], present[0] + len(present)))
    zs = [_world(ph.label == v, ph.affine)[:, 2] for v in present]
    for upper, lower in zip(zs[:-1], zs[1:], strict=True):
        # each level lies wholly above the next one along RAS +z (disc between: a gap of >= 1 mm)
        assert upper.min() > lower.max() + 1.0
        assert np.mean(upper) > np.mean(lower)


def test_same_world_anatomy_in_every_grid():
    """Seed 3 on RAS, PIL and an oblique grid: the T12 centroids agree in RAS mm."""
    cents = []
    for orientation in ("RAS", "PIL", OBLIQUE):
        shape, spacing = _grid(orientation)
        ph = spine_ct(shape, spacing, orientation, seed=3)
        cents.append(_world(ph.label == 1, ph.affine).mean(axis=0))
        assert ph.meta["levels"][0] == "T12"
    for c in cents[1:]:
        assert np.linalg.norm(c - cents[0]) < 1.5, (c, cents[0])


def test_ribs_beside_t12_and_sacrum_below_l5(case):
    ph = case
    levels = ph.meta["levels"]
    assert ph.meta["landmarks"] == [n for n, lv in (("ribs", "T12"), ("sacrum", "L5")) if lv in levels]
    pieces = _landmark_components(ph)
    assert pieces, "no landmark bone in the image"
    top = _world(ph.label == SPINE_LEVELS.index(levels[0]) + 1, ph.affine)
    low = _world(ph.label == SPINE_LEVELS.index(levels[-1]) + 1, ph.affine)
    spacing_mm = np.linalg.norm(ph.affine[:3, :3], axis=0)
    ribs = [p for p in pieces if p[:, 2].mean() > low[:, 2].max()]  # landmark bone above the lowest level
    below = [p for p in pieces if p[:, 2].mean() < low[:, 2].min()]
    assert len(ribs) + len(below) == len(pieces)  # no landmark bone beside a middle level
    if "T12" in levels:
        t12 = top
        assert len(ribs) == 2, f"expected two rib stubs beside T12, got {len(ribs)}"
        xc = t12[:, 0].mean()
        sides = sorted(np.sign(p[:, 0].mean() - xc) for p in ribs)
        assert sides == [-1.0, 1.0]  # one on the patient's left, one on the right
        for p in ribs:
            assert abs(p[:, 0].mean() - xc) > 15.0  # lateral of the column
            # inside T12's S-I extent, hanging down from it, never above it
            assert p[:, 2].max() <= t12[:, 2].max() and p[:, 2].mean() > t12[:, 2].min() - 10.0
            # articulates with T12: the nearest rib voxel is just beyond the 3 mm rim left out
            d = np.min(np.linalg.norm(p[::7, None, :] - t12[None, ::5, :], axis=2))
            assert d < 3.0 + 2.0 * spacing_mm.max(), d
    else:
        assert not ribs
    if "L5" in levels:
        assert below, "no sacrum below L5"
        sacrum = max(below, key=len)
        central = np.abs(sacrum[:, 0] - low[:, 0].mean()) < 15.0  # S1 body, not the iliac crests
        assert central.sum() > 100
        assert sacrum[central, 2].max() < low[:, 2].min()  # below L5 (the L5/S1 disc between)
        width = np.ptp(sacrum[:, 0])  # alae + iliac wings: wider than L5 with its processes
        assert width > np.ptp(low[:, 0])
        assert len(sacrum) * np.prod(spacing_mm) > 2000.0  # mm^3: a bone, not a speck
    else:
        assert not below


def test_every_field_of_view_shows_a_landmark():
    seen = set()
    for seed in range(40):
        ph = spine_ct((24, 24, 40), (3.3, 3.3, 3.6), "LPS", seed=seed)  # same field of view, coarse
        levels = ph.meta["levels"]
        assert 3 <= len(levels) <= 6
        assert "T12" in levels or "L5" in levels, (seed, levels)
        assert levels == [lv for lv in SPINE_LEVELS if lv in levels]
        seen.add(tuple(ph.meta["landmarks"]))
        # the labels hold exactly the listed levels
        assert [int(v) for v in np.unique(ph.label) if v] == [SPINE_LEVELS.index(lv) + 1 for lv in levels]
    assert seen == {("ribs",), ("sacrum",), ("ribs", "sacrum")}
