"""The MONAI path applies medseg's postprocessing: ``python -m monai.bundle run`` on a bundle's
inference.json gives the SAME label map as ``medseg segment --bundle`` (voxel for voxel, instances
included), through ``medseg.transforms.monai_postprocess.MedsegPostprocessd`` on the network grid,
a ``_target_`` the bundle trust policy accepts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_bundle_build import make_tiny_bundle, shared_bundle

from medseg.bundle.configs import MEDSEG_POSTPROCESS_TARGET


def _monai_run(bundle: Path, dataset_dir: Path, out_dir: Path) -> None:
    pytest.importorskip("ignite", reason="MONAI's bundle workflow needs pytorch-ignite")
    pytest.importorskip("fire", reason="`python -m monai.bundle` needs fire")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json"),
           "--bundle_root", str(bundle), "--dataset_dir", str(dataset_dir), "--output_dir", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MEDSEG_PROGRESS": "0"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _segment_both_ways(bundle: Path, images: list[Path], tmp_path: Path, capsys) -> list[tuple]:
    """Per image (all in one folder): (medseg's seg.nii.gz, MONAI's <stem>_seg.nii.gz) as nibabel
    images. Float32 networks on both sides (``--no-amp``), so the argmax maps agree before
    postprocessing; one ``monai.bundle run`` for the whole folder."""
    import nibabel as nib

    from medseg import cli

    pairs = []
    for image in images:
        out = tmp_path / "medseg" / image.name.split(".nii")[0]
        assert cli.main(["segment", str(image), "--bundle", str(bundle), "--output", str(out),
                         "--format", "nifti", "--no-amp"]) == 0
        pairs.append([nib.load(str(next(out.rglob("seg.nii.gz"))))])
    capsys.readouterr()
    _monai_run(bundle, images[0].parent, tmp_path / "monai")
    for image, pair in zip(images, pairs, strict=True):
        pair.append(nib.load(str(tmp_path / "monai" / f"{image.name.split('.nii')[0]}_seg.nii.gz")))
    return [tuple(p) for p in pairs]


def test_semantic_postprocess_gives_the_same_voxels_both_ways(tmp_path_factory, tmp_path,
                                                              capsys):
    """min_component_mm3 (per class, mm^3) + keep_largest_component + fill_holes, on two LPS
    phantoms: one anisotropic (reoriented AND resampled, so Invertd resamples back), one on the
    preset's spacing (the network grid is the source grid flipped, so components can be counted)."""
    import nibabel as nib
    from monai.data import MetaTensor
    from scipy import ndimage

    from medseg.bundle import run_inference_config
    from medseg.data.phantoms import abdomen_ct
    from medseg.io import save

    pp = {"min_component_mm3": {"1": 40.0, "2": 15.0}, "keep_largest_component": [2], "fill_holes": True}
    bundle = make_tiny_bundle(tmp_path / "b", name="tiny_pp", postprocess=pp)
    cfg = json.loads((bundle / "configs/inference.json").read_text())
    post = cfg["postprocessing"]["transforms"]
    assert [t["_target_"] for t in post] == ["Activationsd", "AsDiscreted", MEDSEG_POSTPROCESS_TARGET, "Invertd",
                                             "SaveImaged"]
    assert post[2]["postprocess"] == pp
    assert json.loads((bundle / "configs/medseg.json").read_text())["monai_path_skips_postprocess"] == []
    assert "nothing (identical)" in (bundle / "docs/README.md").read_text()

    images = []
    for name, shape, spacing in (("abd_aniso", (40, 36, 20), (1.5, 1.6, 2.5)),
                                 ("abd_grid", (36, 32, 16), (1.5, 1.5, 2.0))):
        ph = abdomen_ct(shape=shape, spacing=spacing, orientation="LPS", seed=3)
        images.append(tmp_path / "in" / f"{name}.nii.gz")
        save(MetaTensor(ph.image[None], affine=ph.affine), images[-1])
    results = []
    for image, (ours, theirs) in zip(images, _segment_both_ways(bundle, images, tmp_path, capsys), strict=True):
        src = nib.load(str(image))
        for img in (ours, theirs):
            assert img.shape[:3] == src.shape
            np.testing.assert_allclose(img.affine, src.affine, atol=1e-4)
        a, b = (np.squeeze(np.asarray(i.dataobj)).astype(np.int64) for i in (ours, theirs))
        assert np.array_equal(a, b), f"{image.name}: {int((a != b).sum())} voxels differ"
        assert set(np.unique(a).tolist()) == {0, 1, 2}
        results.append(b)
    # the steps were applied on the MONAI path: one face-connected spleen component, and the same
    # weights without postprocessing (the shared tiny bundle, run through its inference.json) give
    # several components and other voxels
    face = ndimage.generate_binary_structure(3, 1)
    b = results[1]
    assert ndimage.label(b == 2, structure=face)[1] == 1
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / images[1].name).write_bytes(images[1].read_bytes())
    [plain] = run_inference_config(shared_bundle(tmp_path_factory), tmp_path / "grid", tmp_path / "plain",
                                   progress=False)
    c = np.squeeze(np.asarray(nib.load(str(plain)).dataobj)).astype(np.int64)
    assert ndimage.label(c == 2, structure=face)[1] > 1
    assert int((b != c).sum()) > 100


def _run_from_bundle(src: Path, run: Path) -> Path:
    """A training run folder (model_spec.json + best.pt) holding a shipped bundle's trained weights."""
    import torch

    cfg = json.loads((src / "configs/medseg.json").read_text())
    (run / "checkpoints").mkdir(parents=True)
    (run / "model_spec.json").write_text(json.dumps({
        "network": cfg["network"], "preset": cfg["preset"], "labels": cfg["labels"], "task": cfg["task"],
        "inference": {"roi_size": cfg["roi_size"], "overlap": cfg["overlap"],
                      "sw_batch_size": cfg["sw_batch_size"], "postprocess": cfg["postprocess"]}}))
    torch.save({"state_dict": torch.load(src / "models/model.pt", weights_only=True)}, run / "checkpoints/best.pt")
    return run


def test_instance_bundle_gives_the_same_nuclei_both_ways(tmp_path, capsys):
    """The trained fluo_nuclei_2d weights on the real stardist image (its held-out right quarter):
    the MONAI path writes the same instance-ID map as medseg, not the semantic one."""
    import nibabel as nib
    from skimage.measure import label as sk_label

    from medseg.bundle import build_bundle
    from medseg.data import sample
    from medseg.io import load, save

    shipped = Path(__file__).resolve().parents[1] / "bundles" / "fluo_nuclei_2d"
    run = _run_from_bundle(shipped, tmp_path / "run")
    bundle = build_bundle(run, tmp_path / "nuclei", name="nuclei")
    post = json.loads((bundle / "configs/inference.json").read_text())["postprocessing"]["transforms"]
    assert post[2]["_target_"] == MEDSEG_POSTPROCESS_TARGET and post[2]["task"] == "instance"
    assert post[-1]["output_dtype"] == "int32"  # more than 255 nuclei must not wrap

    image = tmp_path / "in" / "nuclei_right.nii.gz"
    save(load(sample("nuclei_image"))[:, 384:], image)
    [(ours, theirs)] = _segment_both_ways(bundle, [image], tmp_path, capsys)
    assert theirs.get_data_dtype() == np.int32
    np.testing.assert_allclose(theirs.affine, nib.load(str(image)).affine, atol=1e-5)
    a, b = (np.squeeze(np.asarray(i.dataobj)).astype(np.int64) for i in (ours, theirs))
    assert a.shape == b.shape == (128, 512)
    assert np.array_equal(a, b), f"{int((a != b).sum())} pixels differ"
    n = int(b.max())
    assert sorted(np.unique(b).tolist()) == list(range(n + 1)) and n >= 15
    # instances, not a 2-class semantic map: touching nuclei were split (more IDs than
    # face-connected foreground blobs) and each ID is one connected piece
    assert n > int(sk_label(b > 0, connectivity=1).max())
    assert all(int(sk_label(b == i, connectivity=2).max()) == 1 for i in range(1, n + 1))


def test_plan_keeps_monai_native_largest_component_and_masks_unlabelled_outputs():
    from medseg.bundle.configs import monai_postprocess_plan

    steps = monai_postprocess_plan({"keep_largest_component": [1]}, labels={"1": "a", "2": "b"}, n_out=3)
    assert [s["_target_"] for s in steps] == ["KeepLargestConnectedComponentd"]
    # a 4-channel head with labels 1 and 3 only: argmax index 2 must become 0, as medseg does
    steps = monai_postprocess_plan({}, labels={"1": "a", "3": "c"}, n_out=4)
    assert steps[0]["_target_"] == MEDSEG_POSTPROCESS_TARGET and steps[0]["labels"] == [1, 3]
    # medseg loads such a bundle without --trust-bundle: the policy accepts the step as written
    from medseg.bundle.trust import find_untrusted

    assert find_untrusted({"postprocessing": {"transforms": steps}}) == []


def test_monai_fill_holes_and_remove_small_objects_differ_from_medseg():
    """Why the builder does not use MONAI's FillHolesd / RemoveSmallObjectsd: on label maps they
    are not voxel-identical to medseg's operations (counterexamples)."""
    import torch
    from monai.transforms import FillHoles, RemoveSmallObjects

    from medseg.transforms.postprocess import apply_postprocess

    ring = np.zeros((9, 9), np.int64)
    ring[1:8, 1:8] = 1
    ring[3:6, 3:6] = 0
    ring[4, 4] = 2  # another class inside the hole: medseg fills background only
    ours = apply_postprocess(ring, (1.0, 1.0), {"fill_holes": [1]})
    theirs = np.asarray(FillHoles(applied_labels=[1], connectivity=1)(torch.as_tensor(ring[None])))[0]
    assert ours[4, 4] == 2 and theirs[4, 4] == 1

    two = np.zeros((12, 12), np.int64)
    two[1:3, 1:3] = 2
    two[8:10, 8:10] = 2  # two 4-pixel pieces of class 2 (each under 5 mm^2), one 12-pixel class 1
    two[5:9, 1:4] = 1
    ours = apply_postprocess(two, (1.0, 1.0), {"min_component_mm3": 5.0})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image's min_size deprecation, inside MONAI
        theirs = np.asarray(RemoveSmallObjects(min_size=5, connectivity=1, independent_channels=True)(
            torch.as_tensor(two[None])))[0]
    assert not (ours == 2).any() and (ours == 1).sum() == 12
    assert (theirs == 2).sum() == 8  # MONAI counted both pieces of class 2 as one 8-pixel object


def test_transform_reads_lps_tensors_in_ras_and_keeps_the_trace(tmp_path):
    """ras_affine of an ITK-read (LPS) tensor equals nibabel's RAS affine of the same file; the
    output keeps affine, meta and applied operations, and equals apply_postprocess."""
    import nibabel as nib
    import torch
    from monai.transforms import Compose, LoadImaged, Spacingd

    from medseg.transforms.monai_postprocess import MedsegPostprocessd, ras_affine
    from medseg.transforms.postprocess import apply_postprocess

    aff = np.array([[0.0, -1.2, 0.0, 40.0], [-0.9, 0.0, 0.0, 12.0], [0.0, 0.0, 2.5, -30.0], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    lab = (rng.random((14, 12, 8)) > 0.6).astype(np.int16) + (rng.random((14, 12, 8)) > 0.8)
    path = str(tmp_path / "lab.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), path)
    lps = LoadImaged("img", reader="ITKReader", affine_lps_to_ras=False, ensure_channel_first=True,
                     image_only=True)({"img": path})["img"]
    assert str(getattr(lps.meta["space"], "value", lps.meta["space"])) == "LPS"
    np.testing.assert_allclose(ras_affine(lps), nib.load(path).affine, atol=1e-5)
    pre = Compose([LoadImaged("img", ensure_channel_first=True, image_only=True),
                   Spacingd("img", pixdim=(1.0, 1.0, 2.0), mode="nearest")])
    data = pre({"img": path})
    grid = data["img"]
    cfg = {"min_component_mm3": 3.0, "fill_holes": True}
    out = MedsegPostprocessd("img", postprocess=cfg, labels=[1])(data)["img"]
    expected = apply_postprocess(np.where(grid[0].numpy() == 1, 1, 0).astype(np.int32), (1.0, 1.0, 2.0), cfg)
    assert np.array_equal(out[0].numpy(), expected)
    assert torch.equal(out.affine, grid.affine) and len(out.applied_operations) == len(grid.applied_operations) == 1
    back = pre.inverse({"img": out})["img"]  # the trace still inverts to the file's grid
    assert tuple(back.shape[1:]) == lab.shape
    np.testing.assert_allclose(np.asarray(back.affine), nib.load(path).affine, atol=1e-5)


def test_more_than_255_instances_keep_distinct_ids():
    """400 separate squares -> 400 instance IDs (scikit-image's labelling counts them too)."""
    import torch
    from monai.data import MetaTensor
    from skimage.measure import label as sk_label

    from medseg.transforms.monai_postprocess import MedsegPostprocessd

    sem = np.zeros((80, 80), np.float32)
    for i in range(20):
        for j in range(20):
            sem[4 * i:4 * i + 2, 4 * j:4 * j + 2] = 1
    pred = MetaTensor(torch.from_numpy(sem)[None], affine=torch.eye(4, dtype=torch.float64))
    out = MedsegPostprocessd("pred", {"instance": {"split": "none"}}, task="instance")({"pred": pred})["pred"]
    ids = out[0].numpy()
    assert int(sk_label(sem > 0, connectivity=1).max()) == 400
    assert int(ids.max()) == 400 and len(np.unique(ids)) == 401


def test_vertebra_levels_follow_the_world_superior_axis(tmp_path):
    """vertebra_levels (needs the grid's RAS affine) through the transform on a NIfTI read by
    MONAI: array axis 0 runs towards the head, so the most superior slab (by nibabel's world
    coordinates) must get the first level, not the first array index."""
    import nibabel as nib
    from monai.transforms import LoadImaged

    from medseg.transforms import postprocess
    from medseg.transforms.monai_postprocess import MedsegPostprocessd

    if "vertebra_levels" not in getattr(postprocess, "_KEYS", ()):
        pytest.skip("this medseg has no vertebra_levels postprocess")
    lab = np.zeros((30, 16, 16), np.int16)
    for a0 in (2, 11, 20):
        lab[a0:a0 + 6, 3:13, 3:13] = 1  # three 'vertebrae', all predicted as level 1
    aff = np.array([[0.0, 1.0, 0.0, -8.0], [0.0, 0.0, 1.0, -8.0], [2.0, 0.0, 0.0, -30.0], [0, 0, 0, 1]])
    path = str(tmp_path / "spine.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), path)
    data = LoadImaged("pred", ensure_channel_first=True, image_only=True)({"pred": path})
    out = MedsegPostprocessd("pred", {"vertebra_levels": {"levels": [1, 2, 3]}})(data)["pred"][0].numpy()
    z = {}
    for level in (1, 2, 3):
        idx = np.argwhere(out == level)
        assert len(idx), level
        z[level] = nib.affines.apply_affine(nib.load(path).affine, idx.mean(axis=0))[2]
    assert z[1] > z[2] > z[3]  # level 1 is the most superior in world (RAS +z) coordinates
    assert int(np.argwhere(out == 1)[:, 0].min()) == 20  # ... which is the LAST slab along the array


def test_masked_t1_gives_the_same_voxels_both_ways(tmp_path, capsys):
    """The real MNI152 T1 (nilearn; brain-masked, 78 % of it exactly 0), cropped, with the shipped
    mri_brain_mask bundle: the z-score over nonzero voxels depends on which voxels are exactly 0, so
    medseg must resample the way MONAI (and training) does. Both outputs are equal voxel for voxel
    on the source grid."""
    import nibabel as nib

    from medseg.data import sample

    bundle = Path(__file__).resolve().parents[1] / "bundles" / "mri_brain_mask"
    mni = nib.load(str(sample("mni_t1")))
    crop = mni.slicer[20:180, 25:210, 30:189]  # nibabel keeps the world position of the crop
    data = np.asarray(crop.dataobj, dtype=np.float32)
    assert (data == 0).mean() > 0.5  # masked: a large exactly-zero background
    (tmp_path / "in").mkdir()
    image = tmp_path / "in" / "t1.nii.gz"
    nib.save(nib.Nifti1Image(data, crop.affine), str(image))
    ((med, mon),) = _segment_both_ways(bundle, [image], tmp_path, capsys)
    a, b = np.asarray(med.dataobj).squeeze(), np.asarray(mon.dataobj).squeeze()
    np.testing.assert_allclose(med.affine, crop.affine, atol=1e-4)
    np.testing.assert_allclose(mon.affine, crop.affine, atol=1e-4)
    assert a.shape == b.shape == data.shape
    assert (a > 0).sum() > 100_000
    assert int((a != b).sum()) == 0


def test_lung_field_reads_the_image_on_both_paths(tmp_path, capsys):
    """``lung_field`` needs the image the network read: the MONAI path hands it over
    (``image_key``), and both paths give the same voxels. The same (random) weights without it
    label more, a superset. Each kept component lies at least half in the lung field, which is
    within the 10 mm closing of the lungs: so at least half of what is kept lies within 12 mm of the
    phantom's own lungs (its separately drawn lung labels), more than without the postprocess."""
    from monai.data import MetaTensor
    from scipy import ndimage

    from medseg.data.phantoms import lung_ct
    from medseg.io import save

    lf = {"lung_field": {"input_window_hu": [-1000, 400], "closing_mm": 10.0, "min_fraction": 0.5}}
    with_lf = make_tiny_bundle(tmp_path / "b", name="tiny_lf", preset="ct_lung", postprocess=lf)
    plain = make_tiny_bundle(tmp_path / "b", name="tiny_plain", preset="ct_lung")
    post = json.loads((with_lf / "configs/inference.json").read_text())["postprocessing"]["transforms"]
    assert post[2]["_target_"] == MEDSEG_POSTPROCESS_TARGET and post[2]["image_key"] == "image"
    ph = lung_ct(shape=(64, 56, 28), spacing=(3.0, 3.0, 5.0), orientation="LPS", seed=4)
    lungs = lung_ct(shape=(64, 56, 28), spacing=(3.0, 3.0, 5.0), orientation="LPS", seed=4, lung_labels=True).label
    image = tmp_path / "in" / "chest.nii.gz"
    save(MetaTensor(ph.image[None], affine=ph.affine), image)
    [(ours, theirs)] = _segment_both_ways(with_lf, [image], tmp_path / "lf", capsys)
    a, b = (np.squeeze(np.asarray(i.dataobj)).astype(np.int64) for i in (ours, theirs))
    assert np.array_equal(a, b), f"{int((a != b).sum())} voxels differ"
    [(base, _)] = _segment_both_ways(plain, [image], tmp_path / "plain", capsys)
    c = np.squeeze(np.asarray(base.dataobj)).astype(np.int64)
    assert np.all((a == 0) | (a == c)) and (a > 0).sum() < (c > 0).sum()
    near = ndimage.distance_transform_edt(lungs == 0, sampling=(3.0, 3.0, 5.0)) <= 12
    kept, before = near[a > 0].mean(), near[c > 0].mean()
    assert kept >= 0.5 and kept > before + 0.1, (kept, before)
