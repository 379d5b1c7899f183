"""segment(): labels on exactly the source grid, at the right WORLD position, with stated Dice.

Models are deterministic hand-set convolutions (a network built by ``build_network``):
* a bone threshold (> 300 HU) on the spine phantom -> vertebrae (Dice >= 0.93 vs the phantom's
  exact labels, for RAS, LPS and an oblique grid, through resampling to 2 mm and back);
* an intensity band (95..168 HU, "kidney") on the abdomen phantom -> the same voxels as the band
  computed directly on the source grid with numpy, and Dice >= 0.5 vs the kidney labels (the
  band also catches the IVC and partial-volume rims: a 1x1 model cannot do better, which the
  stated figure records).
World positions are checked with nibabel's ``apply_affine`` (independent of MONAI).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from medseg.data.phantoms import abdomen_ct, as_metatensors, spine_ct
from medseg.errors import ConfigError, ModelError
from medseg.inference import SegmentationModel, infer, segment
from medseg.inference.model import sha256_file
from medseg.models import build_network


def _rot(angle: float, axis: int) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


ORIENTATIONS = {"RAS": "RAS", "LPS": "LPS", "oblique": _rot(0.4, 2) @ _rot(0.15, 0)}


def bone_model(**kw) -> SegmentationModel:
    """class 1 where the ct_spine-normalised intensity exceeds that of 300 HU."""
    spec = {"arch": "conv", "spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    net = build_network(spec)
    t = (300.0 + 200.0) / 1400.0  # ct_spine window -200..1200 HU -> 0..1
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 50.0
        net.bias[1] = -50.0 * t
    args = dict(network=net, network_spec=spec, preset="ct_spine", labels={1: "vertebrae"}, roi_size=(40, 40, 40),
                overlap=0.25, preset_overrides={"target_spacing": (2.0, 2.0, 2.0)})
    args.update(kw)
    return SegmentationModel(**args)


def band_model(lo_hu: float, hi_hu: float) -> SegmentationModel:
    """3 classes: below / inside / above an HU band; only 'inside' (1) is a model label."""
    spec = {"arch": "conv", "spatial_dims": 3, "in_channels": 1, "out_channels": 3}
    net = build_network(spec)
    lo, hi = ((v + 160.0) / 400.0 for v in (lo_hu, hi_hu))  # ct_abdomen window -160..240 HU
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[0, 0], net.bias[0] = -200.0, 200.0 * lo
        net.weight[2, 0], net.bias[2] = 200.0, -200.0 * hi
    return SegmentationModel(network=net, network_spec=spec, preset="ct_abdomen", labels={1: "kidney"},
                             roi_size=(48, 48, 32), preset_overrides={"target_spacing": None})


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    metric = DiceMetric(include_background=True, reduction="mean")
    p = torch.from_numpy(pred.astype(np.float32))[None, None]
    t = torch.from_numpy(truth.astype(np.float32))[None, None]
    return float(metric(p, t).mean())


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, np.argwhere(mask).mean(0))


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_bone_model_on_spine_phantom_source_grid_world_position_and_dice(orientation):
    ph = spine_ct(shape=(40, 40, 48), spacing=(2.0, 2.0, 2.5), orientation=ORIENTATIONS[orientation], seed=3)
    image, _ = as_metatensors(ph)
    out = segment(image, bone_model(), progress=False)
    # exactly the source grid
    assert tuple(out.shape) == (1, *ph.image.shape)
    assert np.array_equal(np.asarray(out.affine), ph.affine)
    assert out.dtype == torch.uint8 and set(np.unique(out.numpy())) <= {0, 1}
    assert out.meta["kind"] == "label" and out.meta["labels"] == {1: "vertebrae"}
    pred = out.numpy()[0] == 1
    truth = ph.label > 0
    assert _dice(pred, truth) >= 0.93
    # the labelled region sits where the phantom's vertebrae are, in RAS mm
    dist = np.linalg.norm(_world_centroid(pred, ph.affine) - _world_centroid(truth, ph.affine))
    assert dist < 1.0


def test_flip_and_oblique_give_the_same_world_labels():
    """The same anatomy on an LPS and a RAS grid: label maps coincide voxel-for-voxel in world space."""
    a = spine_ct(shape=(32, 32, 40), spacing=(2.0, 2.0, 2.5), orientation="LPS", seed=5)
    b = spine_ct(shape=(32, 32, 40), spacing=(2.0, 2.0, 2.5), orientation="RAS", seed=5)
    la = segment(as_metatensors(a)[0], bone_model(), progress=False).numpy()[0]
    lb = segment(as_metatensors(b)[0], bone_model(), progress=False).numpy()[0]
    # map RAS-grid voxel (i, j, k) to the LPS grid through world coordinates (nibabel)
    idx = np.argwhere(lb == 1)
    world = nib.affines.apply_affine(b.affine, idx)
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(a.affine), world)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(la.shape)), axis=1)
    hits = la[tuple(ijk[inside].T)] == 1
    assert inside.mean() > 0.99 and hits.mean() > 0.97


def test_band_model_on_abdomen_phantom_matches_numpy_band_and_dice():
    ph = abdomen_ct(shape=(64, 64, 40), spacing=(3.0, 3.0, 4.0), orientation="LPS", seed=7)
    image, _ = as_metatensors(ph)
    # portal-venous phantom (the default): kidney cortex ~180 / medulla ~140 HU lie in the band,
    # liver ~105 / spleen ~120 below it; the aorta (~170) and IVC (~140) fall in it too
    out = segment(image, band_model(130.0, 200.0), progress=False)
    pred = out.numpy()[0]
    assert set(np.unique(pred)) <= {0, 1}  # class 2 ("above the band") is not a model label
    assert np.array_equal(np.asarray(out.affine), ph.affine)
    direct = (ph.image > 130.0) & (ph.image < 200.0)
    exact = (np.abs(ph.image - 130.0) > 0.01) & (np.abs(ph.image - 200.0) > 0.01)
    assert np.array_equal((pred == 1)[exact], direct[exact])
    kidneys = np.isin(ph.label, [3, 4])
    assert _dice(pred == 1, kidneys) >= 0.45
    # each kidney is found (recall), on its own side of the patient (RAS x > 0 is the right)
    for value, side in ((3, 1.0), (4, -1.0)):
        kidney = ph.label == value
        assert (pred[kidney] == 1).mean() >= 0.6
        assert side * _world_centroid(kidney & (pred == 1), ph.affine)[0] > 0


def test_tta_on_flip_invariant_model_and_meta():
    ph = spine_ct(shape=(32, 32, 40), spacing=(2.0, 2.0, 2.5), orientation="LPS", seed=2)
    image, _ = as_metatensors(ph)
    plain = infer(image, bone_model(), progress=False)
    tta = infer(image, bone_model(), tta=True, progress=False)
    assert tta.record.tta_disagreement == 0.0 and plain.record.tta_disagreement is None
    assert torch.equal(plain.labels.as_tensor(), tta.labels.as_tensor())


def test_2d_model_slice_by_slice_equals_3d_model():
    spec2 = {"arch": "conv", "spatial_dims": 2, "in_channels": 1, "out_channels": 2}
    m3 = bone_model()
    net2 = build_network(spec2)
    with torch.no_grad():
        net2.weight.copy_(m3.network.weight[..., 0])
        net2.bias.copy_(m3.network.bias)
    m2 = SegmentationModel(network=net2, network_spec=spec2, preset="ct_spine", labels={1: "vertebrae"},
                           roi_size=(40, 40), slice_by_slice=True,
                           preset_overrides={"target_spacing": (2.0, 2.0, 2.0)})
    ph = spine_ct(shape=(32, 32, 40), spacing=(2.0, 2.0, 2.5), orientation=ORIENTATIONS["oblique"], seed=4)
    image, _ = as_metatensors(ph)
    assert torch.equal(segment(image, m2, progress=False).as_tensor(), segment(image, m3, progress=False).as_tensor())
    m2.slice_by_slice = False
    with pytest.raises(ModelError, match="slice_by_slice"):
        segment(image, m2, progress=False)


def test_instance_task_splits_touching_blobs():
    """Two touching spheres of 'cell' intensity -> two instances (watershed on the distance map)."""
    shape = (40, 28, 28)
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    vol = np.full(shape, -500.0, np.float32)
    for ci in (12, 25):
        vol[(ii - ci) ** 2 + (jj - 14) ** 2 + (kk - 14) ** 2 <= 49] = 500.0
    from monai.data import MetaTensor

    image = MetaTensor(torch.from_numpy(vol)[None], affine=torch.eye(4, dtype=torch.float64))
    model = bone_model(task="instance", preset_overrides={"target_spacing": None},
                       postprocess={"instance": {"min_distance_mm": 4.0}})
    out = segment(image, model, progress=False)
    assert out.dtype == torch.int32
    ids = set(np.unique(out.numpy())) - {0}
    assert ids == {1, 2}
    a, b = out.numpy()[0, 12, 14, 14], out.numpy()[0, 25, 14, 14]
    assert a != b and a > 0 and b > 0


def _write_run(run, model: SegmentationModel):
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": model.network.state_dict(), "epoch": 3, "optimizer": {}},
               run / "checkpoints" / "best.pt")
    (run / "model_spec.json").write_text(json.dumps(model.to_spec()))


def test_from_run_dir_round_trip_and_errors(tmp_path):
    m = bone_model()
    run = tmp_path / "run"
    _write_run(run, m)
    loaded = SegmentationModel.from_run_dir(run)
    assert loaded.weights_sha256 == sha256_file(run / "checkpoints" / "best.pt")
    assert loaded.labels == {1: "vertebrae"} and loaded.roi_size == (40, 40, 40)
    assert loaded.preset_overrides == {"target_spacing": [2.0, 2.0, 2.0]}
    assert torch.equal(loaded.network.weight, m.network.weight)
    # weights that do not fit the spec
    spec = json.loads((run / "model_spec.json").read_text())
    spec["network"]["out_channels"] = 5
    (run / "model_spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="do not fit"):
        SegmentationModel.from_run_dir(run)
    (run / "model_spec.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        SegmentationModel.from_run_dir(run)
    with pytest.raises(ConfigError, match="no model_spec.json"):
        SegmentationModel.from_run_dir(tmp_path)
    # a checkpoint that is not torch weights: a one-line ModelError, not an unpickling traceback
    junk = tmp_path / "junk_run"
    _write_run(junk, m)
    (junk / "checkpoints" / "best.pt").write_bytes(b"\x80\x04junk that is not a torch file")
    with pytest.raises(ModelError, match="best.pt in junk_run is not a plain state dict and was not loaded"):
        SegmentationModel.from_run_dir(junk)


def test_wrong_inputs_raise_model_error():
    m = bone_model()
    with pytest.raises(ModelError, match="MetaTensor"):
        segment(torch.zeros(1, 8, 8, 8), m)
    from monai.data import MetaTensor

    with pytest.raises(ModelError, match="input channel"):
        segment(MetaTensor(torch.zeros(2, 8, 8, 8)), m)
    with pytest.raises(ModelError, match="3D model"):
        segment(MetaTensor(torch.zeros(1, 8, 8)), m)
    with pytest.raises(ConfigError):
        bone_model(overlap=1.5)
    with pytest.raises(ConfigError):
        bone_model(preset="ct_heart")


def test_2d_xray_model_returns_to_the_radiograph_grid():
    """xray_chest resizes (long side 64 here) and pads; labels come back on the source pixels."""
    from medseg.data.phantoms import chest_xray

    ph = chest_xray(shape=(120, 90), spacing=(1.4, 1.4), seed=1)
    image, _ = as_metatensors(ph)
    spec = {"arch": "conv", "spatial_dims": 2, "in_channels": 1, "out_channels": 2}
    net = build_network(spec)
    with torch.no_grad():  # class 1 below the middle of the normalised range (dark = lung fields)
        net.weight.zero_()
        net.bias.zero_()
        net.weight[0, 0], net.bias[0] = 50.0, -25.0
    model = SegmentationModel(network=net, network_spec=spec, preset="xray_chest", labels={1: "lung"},
                              roi_size=(64, 64), preset_overrides={"long_side": 64})
    out = segment(image, model, progress=False)
    assert tuple(out.shape) == (1, 120, 90)
    assert np.array_equal(np.asarray(out.affine), ph.affine)
    lo, hi = np.percentile(ph.image, [0.5, 99.5])
    direct = (ph.image - lo) / (hi - lo) < 0.5
    assert (direct == (out.numpy()[0] == 1)).mean() >= 0.95
