"""nnU-Net v2 models with many classes: medseg's class-by-class export against nnU-Net's own.

References: (1) what ``nnUNetv2_predict_from_modelfolder -device cpu`` wrote for a 105-class model
(tests/data/nnunet_many, built by tests/nnunet_many.py) on the tiny fixture's LPS, oblique-flipped
and thick-slice inputs; (2) nnunetv2's ``convert_predicted_logits_to_segmentation_with_correct_shape``
called on the same float16 logits, which the export must equal voxel for voxel while its peak
memory (tracemalloc: numpy's allocations) stays a fraction of nnU-Net's.
"""

from __future__ import annotations

import pathlib
import sys
import tracemalloc

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import nnunet_many as many  # noqa: E402

FIXTURE = pathlib.Path(__file__).parent / "data" / "nnunet_many"
INPUTS = pathlib.Path(__file__).parent / "data" / "nnunet_tiny" / "inputs"
MIN_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def nnunet():
    return pytest.importorskip("nnunetv2")


def _agreement(model: pathlib.Path, predictions: pathlib.Path, case: str) -> float:
    import medseg.io
    from medseg.inference.sources.nnunet import NnunetOptions, NnunetV2Source

    image = medseg.io.load(INPUTS / f"{case}_0000.nii.gz")
    src = NnunetV2Source(model, NnunetOptions(folds=(0,)))
    ours = src.predict(image, device="cpu", progress=False)
    ref = medseg.io.load(predictions / f"{case}.nii.gz", kind="label")
    assert tuple(ours.shape) == tuple(ref.shape) == tuple(image.shape)
    np.testing.assert_allclose(np.asarray(ours.affine), np.asarray(image.affine), atol=0)
    a, b = ours.numpy()[0].astype(np.int64), ref.numpy()[0].astype(np.int64)
    values, counts = np.unique(b, return_counts=True)
    assert len(values) >= 5 and 1 - counts.max() / b.size >= 0.3, (case, values, counts)  # many classes in play
    return float((a == b).mean())


def test_many_classes_match_nnunetv2_predict(nnunet):
    model = FIXTURE / "models" / many.FOLDER
    assert len(__import__("json").loads((model / "dataset.json").read_text())["labels"]) == 105
    for case in ("lps", "oblique_ras", "aniso"):
        agree = _agreement(model, FIXTURE / "predictions" / "3d_fullres_f0", case)
        print(case, agree)
        assert agree >= MIN_AGREEMENT, (case, agree)


def _managers(model: pathlib.Path):
    import json

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(json.loads((model / "plans.json").read_text()))
    cm = pm.get_configuration("3d_fullres")
    lm = pm.get_label_manager(json.loads((model / "dataset.json").read_text()))
    return pm, cm, lm


@pytest.mark.parametrize("spacing, bbox", [
    ((2.5, 1.5, 1.5), None),             # the network grid: no resampling, argmax only
    ((1.0, 1.0, 1.2), [[1, 39], [2, 35], [0, 30]]),   # finer source grid, cropped
    ((6.0, 1.2, 1.2), None),             # thick slices: separate z resampling
])
def test_export_equals_nnunet_export_with_less_memory(nnunet, spacing, bbox):
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )

    from medseg.inference.sources.nnunet_export import logits_to_labels

    pm, cm, lm = _managers(FIXTURE / "models" / many.FOLDER)
    rng = np.random.default_rng(3)
    net_shape = (16, 24, 20)
    # float16 logits with coarse values, so that many voxels tie between classes after resampling
    logits = (rng.integers(-8, 8, size=(lm.num_segmentation_heads, *net_shape)) / 4).astype(np.float16)
    cropped = tuple(int(round(n * s / t)) for n, s, t in zip(net_shape, cm.spacing, spacing, strict=True))
    if bbox is None:
        before, box = cropped, [[0, c] for c in cropped]
    else:
        box = [[b[0], b[0] + c] for b, c in zip(bbox, cropped, strict=True)]
        before = tuple(b[1] + 3 for b in box)
    props = {"spacing": list(spacing), "shape_before_cropping": before, "bbox_used_for_cropping": box,
             "shape_after_cropping_and_before_resampling": cropped}
    import torch

    tracemalloc.start()
    ref = convert_predicted_logits_to_segmentation_with_correct_shape(torch.from_numpy(logits.copy()), pm, cm, lm,
                                                                      dict(props))
    theirs = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tracemalloc.start()
    ours = logits_to_labels(torch.from_numpy(logits.copy()), dict(props), pm, cm, lm)
    mine = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ref = np.asarray(ref)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    np.testing.assert_array_equal(ours, ref)
    assert len(np.unique(ref)) > 20
    # both are given the same float16 logits (allocated inside each traced window): nnU-Net's export
    # adds C x grid float64 and C x source float16 copies, ours a few source-sized arrays; without
    # resampling both only take the argmax (nnU-Net's is int64, ours uint8)
    print(spacing, "peak bytes nnU-Net", theirs, "medseg", mine)
    if cropped != net_shape:
        assert mine <= 0.25 * theirs, (mine, theirs)
    else:
        assert mine <= 1.05 * theirs, (mine, theirs)


@pytest.mark.slow
def test_rebuilt_many_class_model_matches_live_nnunetv2_predict(nnunet, tmp_path):
    """Another class count and seed, predicted live by nnUNetv2_predict_from_modelfolder."""
    model = many.build_model(tmp_path / "models", n_classes=64, seed=5, patch_size=[16, 32, 32])
    pred = many.predict_reference(model, INPUTS, tmp_path / "pred")
    for case in ("lps", "oblique_ras", "aniso"):
        agree = _agreement(model, pred, case)
        print(case, agree)
        assert agree >= MIN_AGREEMENT, (case, agree)


def test_totalsegmentator_style_parts_cli_dicom_seg(nnunet, tmp_path):
    """Two nnU-Net folders as TotalSegmentator's parts (`--model A --model B`) on a DICOM series:
    one label map (A's classes 1..104, B's 105..108; A wins a voxel both label, B fills the rest),
    and one DICOM SEG whose segments carry each dataset.json's names (SNOMED-coded where medseg.labels
    knows them, free text otherwise; a name A already used gets B's folder name appended)."""
    import highdicom as hd

    import medseg.io
    from medseg import cli
    from medseg.data.phantoms import abdomen_ct, save_phantom
    from medseg.inference.sources.nnunet import NnunetOptions, NnunetV2Source

    part_a = FIXTURE / "models" / many.FOLDER
    part_b = INPUTS.parent / "models" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    ph = abdomen_ct(shape=(40, 40, 24), spacing=(1.5, 1.5, 2.5), orientation="LPS", seed=506)
    save_phantom(ph, tmp_path / "dcm", "dicom")
    series = tmp_path / "dcm" / "image"
    out = tmp_path / "out"
    assert cli.main(["segment", str(series), "--model", str(part_a), "--model", str(part_b), "--folds", "0",
                     "--output", str(out), "--format", "nifti,dicom-seg"]) == 0
    (case,) = list(out.iterdir())
    both = medseg.io.load(case / "seg.nii.gz", kind="label").numpy()[0].astype(int)
    image = medseg.io.load(series)
    a = NnunetV2Source(part_a, NnunetOptions(folds=(0,))).predict(image, progress=False).numpy()[0].astype(int)
    b = NnunetV2Source(part_b, NnunetOptions(folds=(0,))).predict(image, progress=False).numpy()[0].astype(int)
    np.testing.assert_array_equal(both, np.where(a > 0, a, np.where(b > 0, b + 104, 0)))
    assert ((a > 0) & (b > 0)).any() and ((a == 0) & (b > 0)).any()  # both halves of the rule are used
    seg = hd.seg.segread(case / "seg.dcm")
    descs = {int(i): seg.get_segment_description(i) for i in seg.segment_numbers}
    present = set(np.unique(both)) - {0}
    assert len(descs) == len(present)
    coded = {d.SegmentLabel.lower(): d.SegmentedPropertyTypeCodeSequence[0] for d in descs.values()}
    assert "liver" in coded and coded["liver"].CodingSchemeDesignator == "SCT"
    free = [d for d in descs.values() if d.SegmentLabel.startswith("structure_")]
    assert free, "expected some free-text classes (structure_NNN) in the output"
    assert any("(nnUNetTrainer__nnUNetPlans__3d_fullres)" in d.SegmentLabel for d in descs.values())
