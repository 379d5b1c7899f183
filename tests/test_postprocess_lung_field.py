"""``lung_field`` postprocess: lesion components outside the lungs are dropped, lesions in the lungs
(nodules inside the parenchyma, a nodule on the pleura) are kept.

Inputs are chest CT phantoms (``medseg.data.phantoms.lung_ct``) in HU; the truth is the phantom's
own nodule labels and its separately generated lung labels (``lung_labels=True``), never the
postprocess's own lung field.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.data.phantoms import lung_ct
from medseg.errors import ConfigError, ModelError
from medseg.transforms.postprocess import apply_postprocess, keep_in_lung_field, validate_postprocess

WINDOW = [-1000.0, 400.0]
CFG = {"lung_field": {"input_window_hu": WINDOW, "closing_mm": 10.0, "min_fraction": 0.5}}


def _case(seed: int = 3, orientation: str = "LPS"):
    ph = lung_ct(seed=seed, orientation=orientation, n_nodules=2)
    lungs = lung_ct(seed=seed, orientation=orientation, n_nodules=2, lung_labels=True).label > 0
    spacing = tuple(float(s) for s in np.linalg.norm(ph.affine[:3, :3], axis=0))
    return ph, lungs, spacing


def _ball(shape, centre, radius_vox):
    idx = np.indices(shape)
    return sum((idx[d] - centre[d]) ** 2 for d in range(3)) <= radius_vox ** 2


def _false_lesions(ph, lungs, spacing):
    """A lesion-sized blob in the body > 20 mm from both lungs, and one in the air of the array's
    corner (outside the body: a blanket or gown reads like ground glass)."""
    body = ph.image > -500
    far = ndimage.distance_transform_edt(~lungs, sampling=spacing) > 20
    inside = np.argwhere(ndimage.binary_erosion(body & far, iterations=3))
    assert len(inside)
    corner = _ball(ph.label.shape, (3, 3, ph.label.shape[2] // 2), 2)
    assert (ph.image[corner] < -900).all()
    return [_ball(ph.label.shape, inside[len(inside) // 2], 2) & body, corner]


@pytest.mark.parametrize("seed,orientation", [(3, "LPS"), (5, "RAS"), (8, "PIL")])
def test_lesions_outside_the_lungs_are_dropped_and_nodules_kept(seed, orientation):
    ph, lungs, spacing = _case(seed, orientation)
    assert ph.label.any()
    labels = ph.label.copy()
    fakes = _false_lesions(ph, lungs, spacing)
    for f in fakes:
        labels[f] = 1
    out = keep_in_lung_field(labels, ph.image, spacing, ph.affine)
    np.testing.assert_array_equal(out, ph.label)
    # through the postprocess dict, with the network input scaled 0..1 by the preset's window
    scaled = np.clip((ph.image - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1)
    np.testing.assert_array_equal(apply_postprocess(labels, spacing, CFG, affine=ph.affine, image=scaled), ph.label)


def test_a_nodule_on_the_pleura_is_kept_by_the_closing():
    """A soft-tissue nodule touching the chest wall is no hole in the lung's gas: the per-slice
    filling misses it, the 10 mm closing takes it in."""
    ph, lungs, spacing = _case(3, "LPS")
    # the lateral edge of the right lung (RAS x > 0 is the patient's right) on its middle slice
    world_x = np.tensordot(ph.affine[0, :3], np.indices(lungs.shape), axes=1) + ph.affine[0, 3]
    right = lungs & (world_x > 0)
    k = int(np.argwhere(right).mean(axis=0)[2])
    assert ph.affine[2, 2] != 0 and not ph.affine[2, :2].any()  # LPS: voxel axis 2 is the axial one
    edge = np.argwhere(right[..., k] & ~ndimage.binary_erosion(right[..., k]))
    i, j = edge[np.argmax(world_x[edge[:, 0], edge[:, 1], k])]  # the lung outline's most lateral point
    centre = np.array([i, j, k], dtype=float)
    towards = np.argwhere(right).mean(axis=0) - centre
    centre += towards / np.linalg.norm(towards) * 1.5  # mostly inside the lung, bulging into it
    nodule = _ball(lungs.shape, centre, 4)  # 6 mm radius
    assert (nodule & ~lungs & (ph.image > -500)).any(), "the test nodule must reach into the chest wall"
    image = ph.image.copy()
    image[nodule] = 30.0
    labels = np.where(nodule, 1, ph.label).astype(np.uint8)
    out = keep_in_lung_field(labels, image, spacing, ph.affine)
    np.testing.assert_array_equal(out, labels)
    without_closing = keep_in_lung_field(labels, image, spacing, ph.affine, closing_mm=0.0)
    assert not without_closing[nodule].any()


def test_config_errors_are_one_line_config_errors():
    ph, _, spacing = _case()
    for bad in ({"lung_field": {"closing_mm": 10.0}}, {"lung_field": {"input_window_hu": [400, -1000]}},
                {"lung_field": {"input_window_hu": WINDOW, "min_fraction": 2}},
                {"lung_field": {"input_window_hu": WINDOW, "margin": 3}}, {"lung_field": [-1000, 400]}):
        with pytest.raises(ConfigError, match="lung_field"):
            validate_postprocess(bad)
    with pytest.raises(ConfigError, match="image"):
        apply_postprocess(ph.label, spacing, CFG, affine=ph.affine)
    with pytest.raises(ConfigError, match="3D"):
        keep_in_lung_field(ph.label[..., 0], ph.image[..., 0], spacing[:2], ph.affine)


def test_segment_refuses_a_window_that_is_not_the_preset_s():
    import torch
    from monai.data import MetaTensor

    from medseg.inference import SegmentationModel, segment
    from medseg.models import build_network

    spec = {"arch": "conv", "spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    model = SegmentationModel(network=build_network(spec), network_spec=spec, preset="ct_lung", labels={1: "lung_nodule"},
                              roi_size=(32, 32, 32), preset_overrides={"target_spacing": None},
                              postprocess={"lung_field": {"input_window_hu": [-1000, 500]}})
    ph, _, _ = _case()
    mt = MetaTensor(torch.from_numpy(ph.image)[None], affine=torch.as_tensor(ph.affine), meta={"space": "RAS"})
    with pytest.raises(ModelError, match="not the window"):
        segment(mt, model, device="cpu", progress=False)
