"""Per-structure statistics against SimpleITK's label shape / intensity statistics and connected
components, on a real CT (pyradiomics lung1 with its lesion label) and on a phantom written as
NIfTI in an oblique orientation; SimpleITK reads the files itself (its own geometry, LPS)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from test_cli_segment import run_dir  # noqa: F401 - fixture: a hand-set bone-threshold model

from medseg.metrics.structures import structure_statistics


def _sitk_figures(image_path, label_path):
    img = sitk.Cast(sitk.ReadImage(str(image_path)), sitk.sitkFloat64)
    lab = sitk.ReadImage(str(label_path))
    lab = sitk.Cast(lab, sitk.sitkUInt16)
    lab.CopyInformation(img)
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(lab)
    inten = sitk.LabelIntensityStatisticsImageFilter()
    inten.Execute(lab, img)
    whole = sitk.MinimumMaximumImageFilter()
    whole.Execute(img)
    out = {}
    for v in shape.GetLabels():
        cc = sitk.ConnectedComponentImageFilter()  # face connectivity by default
        cc.Execute(sitk.Equal(lab, int(v)))
        bb = shape.GetBoundingBox(v)
        nd = len(bb) // 2
        lps = np.array(shape.GetCentroid(v))
        out[int(v)] = {
            "voxels": shape.GetNumberOfPixels(v), "volume_ml": shape.GetPhysicalSize(v) / 1000.0,
            "centroid_ras_mm": lps * np.array([-1.0, -1.0, 1.0][:nd]),
            "start": list(bb[:nd]), "stop": [s + n for s, n in zip(bb[:nd], bb[nd:], strict=True)],
            "mean": inten.GetMean(v), "std": inten.GetStandardDeviation(v), "min": inten.GetMinimum(v),
            "max": inten.GetMaximum(v), "median": inten.GetMedian(v), "components": cc.GetObjectCount(),
            # SimpleITK's median is read off a histogram of this many bins over the image's range
            "median_tol": (whole.GetMaximum() - whole.GetMinimum()) / inten.GetNumberOfBins(),
        }
    return out


def _check(ours, theirs):
    assert sorted(int(k) for k in ours) == sorted(theirs)
    for v, t in theirs.items():
        o = ours[str(v)]
        assert o["voxels"] == t["voxels"]
        assert o["volume_ml"] == pytest.approx(t["volume_ml"], rel=1e-6)
        np.testing.assert_allclose(o["centroid_ras_mm"], t["centroid_ras_mm"], atol=1e-3)
        assert o["bbox_index"] == {"start": t["start"], "stop": t["stop"]}
        for k in ("mean", "std", "min", "max"):
            assert o["intensity"][k] == pytest.approx(t[k], rel=1e-6, abs=1e-6), k
        assert abs(o["intensity"]["p50"] - t["median"]) <= t["median_tol"]
        assert o["components"] == t["components"]


def test_against_simpleitk_on_an_oblique_phantom(tmp_path):
    from medseg.data.phantoms import abdomen_ct
    from medseg.io import load

    c, s_ = np.cos(0.3), np.sin(0.3)
    oblique = np.array([[-c, -s_, 0.0], [s_, -c, 0.0], [0.0, 0.0, 1.0]])  # LPS turned 17 degrees about S
    ph = abdomen_ct(shape=(48, 44, 20), spacing=(1.5, 1.2, 3.0), orientation=oblique, seed=3)
    lab = np.asarray(ph.label).astype(np.uint8)
    lab[2:4, 2:4, 2:4] = 1  # a second, separate island of label 1
    nib.save(nib.Nifti1Image(np.asarray(ph.image, np.float32), ph.affine), str(tmp_path / "img.nii.gz"))
    nib.save(nib.Nifti1Image(lab, ph.affine), str(tmp_path / "lab.nii.gz"))
    image = load(tmp_path / "img.nii.gz")
    labels = load(tmp_path / "lab.nii.gz", kind="label")
    ours = structure_statistics(labels, image, image.affine, names={1: "liver", 99: "absent"})
    assert ours["1"]["name"] == "liver" and ours["99"] == {"name": "absent", "voxels": 0}
    del ours["99"]
    theirs = _sitk_figures(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")
    _check(ours, theirs)
    assert ours["1"]["components"] >= 2
    # the RAS box holds the centroid, and its corners are voxel centres of the structure
    lo, hi = np.array(ours["1"]["bbox_ras_mm"]["min"]), np.array(ours["1"]["bbox_ras_mm"]["max"])
    assert np.all(lo <= np.array(ours["1"]["centroid_ras_mm"])) and np.all(np.array(ours["1"]["centroid_ras_mm"]) <= hi)


@pytest.mark.network
def test_against_simpleitk_on_real_lung_ct(tmp_path):
    from medseg.data import sample
    from medseg.io import load

    image, label = sample("lung1_image"), sample("lung1_label")
    img, lab = load(image), load(label, kind="label")
    ours = structure_statistics(lab, img, img.affine)
    theirs = _sitk_figures(image, label)
    _check(ours, theirs)


def test_segment_and_batch_write_statistics(run_dir, tmp_path):  # noqa: F811
    """`medseg segment --statistics` writes statistics.json for the labels it wrote (checked against
    SimpleITK on seg.nii.gz over the input image); `medseg batch --statistics` records mL per
    structure in the manifest."""
    import json

    from medseg import cli
    from medseg.data.phantoms import save_phantom, spine_ct

    run = run_dir
    ph = spine_ct(shape=(32, 32, 24), spacing=(2.0, 2.0, 3.0), orientation="LPS", seed=6)
    save_phantom(ph, tmp_path / "nii", "nifti")
    src = tmp_path / "nii" / "image.nii.gz"
    assert cli.main(["segment", str(src), "--model", str(run), "--output", str(tmp_path / "out"),
                     "--format", "nifti", "--statistics"]) == 0
    case = tmp_path / "out" / "image"
    table = json.loads((case / "statistics.json").read_text())["structures"]
    theirs = _sitk_figures(src, case / "seg.nii.gz")
    _check(table, theirs)
    assert table["1"]["name"] == "vertebrae"
    (tmp_path / "batch_in").mkdir()
    (tmp_path / "batch_in" / "image.nii.gz").write_bytes(src.read_bytes())
    assert cli.main(["batch", str(tmp_path / "batch_in"), "--model", str(run), "--output", str(tmp_path / "b"),
                     "--format", "nifti", "--statistics"]) == 0
    (record,) = [json.loads(x) for x in (tmp_path / "b" / "manifest.jsonl").read_text().splitlines()]
    assert record["extra"]["volume_ml"] == {"vertebrae": pytest.approx(table["1"]["volume_ml"], abs=1e-4)}

