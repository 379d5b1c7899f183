"""ct_lung_lesion bundle, nodule by nodule, on a phantom it was not trained on.

* The network grid of the shipped bundle can represent the nodules: the TRUE label resampled to
  that grid (linear, thresholded at 0.5) and back (nearest), through the same
  ``medseg.inference.segment`` path with an oracle network, keeps Dice >= 0.97 (MONAI's
  ``compute_dice`` as the reference). The old 2 mm grid falls below that on the same phantom.
* Nodules are found at the right place in the world: each predicted component's centroid,
  mapped to RAS mm with nibabel's ``apply_affine``, lies within 2 mm of a centre the generator
  reports (RAS mm) -- a left/right flip would put it about 75 mm away -- and every nodule of
  radius >= 3.5 mm has such a component. On this grid, which the training set did not have
  (S-P-L axes), the smallest nodule (2.8 mm radius, ~90 mm^3) is missed: a known limit
  (docs/README.md of the bundle), so it is not required here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import compute_dice
from nibabel.affines import apply_affine
from scipy import ndimage

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ct_lung_lesion"
pytestmark = pytest.mark.skipif(not (BUNDLE / "configs" / "metadata.json").is_file(),
                                reason="ct_lung_lesion bundle not shipped")

SEED, ORIENTATION = 7002, "SPL"  # a seed and a grid outside the training plan


class _Oracle(torch.nn.Module):
    """Returns the input (true label as -1000 / 0 HU, windowed to 0 / 0.714) as class-1 logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x - 0.357], 1)


@pytest.fixture(scope="module")
def phantom():
    from medseg.data.phantoms import lung_ct

    return lung_ct(seed=SEED, orientation=ORIENTATION, n_nodules=3)


@pytest.fixture(scope="module")
def model():
    from medseg.bundle import load_bundle

    return load_bundle("ct_lung_lesion")


def _mt(a: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None],
                      affine=torch.as_tensor(affine, dtype=torch.float64), meta={"space": "RAS"})


def _monai_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    p = torch.from_numpy(np.stack([~pred, pred]).astype(np.float32))[None]
    r = torch.from_numpy(np.stack([~ref, ref]).astype(np.float32))[None]
    return float(compute_dice(p, r, include_background=False)[0, 0])


def _oracle_dice(model, phantom, spacing_mm: float | None) -> float:
    from medseg.inference import segment

    over = dict(model.preset_overrides)
    if spacing_mm is not None:
        over["target_spacing"] = [spacing_mm] * 3
    oracle = dataclasses.replace(model, network=_Oracle(), postprocess={}, preset_overrides=over)
    ref = phantom.label > 0
    pred = segment(_mt(ref.astype(np.float32) * 1000 - 1000, phantom.affine), oracle, device="cpu",
                   progress=False)[0].numpy() > 0
    return _monai_dice(pred, ref)


def test_network_grid_keeps_the_nodules(model, phantom):
    assert (phantom.label > 0).sum() > 100
    shipped = _oracle_dice(model, phantom, None)
    coarse = _oracle_dice(model, phantom, 2.0)
    assert shipped >= 0.97, f"the bundle's grid loses the nodules: upper bound Dice {shipped:.3f}"
    assert coarse < shipped  # the 2 mm grid the bundle left behind loses boundary voxels


def test_nodules_found_at_their_world_positions(model, phantom):
    from medseg.inference import segment

    pred = segment(_mt(phantom.image, phantom.affine), model, device="cpu", progress=False)
    assert np.allclose(np.asarray(pred.affine), phantom.affine)
    p = pred[0].numpy() > 0
    cc, n = ndimage.label(p, structure=ndimage.generate_binary_structure(3, 3))
    nodules = phantom.meta["nodules"]
    centres = np.array([nod["centre_ras_mm"] for nod in nodules])
    assert n >= 1
    found = set()
    for i in range(1, n + 1):
        c_ras = apply_affine(phantom.affine, np.argwhere(cc == i).mean(axis=0))
        d = np.linalg.norm(centres - c_ras, axis=1)
        assert d.min() < 2.0, f"component {i} is {d.min():.1f} mm from the nearest nodule"
        found.add(int(d.argmin()))
    big = {k for k, nod in enumerate(nodules) if nod["radius_mm"] >= 3.5}
    assert len(big) >= 2 and big <= found, f"nodules {sorted(big - found)} (radius >= 3.5 mm) missed"
    assert _monai_dice(p, phantom.label > 0) >= 0.7
