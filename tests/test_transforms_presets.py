"""Presets: every preset inverts back to the source geometry (oblique and flipped inputs); labels
stay labels (nearest); intensities follow the documented windows, checked against nibabel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.errors import ConfigError
from medseg.transforms.presets import PRESETS, get_preset, preprocessing


def _rot(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def _affine(direction: np.ndarray, spacing, origin) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = direction @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


GEOMETRIES_3D = {
    "oblique": _affine(_rot(2, 0.35) @ _rot(0, 0.2), (0.9, 1.3, 2.7), (-40.0, 25.0, 10.0)),
    "flipped_lps": _affine(np.diag([-1.0, -1.0, 1.0]), (1.1, 0.8, 3.0), (60.0, 70.0, -20.0)),
    "permuted_sip": _affine(np.array([[0, 0, 1.0], [1.0, 0, 0], [0, -1.0, 0]]), (2.0, 1.0, 1.5), (5, 5, 5)),
}
GEOMETRIES_2D = {
    "flipped": _affine(np.diag([-1.0, 1.0, 1.0]), (0.7, 0.7, 1.0), (100.0, 0.0, 0.0)),
    "oblique": _affine(_rot(2, 0.5), (0.5, 0.9, 1.0), (0.0, -30.0, 0.0)),
}


def _pair(shape, affine, rng, hu=True):
    img = rng.normal(40.0, 300.0, size=shape).astype(np.float32) if hu else rng.gamma(2.0, 50.0, size=shape)
    lab = np.zeros(shape, np.uint8)
    sl = tuple(slice(s // 4, 3 * s // 4) for s in shape)
    lab[sl] = 2
    lab[tuple(slice(s // 3, s // 2) for s in shape)] = 5
    t = torch.as_tensor(affine)
    meta = {"space": "RAS"}
    return (MetaTensor(torch.from_numpy(img.astype(np.float32))[None], affine=t, meta=dict(meta)),
            MetaTensor(torch.from_numpy(lab)[None], affine=t.clone(), meta=dict(meta)))


def _cases():
    for name, spec in sorted(PRESETS.items()):
        geoms = GEOMETRIES_3D if spec.spatial_dims == 3 else GEOMETRIES_2D
        for g in sorted(geoms):
            yield pytest.param(name, g, id=f"{name}-{g}")


@pytest.mark.parametrize("preset,geom", list(_cases()))
def test_inverse_restores_geometry_and_labels_stay_labels(preset, geom):
    spec = PRESETS[preset]
    rng = np.random.default_rng(0)
    if spec.spatial_dims == 3:
        shape, affine = (22, 17, 9), GEOMETRIES_3D[geom]
    else:
        shape, affine = (60, 41), GEOMETRIES_2D[geom]
    overrides = {"long_side": 32} if spec.long_side else {}
    img, lab = _pair(shape, affine, rng, hu=preset.startswith("ct"))
    pre = preprocessing(preset, keys=("image",), label_key="label", **overrides)
    out = pre({"image": img, "label": lab})
    # labels were resampled by nearest neighbour: no new values appear
    assert set(np.unique(out["label"].numpy())) <= {0, 2, 5}
    assert set(np.unique(out["label"].numpy())) >= {2}
    if spec.target_spacing is not None:
        got = np.linalg.norm(np.asarray(out["image"].affine)[:3, :3], axis=0)
        np.testing.assert_allclose(got, spec.target_spacing, rtol=1e-5)
    if spec.axcodes is not None:
        assert "".join(nib.aff2axcodes(np.asarray(out["image"].affine))) == spec.axcodes
    if spec.long_side:
        assert tuple(out["image"].shape[1:]) == (32, 32)
    inv = pre.inverse(out)
    for key in ("image", "label"):
        assert tuple(inv[key].shape[1:]) == shape
        np.testing.assert_allclose(np.asarray(inv[key].affine), affine, atol=1e-5)


def test_label_world_position_survives_orientation_and_spacing():
    """The centre of a labelled block stays at the same RAS position (nibabel's apply_affine)."""
    affine = GEOMETRIES_3D["oblique"]
    img, lab = _pair((30, 24, 12), affine, np.random.default_rng(1))
    out = preprocessing("ct_abdomen", label_key="label")({"image": img, "label": lab})
    def centre(arr, aff, value):
        idx = np.argwhere(arr == value).mean(0)
        return nib.affines.apply_affine(aff, idx)
    before = centre(lab.numpy()[0], affine, 5)
    after = centre(out["label"].numpy()[0], np.asarray(out["label"].affine), 5)
    assert np.linalg.norm(before - after) < 1.5  # mm; target voxels are 1.5 x 1.5 x 2 mm


@pytest.mark.parametrize("preset", ["ct_abdomen", "ct_lung", "ct_spine"])
def test_ct_window_matches_canonical_nibabel(preset):
    """Without resampling, the preset equals nibabel's closest-canonical (RAS) array, windowed."""
    affine = GEOMETRIES_3D["flipped_lps"]
    rng = np.random.default_rng(2)
    vol = rng.uniform(-1200, 1500, size=(12, 10, 6)).astype(np.float32)
    img = MetaTensor(torch.from_numpy(vol)[None], affine=torch.as_tensor(affine), meta={"space": "RAS"})
    out = preprocessing(preset, target_spacing=None)({"image": img})["image"]
    canon = nib.as_closest_canonical(nib.Nifti1Image(vol, affine))
    lo, hi = PRESETS[preset].window
    expected = np.clip((canon.get_fdata() - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out.numpy()[0], expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.affine), canon.affine, atol=1e-6)


def test_mr_brain_zscore_on_nonzero():
    vol = np.zeros((16, 16, 8), np.float32)
    vol[4:12, 4:12, 2:6] = np.random.default_rng(3).normal(500, 80, size=(8, 8, 4))
    img = MetaTensor(torch.from_numpy(vol)[None], affine=torch.eye(4, dtype=torch.float64), meta={"space": "RAS"})
    out = preprocessing("mr_brain", target_spacing=None)({"image": img})["image"].numpy()[0]
    inside = vol != 0
    assert abs(out[inside].mean()) < 1e-4 and abs(out[inside].std() - 1) < 0.02
    assert np.all(out[~inside] == 0)


def test_fluo_percentiles_per_channel():
    rng = np.random.default_rng(4)
    arr = np.stack([rng.gamma(2, 10, (40, 30)), rng.gamma(2, 1000, (40, 30))]).astype(np.float32)
    img = MetaTensor(torch.from_numpy(arr), affine=torch.eye(4, dtype=torch.float64), meta={"space": "RAS"})
    out = preprocessing("fluo_nuclei")({"image": img})["image"].numpy()
    for c in range(2):
        lo, hi = np.percentile(arr[c], [1.0, 99.8])
        np.testing.assert_allclose(out[c], (arr[c] - lo) / (hi - lo), atol=1e-4)


def test_unknown_preset_and_bad_override():
    with pytest.raises(ConfigError, match="unknown preset"):
        preprocessing("ct_heart")
    with pytest.raises(ConfigError, match="no parameter"):
        get_preset("ct_lung", windw=(0, 1))
    with pytest.raises(ConfigError, match="low < high"):
        get_preset("ct_lung", window=(400, -1000))
