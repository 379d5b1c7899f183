"""`medseg evaluate` on 2D pictures (microscopy / X-ray exports): TIFF, OME-TIFF and PNG label
files are paired by name like NIfTI files. Crops of the real stardist nuclei mask
(``medseg.data.sample("nuclei_mask")``) are written with tifffile / Pillow, and the numbers are
compared with MONAI's metrics on the arrays read back independently (tifffile / Pillow, spacing
from the resolution tags we wrote)."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from monai.metrics import DiceMetric, compute_hausdorff_distance, compute_iou
from PIL import Image
from scipy import ndimage

from medseg import cli
from medseg.evaluation import match_cases

# pixels per centimetre along x (columns) and y (rows): 0.005 mm x 0.01 mm pixels, anisotropic
XRES_PER_CM, YRES_PER_CM = 2000.0, 1000.0
SPACING_ROWS_COLS_MM = (10.0 / YRES_PER_CM, 10.0 / XRES_PER_CM)
CROPS = {"cellA": (slice(0, 96), slice(0, 128)), "cellB": (slice(200, 296), slice(300, 428)),
         "cellC": (slice(380, 476), slice(40, 168))}


@pytest.fixture(scope="module")
def nuclei_mask() -> np.ndarray:
    from medseg.data import sample

    return tifffile.imread(sample("nuclei_mask"))


def _prediction(ref: np.ndarray, k: int) -> np.ndarray:
    """A plausible prediction: eroded nuclei, one nucleus missed, one false blob."""
    pred = ndimage.binary_erosion(ref > 0, iterations=1).astype(np.uint8)
    ids = np.unique(ref[ref > 0])
    pred[ref == ids[k % len(ids)]] = 0
    pred[5 + 7 * k:12 + 7 * k, 100:110] = 1
    return pred


def _write_tiff(path, arr: np.ndarray) -> None:
    tifffile.imwrite(path, arr, resolution=(XRES_PER_CM, YRES_PER_CM), resolutionunit="CENTIMETER")


def _monai(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[float, float, float]:
    p = torch.from_numpy(pred > 0)[None, None].float()
    r = torch.from_numpy(ref > 0)[None, None].float()
    metric = DiceMetric(include_background=True, reduction="none")
    dice = float(metric(p, r)[0, 0])
    iou = float(compute_iou(p, r, include_background=True)[0, 0])
    hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing)[0, 0])
    return dice, iou, hd95


@pytest.mark.network
def test_tiff_and_png_folders_evaluate_like_monai(nuclei_mask, tmp_path, capsys):
    pred_dir, ref_dir, out = tmp_path / "pred", tmp_path / "ref", tmp_path / "eval"
    pred_dir.mkdir()
    ref_dir.mkdir()
    expected = {}
    for k, (case, sl) in enumerate(CROPS.items()):
        ref = (nuclei_mask[sl] > 0).astype(np.uint8)
        pred = _prediction(nuclei_mask[sl], k)
        if case == "cellA":  # .tif prediction vs OME-style .tiff reference name
            _write_tiff(pred_dir / f"{case}.tif", pred)
            _write_tiff(ref_dir / f"{case}.ome.tiff", ref)
        elif case == "cellB":
            _write_tiff(pred_dir / f"{case}.tiff", pred)
            _write_tiff(ref_dir / f"{case}.tif", ref)
        else:  # PNG without pHYs: 1.0 (default) pixel spacing on both sides
            Image.fromarray(pred).save(pred_dir / f"{case}.png")
            Image.fromarray(ref).save(ref_dir / f"{case}.png")
    # independent read-back: tifffile / Pillow arrays, spacing from the tags we wrote
    for case in CROPS:
        if case == "cellC":
            p = np.asarray(Image.open(pred_dir / f"{case}.png"))
            r = np.asarray(Image.open(ref_dir / f"{case}.png"))
            spacing = (1.0, 1.0)
        else:
            p = tifffile.imread(next(pred_dir.glob(f"{case}.*")))
            r = tifffile.imread(next(ref_dir.glob(f"{case}.*")))
            spacing = SPACING_ROWS_COLS_MM
        expected[case] = _monai(p, r, spacing)

    rc = cli.main(["evaluate", str(pred_dir), str(ref_dir), "-o", str(out), "--no-plots"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.startswith("3 case(s) scored; unmatched: 0 prediction-only, 0 reference-only")
    with open(out / "metrics.csv", newline="") as fh:
        rows = {r["case"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == sorted(CROPS)
    for case, (dice, iou, hd95) in expected.items():
        row = rows[case]
        assert row["label"] == "1"
        assert 0.5 < dice < 0.99  # a real, imperfect prediction
        assert float(row["dice"]) == pytest.approx(dice, abs=1e-6), case
        assert float(row["iou"]) == pytest.approx(iou, abs=1e-6), case
        assert float(row["hd95"]) == pytest.approx(hd95, rel=1e-5, abs=1e-6), case
    # HD95 is in mm: the TIFF cases carry 0.005 x 0.01 mm pixels, so their distances are small
    assert float(rows["cellA"]["hd95"]) < 0.2 < float(rows["cellC"]["hd95"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == sorted(CROPS)
    assert summary["per_label"]["1"]["metrics"]["dice"]["mean"] == pytest.approx(
        np.mean([v[0] for v in expected.values()]), abs=1e-6)


@pytest.mark.network
def test_instances_on_tiff_count_the_real_nuclei(nuclei_mask, tmp_path):
    """--instances on an instance-labelled TIFF pair: every reference nucleus is counted."""
    sl = CROPS["cellB"]
    ref = nuclei_mask[sl].astype(np.uint16)
    pred = ref.copy()
    gone = np.unique(ref[ref > 0])[:2]
    pred[np.isin(pred, gone)] = 0  # two nuclei missed
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    _write_tiff(tmp_path / "p/x.tif", pred)
    _write_tiff(tmp_path / "r/x.tif", ref)
    rc = cli.main(["evaluate", str(tmp_path / "p"), str(tmp_path / "r"), "-o", str(tmp_path / "o"),
                   "--instances", "--no-plots"])
    assert rc == 0
    with open(tmp_path / "o/instance_metrics.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    n_true = len(np.unique(ref[ref > 0]))
    # direct computation: the kept nuclei are identical (TP), the two removed ones are FN, no FP
    tp, fn = n_true - 2, 2
    assert int(row["n_ref"]) == n_true and int(row["n_pred"]) == tp
    assert (int(row["tp"]), int(row["fp"]), int(row["fn"])) == (tp, 0, fn)
    assert float(row["f1"]) == pytest.approx(2 * tp / (2 * tp + fn), abs=1e-9)
    assert float(row["sq"]) == pytest.approx(1.0, abs=1e-9)  # matched nuclei are pixel-identical


def test_picture_next_to_volume_is_listed_not_paired(tmp_path):
    """``case1.nii.gz`` with its ``case1.png`` overlay: the volume is the case, the picture is listed."""
    for side in ("pred", "ref"):
        (tmp_path / side).mkdir()
        arr = np.zeros((8, 8, 4), np.uint8)
        arr[2:5, 2:6, 1:3] = 1
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / side / "case1.nii.gz"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "pred" / "case1.png")
    match = match_cases(tmp_path / "pred", tmp_path / "ref")
    assert [(c, p.name, r.name) for c, p, r in match.pairs] == [("case1", "case1.nii.gz", "case1.nii.gz")]
    assert match.ignored == ["prediction/case1.png"]
    assert not match.pred_only and not match.ref_only
    # two pictures for one case stay an error
    _write_tiff(tmp_path / "ref" / "case2.tif", np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ref" / "case2.png")
    from medseg.errors import EvaluationError

    with pytest.raises(EvaluationError, match="two files for case 'case2'"):
        match_cases(tmp_path / "pred", tmp_path / "ref")
