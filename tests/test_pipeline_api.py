"""medseg.pipeline("segmentation"): one entry per class / per object, masks on the source grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

import medseg
from medseg.errors import ConfigError
from medseg.pipelines import entries


def test_semantic_instance_panoptic_entries_brute_force():
    rng = np.random.default_rng(0)
    lab = np.zeros((40, 40, 10), np.uint8)
    lab[2:8, 2:8, 2:5] = 1
    lab[20:25, 20:25, 2:5] = 1  # a second lesion of class 1
    lab[30:35, 5:10, 5:8] = 2
    probs = rng.random((3, 40, 40, 10)).astype(np.float32)
    sem = entries(lab, {1: "lesion", 2: "organ"}, "semantic", "semantic", probs=probs)
    assert [e["label"] for e in sem] == ["lesion", "organ"]
    assert np.array_equal(sem[0]["mask"], lab == 1)
    assert sem[0]["score"] == pytest.approx(float(probs[1][lab == 1].mean()))
    inst = entries(lab, {1: "lesion", 2: "organ"}, "semantic", "instance", probs=probs)
    n1 = ndimage.label(lab == 1, structure=np.ones((3, 3, 3)))[1]
    assert len(inst) == n1 + 1 and sum(e["label"] == "lesion" for e in inst) == 2
    assert np.array_equal(np.logical_or.reduce([e["mask"] for e in inst]), lab > 0)
    pan = entries(lab, {1: "lesion", 2: "organ"}, "semantic", "panoptic", probs=probs)
    assert [e["kind"] for e in pan] == ["class", "class", "object", "object", "object"]


def test_classical_pipeline_on_a_world_grid():
    arr = np.zeros((30, 30), np.float32)
    arr[5:10, 5:10] = 100
    arr[20:26, 20:26] = 100
    img = MetaTensor(torch.from_numpy(arr)[None], affine=torch.from_numpy(np.diag([-0.5, 0.5, 1.0, 1.0])))
    out = medseg.pipeline("segmentation", model="otsu", subtask="instance")(img)
    assert sorted(int(e["mask"].sum()) for e in out) == [25, 36]
    assert all(e["score"] is None and e["mask"].shape == (30, 30) for e in out)
    gmm = medseg.pipeline("segmentation", model="gmm:2")(img)
    assert len(gmm) == 1 and 0.5 < gmm[0]["score"] <= 1.0


def test_nuclei_bundle_objects_with_scores():
    """The instance bundle on a 128x128 crop of the real stardist image: one entry per nucleus."""
    import medseg.io
    from medseg.data import sample
    from medseg.inference.segmentation import segment

    img = medseg.io.load(sample("nuclei_image"))
    crop = MetaTensor(img.as_tensor()[:, :128, :128].clone(), affine=img.affine.clone(), meta=dict(img.meta))
    pipe = medseg.pipeline("segmentation", model="fluo_nuclei_2d")
    out = pipe(crop)
    labels = segment(crop, pipe.model, progress=False).numpy()[0]
    assert len(out) == len([v for v in np.unique(labels) if v]) > 3
    assert all(0.0 < e["score"] <= 1.0 and e["label"] == out[0]["label"] for e in out)
    assert np.array_equal(np.logical_or.reduce([e["mask"] for e in out]), labels > 0)


def test_pipeline_refuses_unknown_task():
    with pytest.raises(ConfigError):
        medseg.pipeline("depth-estimation", model="otsu")
    with pytest.raises(ConfigError):
        medseg.pipeline("segmentation", model="otsu", subtask="amodal")
