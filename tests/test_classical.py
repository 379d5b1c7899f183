"""medseg.classical: methods against independent implementations, presets against real references,
and ``medseg segment --method`` writing what a model run writes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg import cli
from medseg.classical.methods import run_method
from medseg.errors import ConfigError


@pytest.fixture(scope="module")
def ct():
    import medseg.io
    from medseg.data import sample

    img = medseg.io.load(sample("ts_ct_sm"))
    seg = medseg.io.load(sample("ts_ct_sm_seg"), kind="label").numpy()[0]
    return img, img.numpy()[0].astype(np.float32), seg, sample("ts_ct_sm")


def test_otsu_agrees_with_scikit_image(ct):
    from skimage.filters import threshold_otsu

    _, arr, _, _ = ct
    res = run_method("otsu", arr, (3.0, 3.0, 3.0))
    ref = arr > threshold_otsu(arr, nbins=256)
    assert abs(res.params["threshold"] - threshold_otsu(arr, nbins=256)) < (arr.max() - arr.min()) / 128
    assert np.mean(res.labels.astype(bool) != ref) < 0.01


def test_threshold_is_exactly_the_comparison(ct):
    _, arr, _, _ = ct
    res = run_method("threshold:-100,200", arr, (3.0, 3.0, 3.0))
    assert np.array_equal(res.labels.astype(bool), (arr >= -100) & (arr <= 200))
    assert np.array_equal(run_method("threshold:200,inf", arr, (3, 3, 3)).labels.astype(bool), arr >= 200)


@pytest.mark.parametrize("spec", ["kmeans:3", "gmm:3", "multi-otsu:3"])
def test_clusters_are_ordered_by_intensity(ct, spec):
    _, arr, _, _ = ct
    lab = run_method(spec, arr, (3.0, 3.0, 3.0)).labels
    means = [arr[lab == k].mean() for k in range(3)]
    assert means[0] < means[1] < means[2]


def test_ct_presets_against_totalsegmentator(ct):
    img, arr, seg, _ = ct
    aff = np.asarray(img.affine)
    body = run_method("preset:body", arr, (3, 3, 3), affine=aff).labels > 0
    organs = seg > 0
    assert (body & organs).sum() / organs.sum() > 0.99  # every labelled structure lies inside the outline
    air = run_method("preset:air", arr, (3, 3, 3), affine=aff).labels > 0
    liver = seg == 5
    assert (air & liver).sum() / liver.sum() < 0.01
    from medseg.data.totalseg import TOTAL_V2

    bone = run_method("preset:bone", arr, (3, 3, 3), affine=aff).labels > 0
    bony = np.isin(seg, [k for k, v in TOTAL_V2.items() if any(
        w in v for w in ("vertebrae", "rib", "sacrum", "hip", "femur", "sternum", "scapula", "clavicula"))])
    # measured: 94.6% of what the preset calls bone is a TotalSegmentator bone (it finds the cortex
    # and dense bone: 26% of their volume at 3 mm; trabecular bone lies below 250 HU)
    assert (bone & bony).sum() / bone.sum() > 0.9
    assert (bone & liver).sum() / liver.sum() < 0.01


def test_watershed_nuclei_instances():
    import medseg.io
    from medseg.data import sample
    from medseg.metrics.instance import instance_metrics

    img = medseg.io.load(sample("nuclei_image")).numpy()[0]
    ref = medseg.io.load(sample("nuclei_mask"), kind="label").numpy()[0]
    res = run_method("watershed", img, (1.0, 1.0))
    assert res.task == "instance"
    m = instance_metrics(res.labels, ref)
    assert m["f1"] > 0.6  # measured 0.70 (the trained fluo_nuclei_2d bundle: 0.955 on the whole image)


def test_bad_methods():
    arr = np.zeros((4, 4), np.float32)
    for spec in ("sam", "threshold:1", "threshold:a,b", "kmeans:x", "kmeans:99", "preset:brain"):
        with pytest.raises(ConfigError):
            run_method(spec, arr, (1.0, 1.0))


def test_cli_method_writes_model_outputs(ct, tmp_path, capsys):
    _, arr, _, path = ct
    out = tmp_path / "out"
    assert cli.main(["segment", str(path), "--method", "preset:body", "--output", str(out)]) == 0
    case = out / "example_ct_sm"
    seg = nib.load(str(case / "seg.nii.gz"))
    src = nib.load(str(path))
    assert seg.shape == src.shape and np.allclose(seg.affine, src.affine)
    assert (case / "overlay.png").is_file()
    prov = json.loads((case / "provenance.json").read_text())
    assert prov["model"]["name"] == "classical:preset:body"
    assert prov["model"]["describe"]["details"]["chosen"]["preset"] == "body"
    assert cli.main(["segment", str(path), "--method", "nope", "--output", str(tmp_path / "o2")]) == 2
    assert cli.main(["segment", str(path), "--output", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "unknown method" in err and "--model or --method" in err


def test_cli_region_growing_seed_in_mm(ct, tmp_path):
    img, arr, seg, path = ct
    liver = seg == 5
    from scipy import ndimage

    centre = np.unravel_index(np.argmax(ndimage.distance_transform_edt(liver)), liver.shape)
    x, y, z = (np.asarray(img.affine)[:3, :3] @ np.asarray(centre, float) + np.asarray(img.affine)[:3, 3])
    out = tmp_path / "rg"
    assert cli.main(["segment", str(path), "--method", "region-growing", "--seed", str(x), str(y), str(z),
                     "--output", str(out), "--format", "nifti"]) == 0
    m = np.asarray(nib.load(str(out / "example_ct_sm" / "seg.nii.gz")).dataobj) > 0
    # the seed lands in the liver, which the region holds (it also leaks into soft tissue around)
    assert m[centre] and (m & liver).sum() / liver.sum() > 0.9
