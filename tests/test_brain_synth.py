"""medseg.data.brain_synth: randomised-contrast heads from the phantom anatomy. Seeded; the label is
the phantom's brain mask exactly; every tissue of the map is one tissue of the clean phantom; air
stays dark; the contrast really changes (CSF darker than white matter in one image, brighter in
another), so a network cannot learn one T1 ordering."""

from __future__ import annotations

import numpy as np

from medseg.data.brain_synth import MR_RANGE, brain_case, tissue_map
from medseg.data.phantoms import brain_mr as _brain_mr

SMALL = {"shape": (40, 48, 40), "spacing": (4.0, 4.0, 4.0)}  # the default head's field of view, coarser


def brain_mr(**kw):
    return _brain_mr(**SMALL, **kw)


def test_tissue_map_is_the_clean_phantom_with_mixtures_joined_to_the_nearest_tissue():
    ph = brain_mr(seed=5, clinical=True, clean=True)
    t, names = tissue_map(ph.image)
    assert t.shape == ph.image.shape and names[int(t[0, 0, 0])] == "outside"
    signal = np.rint(ph.image)
    for k, name in names.items():
        if name == "outside":
            assert np.all(signal[t == k] < min(int(n.split("_")[1]) for n in names.values() if n != "outside"))
            continue
        v = float(name.split("_")[1])
        # every voxel with exactly the tissue's signal (a constant in the clean phantom) is that tissue
        assert (signal == v).sum() > 0 and np.all(t[signal == v] == k)
        # no voxel of the map sits closer to another tissue's signal
        others = np.array([float(n.split("_")[1]) for n in names.values() if n not in ("outside", name)] + [0.0])
        d_own = np.abs(signal[t == k] - v)
        assert np.all(d_own <= np.abs(signal[t == k][:, None] - others[None]).min(1))
    # the clean image is a T1 before blur / noise: the plain phantom of the same seed has the same label
    assert np.array_equal(ph.label, brain_mr(seed=5, clinical=True).label)


def test_same_seed_same_image_label_exact_air_dark_and_contrast_varies():
    a, la, aff = brain_case(3, **SMALL)
    b, lb, _ = brain_case(3, **SMALL)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    ref = brain_mr(seed=3)
    assert np.array_equal(la, ref.label) and np.allclose(aff, ref.affine)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 4095
    clean = brain_mr(seed=3, clean=True).image
    t, names = tissue_map(clean)
    air = t == [k for k, n in names.items() if n == "outside"][0]
    assert float(np.median(a[air])) < 40.0 < float(np.median(a[~air]))  # MR air has no signal
    # CSF (the darkest tissue of a T1) and white matter (the brightest inside the brain) swap order
    orders = set()
    for seed in range(3, 9):
        img, _, _ = brain_case(seed, **SMALL)
        ct = brain_mr(seed=seed, clean=True)
        tt, nn = tissue_map(ct.image)
        tv = ct.meta["t1_values"]
        k_csf = min((k for k, n in nn.items() if n != "outside"), key=lambda k: abs(float(nn[k].split("_")[1]) - tv["csf"]))
        k_wm = min((k for k, n in nn.items() if n != "outside"), key=lambda k: abs(float(nn[k].split("_")[1]) - tv["wm"]))
        orders.add(bool(img[tt == k_csf].mean() > img[tt == k_wm].mean()))
        assert img[tt != 0].mean() <= MR_RANGE[1] + 100
    assert orders == {True, False}
    # other seeds: another image
    c, _, _ = brain_case(4, **SMALL)
    assert c.shape == a.shape and not np.array_equal(c, a)
