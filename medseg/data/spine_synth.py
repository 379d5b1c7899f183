"""Tissue maps of a real lumbar spine in a drawn torso, for domain-randomised spine training.

Real (label maps only, never a CT image): TotalSegmentator's vertebrae S1-T11 of ``ts_ct`` (the
whole 112-slice abdomen-pelvis CT, ``ts_ct_vertebrae``) and, on its upper 30 slices, the 42-class
map and tissue types of ``ts_ct_sm`` (:func:`medseg.data.totalseg.ct_sm_tissue`: organs, ribs 7-12,
muscles, fat). The slice offset of ``ts_ct_sm`` inside ``ts_ct`` is found by matching their
vertebra labels (:func:`sm_offset`).

Drawn per seed (what no label map here covers), with a random size and place each:

* below the labelled slices: the rest of the sacrum and the coccyx (continuing S1's lowest cross
  section, tapering and curving), both hip bones (iliac wing, acetabulum, pubic and ischial rami),
  femoral heads, necks and shafts, psoas / iliacus / gluteal muscles, bladder, rectum, bowel
  loops and the body outline with subcutaneous fat;
* above them: thoracic vertebrae T11-T7 (copies of the real T12, shifted one level each), their
  rib pairs and the lungs, so the network sees rib-bearing vertebrae that are NOT labelled;
* intervertebral discs and the spinal canal between and inside the real vertebrae;
* a cortical shell (brighter) on every bone, kept in the bone's own label.

:func:`spine_case` then cuts a random superior-inferior field of view (whole, upper with the
thoracic vertebrae and ribs, lower with the pelvis, only L3-L5 above the sacrum, middle), crops the
axial plane, scales the voxel size, may mirror left-right (these labels have no side) and changes
the axis order / direction of the array with the affine changed to match (the world is the same).
Target: T12..L5 -> 1..6 (:data:`LEVELS`); every other structure (sacrum, hips, femurs, ribs,
thoracic vertebrae) is background. Every draw comes from ``numpy.random.default_rng(seed)``.

Size (~455 lines): one concern, one tissue-map generator; most lines are the drawn structures
listed above, each a short function sharing the torso frame.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["LEVELS", "base_map", "sm_offset", "spine_case", "spine_tissue"]

#: output label of each vertebra level (the ct_spine bundle's labels)
LEVELS = {"vertebrae_T12": 1, "vertebrae_L1": 2, "vertebrae_L2": 3, "vertebrae_L3": 4,
          "vertebrae_L4": 5, "vertebrae_L5": 6}
DISC, CORTEX_OFFSET = 1010, 5000
_PAD_TOP = 40  # slices added above the labelled ones (thoracic vertebrae, ribs, lungs)


def _v(name: str) -> int:
    from medseg.data.totalseg import TOTAL_V2

    return {n: v for v, n in TOTAL_V2.items()}[name]


def _load(name: str):
    import nibabel as nib

    from medseg.data import sample

    img = nib.load(str(sample(name)))
    return np.asarray(img.dataobj), img.affine


def sm_offset(vert: np.ndarray, sm_seg: np.ndarray) -> int:
    """Slice offset of the 30-slice ``ts_ct_sm`` label map inside ``ts_ct``: the offset at which
    the vertebra labels (L2-T11) of both maps agree on most voxels."""
    values = [_v(f"vertebrae_{lv}") for lv in ("L2", "L1", "T12", "T11")]
    sv = np.where(np.isin(sm_seg, values), sm_seg, 0)
    n = sm_seg.shape[-1]
    scores = [int(((vert[..., o:o + n] == sv) & (sv > 0)).sum()) for o in range(vert.shape[-1] - n + 1)]
    return int(np.argmax(scores))


@functools.lru_cache(maxsize=1)
def base_map() -> tuple[np.ndarray, dict[int, str], np.ndarray, int]:
    """The real part: ``(tissue int32, names, affine, offset)`` on ``ts_ct``'s grid. Vertebrae from
    ``ts_ct_vertebrae`` everywhere; the ``ts_ct_sm`` tissue map (organs, ribs, muscles, fat, body)
    on slices ``offset..offset+29``; 0 (not yet drawn) elsewhere."""
    from medseg.data.totalseg import SOFT_TISSUE, ct_sm_tissue

    vert, affine = _load("ts_ct_vertebrae")
    sm_seg, _ = _load("ts_ct_sm_seg")
    off = sm_offset(vert, sm_seg)
    sm, names, _ = ct_sm_tissue()
    tissue = np.zeros(vert.shape, np.int32)
    n = sm.shape[-1]
    part = sm.copy()
    part[np.isin(part, [v for v, nm in names.items() if nm.startswith("vertebrae_")])] = SOFT_TISSUE
    tissue[..., off:off + n] = part
    vmask = vert > 0
    tissue[vmask] = vert[vmask]
    names = {k: v for k, v in names.items() if not v.startswith("vertebrae_")}
    from medseg.data.totalseg import TOTAL_V2

    names.update({int(v): TOTAL_V2[int(v)] for v in np.unique(vert) if v})
    return tissue, names, affine, off


# -- drawing primitives (voxel coordinates, painted inside their bounding box only) ---------------

def _box(shape, lo, hi):
    lo = np.maximum(np.floor(lo).astype(int), 0)
    hi = np.minimum(np.ceil(hi).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None, None
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grid = np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi, strict=True)], indexing="ij")
    return sl, grid


def _paint(t, sl, mask, value, where):
    if sl is None:
        return
    sub = t[sl]
    ok = mask & where[sl] if where is not None else mask
    sub[ok] = value


def capsule(t, a, b, r, value, where=None):
    """Paint the voxels within ``r`` of segment ``a``-``b``."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    sl, g = _box(t.shape, np.minimum(a, b) - r - 1, np.maximum(a, b) + r + 1)
    if sl is None:
        return
    d = b - a
    p = np.stack(g, -1) - a
    s = np.clip((p @ d) / max(float(d @ d), 1e-6), 0, 1)
    dist = np.linalg.norm(p - s[..., None] * d, axis=-1)
    _paint(t, sl, dist <= r, value, where)


def ellipsoid(t, c, radii, value, where=None):
    c, radii = np.asarray(c, np.float32), np.maximum(np.asarray(radii, np.float32), 0.5)
    sl, g = _box(t.shape, c - radii - 1, c + radii + 1)
    if sl is None:
        return
    q = sum(((gi - ci) / ri) ** 2 for gi, ci, ri in zip(g, c, radii, strict=True))
    _paint(t, sl, q <= 1, value, where)


def curve(t, points, r, value, where=None):
    """A tube of radius ``r`` (scalar or one per point) through ``points`` (N x 3)."""
    pts = np.asarray(points, np.float32)
    rs = np.broadcast_to(np.asarray(r, np.float32), (len(pts),))
    for i in range(len(pts) - 1):
        capsule(t, pts[i], pts[i + 1], float(max(rs[i], rs[i + 1])), value, where)


def _bezier(p0, p1, p2, n=24):
    s = np.linspace(0, 1, n)[:, None]
    return (1 - s) ** 2 * np.asarray(p0) + 2 * s * (1 - s) * np.asarray(p1) + s ** 2 * np.asarray(p2)


# -- the drawn torso ------------------------------------------------------------------------------

def _centroid(m):
    return np.argwhere(m).mean(0)


def spine_tissue(seed: int) -> tuple[np.ndarray, dict[int, str], np.ndarray, dict[str, float]]:
    """The whole tissue map for one seed: ``(tissue, names, affine, level z-centres)`` on
    ``ts_ct``'s grid extended by ``_PAD_TOP`` slices upwards (the affine is unchanged: the added
    slices continue the k axis). ``zc`` holds the slice-index centre of each vertebra and the
    femoral heads (``"femoral_head"``)."""
    from medseg.data.totalseg import OUTSIDE, SOFT_TISSUE

    rng = np.random.default_rng(seed)
    base, names0, affine, off = base_map()
    names = dict(names0)
    nx, ny, nz0 = base.shape
    t = np.zeros((nx, ny, nz0 + _PAD_TOP), np.int32)
    t[..., :nz0] = base
    n_sm = 30
    real_top = off + n_sm  # first slice above the real context
    free = t == 0  # may be drawn on
    lv = {nm: _v(nm) for nm in ("vertebrae_S1", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3",
                                "vertebrae_L2", "vertebrae_L1", "vertebrae_T12")}
    cen = {nm: _centroid(base == v) for nm, v in lv.items()}
    zc = {nm.split("_")[1]: float(c[2]) for nm, c in cen.items()}

    # ---- body outline of the lowest real slice: centre and half axes
    body0 = base[..., off] != OUTSIDE
    bc = _centroid(body0[..., None])[:2]
    bx, by = (np.ptp(np.nonzero(body0)[i]) / 2 for i in range(2))

    # ---- sacrum and coccyx below S1: S1's lowest cross sections, tapering, curving back then forward
    s1 = base == lv["vertebrae_S1"]
    zs = np.nonzero(s1.any((0, 1)))[0]
    z_s1lo = int(zs.min())
    sec = s1[..., z_s1lo:z_s1lo + 3].any(-1)
    sc = _centroid(sec[..., None])[:2]
    n_sac = int(rng.integers(18, 30))
    back = rng.uniform(7, 13)
    for k in range(1, n_sac + 1):
        z = z_s1lo - k
        if z < 0:
            break
        f = 1 - 0.75 * k / n_sac
        dy = -back * np.sin(np.pi * k / n_sac * 0.8) + 0.1 * k
        m = ndimage.affine_transform(sec.astype(np.float32), np.diag([1 / f, 1 / max(f, 0.6)]),
                                     offset=sc - np.array([f, max(f, 0.6)]) ** -1 * (sc + [0, dy]),
                                     order=1) > 0.5
        sl = t[..., z]
        sl[m & free[..., z]] = _v("sacrum")
    names[_v("sacrum")] = "sacrum"

    # ---- hip bones and femurs
    hw = np.ptp(np.nonzero(sec)[0]) / 2 + 1
    sx, sy = cen["vertebrae_S1"][:2]
    z_head = zc["S1"] + 8 - rng.uniform(26, 34)  # below the L5/S1 disc
    head_dx, head_dy = rng.uniform(26, 33), rng.uniform(6, 18)
    wing_w, wing_d = rng.uniform(33, 44), rng.uniform(16, 26)
    z_crest = zc["L5"] + rng.uniform(-2, 8)
    rh = rng.uniform(6.5, 8.5)
    low = np.zeros_like(free)
    low[..., :real_top] = True
    draw = free & low
    for side, hip, femur in ((+1, "hip_right", "femur_right"), (-1, "hip_left", "femur_left")):
        hv, fv = _v(hip), _v(femur)
        names[hv], names[fv] = hip, femur
        hx, hy = sx + side * head_dx, sy + head_dy
        z_top = z_head + rh + 2
        # iliac wing: one arc per slice from the sacroiliac joint to the anterior superior spine
        for z in range(int(np.floor(z_top)), int(np.ceil(z_crest)) + 1):
            if not 0 <= z < real_top:
                continue
            u = np.clip((z - z_top) / max(z_crest - z_top, 1), 0, 1)
            p0 = (sx + side * (hw + 1 + (1 - u) * 10), sy - 1 + (1 - u) * 4, z)
            p2 = (sx + side * wing_w * (0.55 + 0.45 * u), sy + wing_d * (0.25 + 0.75 * u), z)
            p1 = (sx + side * wing_w * (0.85 + 0.1 * u), sy - 5 + 4 * (1 - u), z)
            if u < 0.25:  # the body of the ilium above the acetabulum
                p2 = (hx, hy, z)
            curve(t, _bezier(p0, p1, p2, 16), 1.6 + 2.2 * (1 - u) ** 2, hv, draw)
        # acetabulum (a cup round the femoral head), rami, femur
        ellipsoid(t, (hx - side * 2, hy, z_head + 1), (rh + 4, rh + 4, rh + 4), hv, draw)
        ellipsoid(t, (hx, hy, z_head), (rh + 1.2,) * 3, int(SOFT_TISSUE), draw)  # joint space
        sym = (sx + side * 2.5, hy + rng.uniform(12, 20), z_head - rng.uniform(2, 7))
        capsule(t, (hx - side * 5, hy + 4, z_head), sym, rng.uniform(2.5, 3.5), hv, draw)
        isch = (hx - side * rng.uniform(6, 10), hy - rng.uniform(4, 9), z_head - rng.uniform(12, 18))
        capsule(t, (hx - side * 2, hy - 4, z_head - 4), isch, rng.uniform(3, 4.5), hv, draw)
        capsule(t, isch, (sym[0], sym[1] - 3, sym[2] - 6), 2.5, hv, draw)
        ellipsoid(t, (hx, hy, z_head), (rh,) * 3, fv, draw)
        troch = (hx + side * rng.uniform(9, 13), hy - rng.uniform(0, 4), z_head - rng.uniform(7, 11))
        capsule(t, (hx, hy, z_head), troch, rng.uniform(3.5, 4.8), fv, draw)
        ellipsoid(t, troch, (4.5, 5, 5), fv, draw)
        capsule(t, troch, (troch[0] - side * 3, troch[1] + 2, troch[2] - 70), rng.uniform(4, 5), fv, draw)
    zc["femoral_head"] = float(z_head)

    # ---- muscles, bladder, rectum, bowel (on what is still free below the real slices)
    free = (t == 0) & low
    for side, aut, ilp, glu, gmed in ((+1, "autochthon_right", "iliopsoas_right", "gluteus_maximus_right",
                                       "gluteus_medius_right"),
                                      (-1, "autochthon_left", "iliopsoas_left", "gluteus_maximus_left",
                                       "gluteus_medius_left")):
        for nm in (aut, ilp, glu, gmed):
            names[_v(nm)] = nm
        am = base[..., off] == _v(aut)
        if am.any():
            for z in range(int(zc["S1"]) - 4, off):
                col = base[..., z]
                vz = np.isin(col, list(lv.values()))
                shift = (_centroid(vz[..., None])[:2] - cen["vertebrae_L2"][:2]) if vz.any() else np.zeros(2)
                m = ndimage.shift(am.astype(np.float32), shift, order=0) > 0.5
                t[..., z][m & free[..., z]] = _v(aut)
        pts, rs = [], []
        for z in np.arange(zc["L1"], z_head - 4, -2.0):
            fz = np.clip((zc["L1"] - z) / max(zc["L1"] - zc["S1"], 1), 0, 1.6)
            col = cen["vertebrae_L3"] if z > zc["S1"] else cen["vertebrae_S1"]
            x = col[0] + side * (7 + 8 * fz) if z > zc["S1"] else hx_of(side, sx, head_dx) - side * 3
            y = col[1] + 6 + 3 * fz if z > zc["S1"] else sy + head_dy + 8
            pts.append((x, y, z))
            rs.append(2.5 + 4.5 * min(fz, 1))
        curve(t, pts, rs, _v(ilp), free)
        ellipsoid(t, (sx + side * wing_w * 0.6, sy + 8, z_crest - 8), (5, 7, 11), _v(ilp), free)
        ellipsoid(t, (sx + side * wing_w * 0.55, sy - 14, z_head + 8), (12, 9, 18), _v(glu), free)
        ellipsoid(t, (sx + side * wing_w * 0.95, sy + 2, z_crest - 10), (6, 13, 12), _v(gmed), free)
    names[_v("urinary_bladder")] = "urinary_bladder"
    names[_v("colon")], names[_v("small_bowel")] = "colon", "small_bowel"
    ellipsoid(t, (sx + rng.uniform(-3, 3), sy + head_dy + rng.uniform(6, 12), z_head + rng.uniform(0, 5)),
              rng.uniform(6, 14, 3), _v("urinary_bladder"), free)
    capsule(t, (sx, sy + 6, z_head + 14), (sx, sy + 10, z_head - 12), rng.uniform(3, 5), _v("colon"), free)
    for _ in range(int(rng.integers(6, 14))):
        c = (bc[0] + rng.uniform(-0.6, 0.6) * bx, rng.uniform(sy + 10, bc[1] + 0.6 * by),
             rng.uniform(z_head + 4, off - 1))
        ellipsoid(t, c, rng.uniform(4, 10, 3), _v("small_bowel" if rng.random() < 0.6 else "colon"), free)

    # ---- body outline below the real slices: an ellipse round everything drawn, fat under the skin
    from medseg.data.totalseg import _EXTRA_CT

    fat_sc, fat_t = _EXTRA_CT["subcutaneous_fat"], _EXTRA_CT["torso_fat"]
    names[fat_sc], names[fat_t], names[int(SOFT_TISSUE)] = "subcutaneous_fat", "torso_fat", "soft_tissue"
    names[OUTSIDE] = "outside"
    gx, gy = np.meshgrid(np.arange(nx, dtype=np.float32), np.arange(ny, dtype=np.float32), indexing="ij")
    grow_x, grow_y, sc_fat = rng.uniform(1.0, 1.25), rng.uniform(0.95, 1.12), rng.uniform(1.5, 6)
    fatty = ndimage.gaussian_filter(rng.standard_normal(t.shape[:2] + (8,)).astype(np.float32), (4, 4, 1))
    for z in range(0, off):
        u = np.clip((off - z) / max(off - z_head, 1), 0, 1)
        ax, ay = bx * (1 + (grow_x - 1) * u), by * (1 + (grow_y - 1) * u)
        occ = np.nonzero(t[..., z] != 0)
        if len(occ[0]):
            ax = max(ax, np.abs(occ[0] - bc[0]).max() + sc_fat + 3)
            ay = max(ay, np.abs(occ[1] - bc[1]).max() + sc_fat + 3)
        q = ((gx - bc[0]) / ax) ** 2 + ((gy - bc[1]) / ay) ** 2
        inner = ((gx - bc[0]) / (ax - sc_fat)) ** 2 + ((gy - bc[1]) / (ay - sc_fat)) ** 2
        sl = t[..., z]
        empty = sl == 0
        sl[empty & (q <= 1) & (inner > 1)] = fat_sc
        fill = empty & (inner <= 1)
        sl[fill & (fatty[..., z % 8] > 0.4)] = fat_t
        sl[fill & (fatty[..., z % 8] <= 0.4)] = int(SOFT_TISSUE)

    # ---- above the real slices: thoracic vertebrae (copies of T12), ribs, lungs
    t12 = base == lv["vertebrae_T12"]
    period = zc["T12"] - zc["L1"]
    top_real = base[..., nz0 - 1]
    body_top = top_real != OUTSIDE
    tc = _centroid(body_top[..., None])[:2]
    tx, ty = (np.ptp(np.nonzero(body_top)[i]) / 2 for i in range(2))
    thor = t[..., nz0:]
    thor[:] = np.where(body_top[..., None], int(SOFT_TISSUE), OUTSIDE)
    for nm in ("autochthon_left", "autochthon_right"):
        thor[np.broadcast_to((top_real == _v(nm))[..., None], thor.shape)] = _v(nm)
    lungs = {+1: _v("lung_lower_lobe_right"), -1: _v("lung_lower_lobe_left")}
    for side, lvv in lungs.items():
        names[lvv] = "lung_lower_lobe_right" if side > 0 else "lung_lower_lobe_left"
        for z in range(nz0, t.shape[2]):
            u = min((z - nz0) / 12, 1)
            c = (tc[0] + side * tx * 0.45, tc[1] - ty * 0.05, z)
            ellipsoid(t, c, (tx * (0.2 + 0.25 * u), ty * (0.35 + 0.4 * u), 0.6), lvv,
                      t == int(SOFT_TISSUE))
    names[_v("heart")] = "heart"
    ellipsoid(t, (tc[0] - 0.15 * tx, tc[1] + 0.35 * ty, nz0 + 22), (0.35 * tx, 0.35 * ty, 18), _v("heart"),
              t == int(SOFT_TISSUE))
    names[_v("aorta")] = "aorta"
    ac = _centroid((top_real == _v("aorta"))[..., None])[:2] if (top_real == _v("aorta")).any() else tc
    capsule(t, (ac[0], ac[1], nz0), (ac[0], ac[1] - 1, t.shape[2]), 4, _v("aorta"))
    kyph = rng.uniform(0.3, 1.2)
    for i, level in enumerate(("T11", "T10", "T9", "T8", "T7", "T6"), start=1):
        dz = int(round(period * i * rng.uniform(0.92, 1.0)))
        shifted = np.zeros(t.shape, bool)
        if dz >= t.shape[2]:
            break
        shifted[..., dz:nz0 + dz] = t12[..., : t.shape[2] - dz]
        shifted = np.roll(shifted, -int(round(kyph * i)), axis=1)
        vv = _v(f"vertebrae_{level}")
        names[vv] = f"vertebrae_{level}"
        put = shifted & ~np.isin(t, list(lv.values()))
        if not put.any():
            break
        t[put] = vv
        if level == "T11":
            continue  # ribs 11 and 12 of the real map stay; drawn ribs from T10 up
        vc = _centroid(put)
        for side in (+1, -1):
            rv = _v(f"rib_{'right' if side > 0 else 'left'}_{level[1:]}")
            names[rv] = f"rib_{'right' if side > 0 else 'left'}_{level[1:]}"
            phi = np.linspace(0.35, rng.uniform(2.2, 2.6), 20)
            rx, ry = tx * rng.uniform(0.78, 0.9), ty * rng.uniform(0.78, 0.9)
            pts = np.stack([tc[0] + side * rx * np.sin(phi), tc[1] - ry * np.cos(phi),
                            vc[2] - rng.uniform(4, 9) * (phi - 0.35)], -1)
            pts = np.concatenate([[vc + (side * 6, -2, 0)], pts])
            curve(t, pts, rng.uniform(1.4, 2.0), rv, ~np.isin(t, list(lv.values())))

    # ---- discs between the labelled vertebrae, spinal canal inside them
    names[DISC] = "intervertebral_disc"
    names[_v("spinal_cord")] = "spinal_cord"
    vert = np.isin(t, [v for v, nm in names.items() if nm.startswith("vertebrae_")])
    bridged = ndimage.binary_closing(vert, np.ones((1, 1, 5), bool)) & ~vert
    soft = np.isin(t, [int(SOFT_TISSUE), fat_t, 0]) | (t == _v("spinal_cord"))
    t[bridged & soft & (np.arange(t.shape[2]) > 0)] = DISC
    for z in range(t.shape[2]):
        ring = vert[..., z] | (t[..., z] == DISC)
        hole = ndimage.binary_fill_holes(ring) & ~ring
        t[..., z][hole & (t[..., z] != OUTSIDE)] = _v("spinal_cord")
    t[t < 0] = 0
    return t, names, affine, zc


def hx_of(side: int, sx: float, head_dx: float) -> float:
    return sx + side * head_dx


def add_cortex(t: np.ndarray, names: dict[int, str], rng: np.random.Generator) -> None:
    """Give every bone a cortical shell (its surface voxels) with its own tissue value
    (``value + CORTEX_OFFSET``, name ``<bone>_cortex``): brighter than the inside in CT mode."""
    bone = [v for v, nm in names.items() if any(k in nm for k in ("vertebrae", "sacrum", "hip", "femur", "rib"))]
    is_bone = np.isin(t, bone)
    edge = np.zeros_like(is_bone)
    for ax in range(3):
        for s in (1, -1):
            edge |= np.roll(t, s, axis=ax) != t
    shell = is_bone & edge
    if rng.random() < 0.5:  # thicker shell sometimes
        shell |= is_bone & ndimage.binary_dilation(shell) & ~ndimage.binary_erosion(is_bone, iterations=2)
    t[shell] += CORTEX_OFFSET
    for v in bone:
        names[v + CORTEX_OFFSET] = f"{names[v]}_cortex"


def _reorient(arr: np.ndarray, affine: np.ndarray, perm: Sequence[int], flips: Sequence[bool]):
    """``arr`` with its axes permuted / reversed and the affine that keeps every voxel's world
    position (the same image, stored differently)."""
    arr = np.transpose(arr, perm)
    aff = affine.copy()
    aff[:3, :3] = affine[:3, list(perm)]
    for ax, f in enumerate(flips):
        if f:
            arr = np.flip(arr, ax)
            aff[:3, 3] = aff[:3, 3] + aff[:3, ax] * (arr.shape[ax] - 1)
            aff[:3, ax] = -aff[:3, ax]
    return np.ascontiguousarray(arr), aff


FOV_KINDS = ("whole", "upper", "lower", "l3_l5_sacrum", "middle")


def spine_case(seed: int, *, kind: str | None = None, reorient: bool = True):
    """One training case: ``(tissue, names, affine, target, kind)`` with a random field of view and
    storage (see the module docstring); ``target`` maps tissue values to labels 1-6 (T12-L5,
    cortex included), every other value to 0."""
    rng = np.random.default_rng(seed + 7_000_000)
    t, names, affine, zc = spine_tissue(seed)
    add_cortex(t, names, rng)
    kind = kind or str(rng.choice(FOV_KINDS, p=[0.15, 0.25, 0.25, 0.2, 0.15]))
    nz = t.shape[2]
    gap = lambda a, b: (zc[a] + zc[b]) / 2  # noqa: E731  (a disc between two levels)
    if kind == "whole":
        lo, hi = rng.uniform(0, zc["femoral_head"]), rng.uniform(zc["T12"] + 12, nz)
    elif kind == "upper":
        lo, hi = rng.uniform(gap("L4", "L3"), gap("L1", "T12")), rng.uniform(zc["T12"] + 20, nz)
    elif kind == "lower":
        lo, hi = rng.uniform(0, zc["femoral_head"]), rng.uniform(gap("L2", "L1"), zc["T12"] + 8)
    elif kind == "l3_l5_sacrum":
        lo, hi = rng.uniform(0, zc["S1"] - 4), rng.uniform(gap("L3", "L2"), zc["L2"] - 1)
    else:  # middle: neither the sacrum nor T12's ribs need be in view
        lo, hi = rng.uniform(zc["S1"] - 2, gap("L4", "L3")), rng.uniform(gap("L1", "T12"), nz)
    lo, hi = int(max(0, lo)), int(min(nz, max(hi, lo + 30)))
    col = np.argwhere(np.isin(t, [v for v, nm in names.items() if nm.split("_cortex")[0] in LEVELS]))
    cx0, cy0 = col[:, :2].min(0)
    cx1, cy1 = col[:, :2].max(0)
    x0, y0 = int(rng.uniform(0, max(cx0 - 20, 1))), int(rng.uniform(0, max(cy0 - 8, 1)))
    x1 = int(t.shape[0] - rng.uniform(0, max(t.shape[0] - cx1 - 20, 1)))
    y1 = int(t.shape[1] - rng.uniform(0, max(t.shape[1] - cy1 - 20, 1)))
    t = t[x0:x1, y0:y1, lo:hi]
    aff = affine.copy()
    aff[:3, 3] = affine[:3, :3] @ np.array([x0, y0, lo]) + affine[:3, 3]
    # patient size: the voxel size scaled (the anatomy grows or shrinks in mm)
    scale = rng.uniform(0.85, 1.15) * rng.uniform(0.93, 1.07, 3)
    aff[:3, :3] = aff[:3, :3] * scale[None, :]
    if rng.random() < 0.5:  # mirror left-right: a real mirror image (these labels have no side)
        t = np.ascontiguousarray(t[::-1])
    if reorient and rng.random() < 0.6:
        perm = [int(p) for p in rng.permutation(3)]
        flips = [bool(f) for f in rng.random(3) < 0.5]
        t, aff = _reorient(t, aff, perm, flips)
    target = {v: LEVELS[nm.split("_cortex")[0]] for v, nm in names.items() if nm.split("_cortex")[0] in LEVELS}
    present = {int(v) for v in np.unique(t)}
    names = {v: nm for v, nm in names.items() if v in present}
    return t, names, aff, target, kind
