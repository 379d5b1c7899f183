"""COCO-style AP against pycocotools on the same masks (the real stardist nuclei, perturbed), and
mIoU / the new instance columns in ``medseg evaluate``."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from scipy import ndimage

from medseg.metrics.coco import coco_ap, mean_iou


@pytest.fixture(scope="module")
def nuclei_pair():
    import medseg.io
    from medseg.data import sample

    ref = medseg.io.load(sample("nuclei_mask"), kind="label").numpy()[0].astype(np.int32)
    rng = np.random.default_rng(0)
    pred = np.zeros_like(ref)
    for k, i in enumerate(v for v in np.unique(ref) if v):
        m = ref == i
        r = rng.random()
        if r < 0.1:
            continue  # missed
        if r < 0.4:
            m = ndimage.binary_dilation(m, iterations=2)
        elif r < 0.6:
            m = ndimage.binary_erosion(m, iterations=2)
        pred[m & (pred == 0)] = k + 1
    pred[200:206, 300:306] = 999  # a false positive
    scores = {int(i): float(rng.random()) for i in np.unique(pred) if i}
    return pred, ref, scores


def _pycocotools(pred, ref, scores):
    mu = pytest.importorskip("pycocotools.mask")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m):
        r = mu.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    h, w = ref.shape
    gt = {"images": [{"id": 1, "height": h, "width": w}], "categories": [{"id": 1, "name": "nucleus"}],
          "annotations": []}
    for n, i in enumerate(v for v in np.unique(ref) if v):
        r = rle(ref == i)
        gt["annotations"].append({"id": n + 1, "image_id": 1, "category_id": 1, "segmentation": r,
                                  "area": float((ref == i).sum()), "iscrowd": 0, "bbox": list(mu.toBbox(r))})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        dts = [{"image_id": 1, "category_id": 1, "segmentation": rle(pred == i), "score": scores.get(int(i), 1.0)}
               for i in (v for v in np.unique(pred) if v)]
        ev = COCOeval(coco_gt, coco_gt.loadRes(dts), "segm")
        ev.params.maxDets = [1, 10, 100000]
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, 0, 0, 2].mean(axis=1)  # AP per IoU threshold 0.5..0.95


@pytest.mark.parametrize("with_scores", [True, False])
def test_coco_ap_equals_pycocotools(nuclei_pair, with_scores):
    pred, ref, scores = nuclei_pair
    expected = _pycocotools(pred, ref, scores if with_scores else {})
    got = coco_ap(pred, ref, scores=scores if with_scores else None)
    assert got["coco_ap50"] == pytest.approx(expected[0], abs=1e-12)
    assert got["coco_ap75"] == pytest.approx(expected[5], abs=1e-12)
    assert got["coco_map"] == pytest.approx(expected.mean(), abs=1e-12)


def test_mean_iou_brute_force():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, (20, 20, 5)), rng.integers(0, 4, (20, 20, 5))
    brute = [((a == k) & (b == k)).sum() / ((a == k) | (b == k)).sum() for k in (1, 2, 3)]
    assert mean_iou(a, b) == pytest.approx(float(np.mean(brute)))


def test_evaluate_instances_reports_coco_columns(nuclei_pair, tmp_path):
    import tifffile

    from medseg import cli

    pred, ref, _ = nuclei_pair
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    tifffile.imwrite(tmp_path / "p" / "n.tif", pred.astype(np.uint16))
    tifffile.imwrite(tmp_path / "r" / "n.tif", ref.astype(np.uint16))
    assert cli.main(["evaluate", str(tmp_path / "p"), str(tmp_path / "r"), "-o", str(tmp_path / "e"),
                     "--instances", "--no-plots"]) == 0
    s = json.loads((tmp_path / "e" / "summary.json").read_text())["instances"]
    expected = coco_ap(pred, ref)
    assert s["coco_ap50"]["mean"] == pytest.approx(expected["coco_ap50"])
    assert s["coco_map"]["mean"] == pytest.approx(expected["coco_map"])
    assert "ap75" in s
