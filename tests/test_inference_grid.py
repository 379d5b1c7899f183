"""Separable axis-aligned resampling (medseg.inference.grid) against MONAI's Spacing / Invertd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.inference.grid import gather_axes, monai_nearest_indices, resample_linear, separable_map
from medseg.inference.segmentation import _separable_plan

# (axis permutation, signs, spacing mm): stored axis i points along world axis perm[i]
CASES = [
    ((0, 1, 2), (-1, -1, 1), (0.8, 0.8, 2.0)),   # LPS-stored CT
    ((2, 0, 1), (1, -1, -1), (0.7, 1.1, 3.0)),   # permuted and flipped
    ((0, 1, 2), (1, 1, 1), (1.5, 1.5, 2.0)),     # already on the target grid
    ((1, 0, 2), (1, 1, 1), (0.5, 0.5, 0.5)),     # 3x coarser target, ties on the way back
]


def _affine(perm, signs, spacing, origin):
    aff = np.eye(4)
    aff[:3, :3] = 0
    for i, (p, s) in enumerate(zip(perm, signs, strict=True)):
        aff[p, i] = s * spacing[i]
    aff[:3, 3] = origin
    return aff


def _monai_geometry():
    import monai.transforms as mt

    return [mt.Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            mt.Spacingd(keys="image", pixdim=(1.5, 1.5, 2.0), mode="bilinear", padding_mode="border")]


@pytest.mark.parametrize("perm,signs,spacing", CASES)
def test_linear_and_nearest_match_monai(perm, signs, spacing):
    import monai.transforms as mt
    from monai.data import MetaTensor

    rng = np.random.default_rng(sum(perm) + int(10 * spacing[0]))
    aff = _affine(perm, signs, spacing, rng.uniform(-100, 100, 3))
    shape = (37, 29, 23)
    vol = torch.from_numpy(rng.normal(size=(1, *shape)).astype(np.float32))
    geo = _monai_geometry()
    data = {"image": MetaTensor(vol.clone(), affine=torch.tensor(aff))}
    for t in geo:
        data = t(data)
    ref = data["image"]
    net_shape = tuple(ref.shape[1:])

    maps = separable_map(aff, ref.affine)
    assert maps is not None
    ours = resample_linear(vol, maps, net_shape)
    assert ours.shape == ref.shape
    assert float((ours - ref.as_tensor()).abs().max()) < 1e-5

    # back to the source grid, nearest: labels = a distinct value per network voxel, so any
    # voxel copied from another network voxel than MONAI's Invertd picks shows up
    lab = torch.arange(int(np.prod(net_shape)), dtype=torch.float32).reshape(1, *net_shape)
    pred = MetaTensor(lab.clone(), affine=ref.affine.clone(),
                      meta={k: v for k, v in ref.meta.items() if k != "affine"})
    pred.applied_operations = list(ref.applied_operations)
    inv = mt.Invertd(keys="pred", transform=mt.Compose(geo), orig_keys="image",
                     nearest_interp=True)({"image": ref, "pred": pred})["pred"]
    assert np.allclose(inv.affine, aff, atol=1e-4)
    src = MetaTensor(vol, affine=torch.tensor(aff))
    plan = _separable_plan("ct_abdomen", src, {})
    assert plan is not None
    grid, _, back = plan
    assert grid.shape == net_shape and np.allclose(grid.affine, ref.affine)
    mine = gather_axes(lab.to(torch.int32), back)
    assert mine.dtype == torch.int32 and mine.shape == inv.shape
    assert torch.equal(mine.to(torch.float32), inv.as_tensor())


def test_nearest_copies_labels_only():
    lab = torch.tensor([[[[0, 3], [7, 255]]]], dtype=torch.uint8)  # (1, 1, 2, 2)
    picks = monai_nearest_indices(np.diag([2.0, 2.0, 2.0, 1.0]), (1, 2, 2), np.eye(4), (2, 4, 4))
    assert [p.tolist() for p in picks] == [[0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    out = gather_axes(lab, list(enumerate(picks)))
    assert out.dtype == torch.uint8 and out.shape == (1, 2, 4, 4)
    assert set(out.unique().tolist()) == {0, 3, 7, 255}


def test_oblique_pair_is_not_separable():
    theta = np.deg2rad(15)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    assert separable_map(rot, np.eye(4)) is None
    assert separable_map(np.eye(4), np.diag([1.5, 1.5, 2.0, 1.0])) is not None


def test_2d_image_with_a_4x4_affine():
    """2D pictures carry a 4x4 affine whose third axis is unused: the in-plane block is mapped."""
    aff = np.diag([0.5, 0.25, 1.0, 1.0])
    img = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    maps = separable_map(aff, aff, n_spatial=2)
    assert [(m.in_axis, m.scale, m.offset) for m in maps] == [(0, 1.0, 0.0), (1, 1.0, 0.0)]
    assert torch.equal(resample_linear(img, maps, (3, 4)), img)
    coarse = np.diag([1.0, 0.25, 1.0, 1.0])  # half as many rows, same origin
    down = separable_map(aff, coarse, n_spatial=2)
    np.testing.assert_allclose(resample_linear(img, down, (2, 4))[0, :, 0].numpy(), [0.0, 8.0])
    tilted = aff.copy()
    tilted[2, 0] = 0.3  # the rows step out of the image plane
    assert separable_map(tilted, aff, n_spatial=2) is None
