"""`medseg evaluate` end to end on real files: NIfTI written by nibabel, DICOM SEG written by
highdicom; numbers compared with MONAI's metrics on arrays read back independently by nibabel."""

from __future__ import annotations

import csv
import json
import math
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from PIL import Image

from medseg import cli
from medseg.errors import EvaluationError
from medseg.metrics import METRIC_NAMES

# an LPS-like, anisotropic grid (x and y flipped, 0.7 x 1.1 x 2.5 mm), off-origin
AFFINE = np.array([[-0.7, 0, 0, 40.0], [0, -1.1, 0, 22.0], [0, 0, 2.5, -13.0], [0, 0, 0, 1]])
SHAPE = (40, 36, 18)
COLUMNS = ["case", "label", *METRIC_NAMES]


def _ref_map(shift):
    ref = np.zeros(SHAPE, np.uint8)
    ref[5 + shift:20 + shift, 6:22, 3:12] = 1  # "liver"
    ref[24:34, 10:30, 6:14] = 2  # "spleen"
    ref[8:14, 25:31, 12:16] = 3  # "lesion"
    return ref


def _write(path, arr, affine=AFFINE):
    nib.save(nib.Nifti1Image(arr, affine), str(path))


@pytest.fixture()
def folders(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    for i in range(3):
        ref = _ref_map(i)
        pred = ref.copy()
        pred[5 + i:8 + i] = 0  # under-segment label 1
        pred[34:36, 10:30, 6:14] = 2  # over-segment label 2
        if i == 1:
            pred[pred == 3] = 0  # missed lesion: prediction empty for label 3
        if i == 2:
            pred[pred == 3] = 0
            ref[ref == 3] = 0  # label 3 absent in both
        _write(pred_dir / f"case{i}.nii.gz", pred)
        _write(ref_dir / f"case{i}.nii.gz", ref)
    _write(pred_dir / "only_pred.nii.gz", _ref_map(0))
    _write(ref_dir / "only_ref.nii", _ref_map(0))
    return pred_dir, ref_dir


def _monai(p, r, spacing, tol):
    P = torch.from_numpy(p.astype(np.float32))[None, None]
    R = torch.from_numpy(r.astype(np.float32))[None, None]
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": compute_dice(P, R, ignore_empty=False).item(),
            "hd95": compute_hausdorff_distance(P, R, percentile=95, spacing=sp).item(),
            "assd": compute_average_surface_distance(P, R, symmetric=True, spacing=sp).item(),
            "nsd": compute_surface_dice(P, R, class_thresholds=[tol], spacing=sp).item(),
        }


def _read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def _strict_json(path):
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=bad)


def test_cli_folders_metrics_summary_plots(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    out = tmp_path / "out"
    code = cli.main(["evaluate", str(pred_dir), str(ref_dir), "-o", str(out), "--tolerance-mm", "2.0",
                     "--labels", "1=liver", "2=spleen", "3=lesion"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "only_pred" in printed and "only_ref" in printed

    header, rows = _read_csv(out / "metrics.csv")
    assert header == COLUMNS
    assert [(r["case"], r["label"]) for r in rows] == [(f"case{i}", str(lab)) for i in range(3) for lab in (1, 2, 3)]

    for row in rows:  # every number against MONAI on nibabel's arrays and nibabel's voxel size
        p_img = nib.load(pred_dir / f"{row['case']}.nii.gz")
        r_img = nib.load(ref_dir / f"{row['case']}.nii.gz")
        lab = int(row["label"])
        p, r = np.asarray(p_img.dataobj) == lab, np.asarray(r_img.dataobj) == lab
        zooms = r_img.header.get_zooms()
        vox_ml = float(np.prod(zooms)) / 1000
        assert float(row["volume_pred_ml"]) == pytest.approx(p.sum() * vox_ml, rel=1e-6)
        assert float(row["volume_ref_ml"]) == pytest.approx(r.sum() * vox_ml, rel=1e-6)
        if not r.any() and not p.any():  # metricsreloaded: both empty
            assert (float(row["dice"]), float(row["hd95"])) == (1.0, 0.0) and row["iou"] == "nan"
            continue
        if not p.any():  # missed lesion
            assert float(row["dice"]) == 0.0 and row["hd95"] == "nan" and float(row["nsd"]) == 0.0
            continue
        expect = _monai(p, r, zooms, 2.0)
        assert float(row["dice"]) == pytest.approx(expect["dice"], abs=1e-4)
        assert float(row["nsd"]) == pytest.approx(expect["nsd"], abs=1e-4)
        assert float(row["hd95"]) == pytest.approx(expect["hd95"], abs=0.05)
        assert float(row["assd"]) == pytest.approx(expect["assd"], abs=0.05)

    summary = _strict_json(out / "summary.json")
    assert summary["unmatched"] == {"pred_only": ["only_pred"], "ref_only": ["only_ref"]}
    assert summary["n_cases"] == 3
    assert summary["empty_policy"]["name"] == "metricsreloaded"
    assert summary["labels"] == {"1": "liver", "2": "spleen", "3": "lesion"}
    lesion = summary["per_label"]["3"]
    assert lesion["empty_cases"] == {"both_empty": 1, "pred_empty_only": 1, "ref_empty_only": 0}
    dice3 = [float(r["dice"]) for r in rows if r["label"] == "3"]
    assert lesion["metrics"]["dice"]["mean"] == pytest.approx(np.mean(dice3))
    hd3 = [float(r["hd95"]) for r in rows if r["label"] == "3"]
    assert lesion["metrics"]["hd95"]["n"] == sum(math.isfinite(v) for v in hd3) == 2
    assert lesion["metrics"]["hd95"]["n_nan"] == 1
    liver = summary["per_label"]["1"]["metrics"]["dice"]
    lo, hi = liver["ci95"]
    assert lo <= liver["mean"] <= hi

    wheader, worst = _read_csv(out / "worst_cases.csv")
    assert wheader[:3] == ["rank", "case", "label"]
    assert (worst[0]["case"], worst[0]["label"]) == ("case1", "3")  # the missed lesion comes first
    finite = [float(w["dice"]) for w in worst if w["dice"] != "nan"]
    assert finite[:-1] == sorted(finite[:-1])  # worst first; the both-empty case (Dice 1) last
    assert summary["worst_cases"][0]["case"] == "case1"

    for metric in ("dice", "iou", "hd95", "assd", "nsd"):
        with Image.open(out / f"boxplot_{metric}.png") as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert not list(out.glob(".*part*"))  # no temporary files left behind


def test_monai_policy_writes_inf_but_summaries_stay_finite(folders, tmp_path):
    pred_dir, ref_dir = folders
    out = tmp_path / "out"
    assert cli.main(["evaluate", str(pred_dir), str(ref_dir), "-o", str(out), "--empty-policy", "monai",
                     "--no-plots"]) == 0
    _, rows = _read_csv(out / "metrics.csv")
    missed = next(r for r in rows if (r["case"], r["label"]) == ("case1", "3"))
    assert missed["assd"] == "inf" and missed["hd95"] == "nan" and float(missed["dice"]) == 0.0
    # label 3 is absent from case2 altogether: discovered labels still give it a row
    assert any((r["case"], r["label"]) == ("case2", "3") for r in rows)
    summary = _strict_json(out / "summary.json")
    assd = summary["per_label"]["3"]["metrics"]["assd"]
    assert assd["n_inf"] == 1 and assd["n"] == 1 and math.isfinite(assd["mean"])


def test_mismatched_grid_fails_that_case_only_and_names_the_flag(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    moved = AFFINE.copy()
    moved[0, 3] += 0.5  # half a millimetre off
    _write(pred_dir / "case0.nii.gz", _ref_map(0), moved)
    out = tmp_path / "out"
    assert cli.main(["evaluate", str(pred_dir), str(ref_dir), "-o", str(out)]) == 3  # scored, one case failed
    text = capsys.readouterr()
    assert "Traceback" not in text.err
    failed = [x for x in text.out.splitlines() if x.strip().startswith("failed:")]
    assert len(failed) == 1 and "case0" in failed[0] and "differ by 0.5 mm" in failed[0]
    assert "--resample-to reference" in failed[0]
    summary = _strict_json(out / "summary.json")
    assert summary["cases"] == ["case1", "case2"] and list(summary["failed"]) == ["case0"]
    _, rows = _read_csv(out / "metrics.csv")
    assert {r["case"] for r in rows} == {"case1", "case2"}
    # with the flag the case is scored on the reference grid, with a warning
    out2 = tmp_path / "out2"
    assert cli.main(["evaluate", str(pred_dir), str(ref_dir), "-o", str(out2), "--resample-to", "reference"]) == 0
    summary = _strict_json(out2 / "summary.json")
    assert summary["failed"] == {} and list(summary["resampled"]) == ["case0"]
    assert any("case0" in w and "nearest neighbour" in w for w in summary["warnings"])


def test_shape_mismatch_and_bad_inputs(tmp_path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    _write(a, np.zeros(SHAPE, np.uint8))
    _write(b, np.zeros((40, 36, 17), np.uint8))
    from medseg.evaluation import evaluate

    with pytest.raises(EvaluationError, match="grid"):
        evaluate(a, b, tmp_path / "o")
    with pytest.raises(EvaluationError, match="two folders or two files"):
        evaluate(a, tmp_path, tmp_path / "o")
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    _write(tmp_path / "p" / "x.nii.gz", np.zeros(SHAPE, np.uint8))
    _write(tmp_path / "r" / "y.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(EvaluationError, match="no case is present in both"):
        evaluate(tmp_path / "p", tmp_path / "r", tmp_path / "o")
    _write(tmp_path / "p" / "x.nii", np.zeros(SHAPE, np.uint8))
    with pytest.raises(EvaluationError, match="two files for case 'x'"):
        evaluate(tmp_path / "p", tmp_path / "r", tmp_path / "o")
    with pytest.raises(EvaluationError, match="not an integer"):
        evaluate(a, a, tmp_path / "o", labels=["liver"])


def _instance_map(rng, n):
    out = np.zeros(SHAPE, np.int16)
    for i in range(1, n + 1):
        c = rng.integers(4, np.array(SHAPE) - 4)
        out[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3, c[2] - 2:c[2] + 2] = i
    return out


def test_instances_on_files(tmp_path):
    from medseg.metrics import instance_metrics

    rng = np.random.default_rng(0)
    ref = _instance_map(rng, 6)
    pred = np.roll(ref, 1, axis=0) * 3  # shifted by one voxel, ids renumbered
    pred[_instance_map(rng, 1) > 0] = 77  # one false positive
    _write(tmp_path / "p.nii.gz", pred)
    _write(tmp_path / "r.nii.gz", ref)
    out = tmp_path / "out"
    assert cli.main(["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "r.nii.gz"), "-o", str(out),
                     "--instances", "--no-plots"]) == 0
    header, rows = _read_csv(out / "instance_metrics.csv")
    assert header[0] == "case" and rows[0]["case"] == "p"
    expect = instance_metrics(np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj),
                              np.asarray(nib.load(tmp_path / "r.nii.gz").dataobj))
    for k, v in expect.items():
        assert float(rows[0][k]) == pytest.approx(float(v), nan_ok=True)
    assert int(rows[0]["fp"]) >= 1 and int(rows[0]["tp"]) >= 1
    _, seg_rows = _read_csv(out / "metrics.csv")
    assert [r["label"] for r in seg_rows] == ["1"]  # foreground only
    assert "pq" in _strict_json(out / "summary.json")["instances"]


def test_dicom_seg_reference_on_its_source_series(tmp_path):
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.io import load, save
    from medseg.io.dicom_seg import write_dicom_seg

    rng = np.random.default_rng(1)
    shape = (32, 28, 10)
    aff = np.array([[0.0, 0.9, 0, -20.0], [-0.8, 0, 0, 15.0], [0, 0, 3.0, 40.0], [0, 0, 0, 1]])
    ct = rng.normal(40, 10, size=shape).astype(np.float32)
    write_dicom_series(ct, aff, tmp_path / "ct", modality="CT")
    source = load(tmp_path / "ct")
    lab = np.zeros((1, *shape), np.uint8)
    lab[0, 6:20, 5:18, 2:8] = 1
    lab[0, 22:28, 8:20, 3:6] = 2
    from monai.data import MetaTensor

    ref_t = MetaTensor(torch.from_numpy(lab), affine=source.affine)
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    write_dicom_seg(ref_t, source, tmp_path / "ref" / "c1.dcm", label_names={1: "liver", 2: "spleen"})
    pred = lab.copy()
    pred[0, 6:9] = 0
    save(MetaTensor(torch.from_numpy(pred), affine=source.affine), tmp_path / "pred" / "c1.nii.gz")

    out = tmp_path / "out"
    assert cli.main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out),
                     "--ref-image", str(tmp_path / "ct"), "--no-plots"]) == 0
    _, rows = _read_csv(out / "metrics.csv")
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    for row in rows:
        lab_v = int(row["label"])
        expect = _monai(pred[0] == lab_v, lab[0] == lab_v, spacing, 1.0)
        assert float(row["dice"]) == pytest.approx(expect["dice"], abs=1e-4)
        assert float(row["hd95"]) == pytest.approx(expect["hd95"], abs=0.05)
    assert [r["label"] for r in rows] == ["1", "2"]


@pytest.mark.slow
def test_workers_give_the_same_numbers(folders, tmp_path):
    from medseg.evaluation import evaluate

    pred_dir, ref_dir = folders
    one = evaluate(pred_dir, ref_dir, tmp_path / "one", plots=False)
    two = evaluate(pred_dir, ref_dir, tmp_path / "two", plots=False, workers=2)
    assert (tmp_path / "one" / "metrics.csv").read_text() == (tmp_path / "two" / "metrics.csv").read_text()
    assert one.summary["per_label"] == two.summary["per_label"]


@pytest.mark.network
def test_real_nrrd_lung_lesion_folder(tmp_path):
    """Real pyradiomics CT lesion label (NRRD, 5 mm slices) vs a prediction written by SimpleITK."""
    import shutil

    import SimpleITK as sitk
    from scipy import ndimage

    from medseg.data import sample

    src = sample("lung1_label")
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    shutil.copy(src, tmp_path / "ref" / "lung1.nrrd")
    ref_img = sitk.ReadImage(str(src))
    ref = sitk.GetArrayFromImage(ref_img)  # (z, y, x)
    pred = ndimage.binary_dilation(ref > 0, iterations=2).astype(np.uint8)
    pred_img = sitk.GetImageFromArray(pred)
    pred_img.CopyInformation(ref_img)
    sitk.WriteImage(pred_img, str(tmp_path / "pred" / "lung1.nrrd"))
    out = tmp_path / "out"
    assert cli.main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out),
                     "--no-plots", "--tolerance-mm", "3"]) == 0
    _, rows = _read_csv(out / "metrics.csv")
    assert len(rows) == 1 and rows[0]["label"] == "1"
    spacing_zyx = ref_img.GetSpacing()[::-1]  # numpy (z, y, x) order of SimpleITK's array
    expect = _monai(pred > 0, ref > 0, spacing_zyx, 3.0)
    for name in ("dice", "nsd"):
        assert float(rows[0][name]) == pytest.approx(expect[name], abs=1e-4)
    for name in ("hd95", "assd"):
        assert float(rows[0][name]) == pytest.approx(expect[name], abs=0.05)
    vox_ml = float(np.prod(ref_img.GetSpacing())) / 1000
    assert float(rows[0]["volume_ref_ml"]) == pytest.approx((ref > 0).sum() * vox_ml, rel=1e-6)


@pytest.mark.parametrize("target", ["LAS", "RAS", "SLP", "ASL"])
def test_reference_in_another_axis_order_is_reoriented_exactly(folders, tmp_path, target):
    """dcm2niix writes LAS where medseg writes LPS for one series: the same voxels, another axis order.
    nibabel's own orientation transform writes the reference that way; scores are those of the
    original pair, and summary.json says what was done. No interpolation: Dice of a map against
    its reoriented self is exactly 1."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    pred_dir, ref_dir = folders
    for case in ("case0", "case1"):
        img = nib.load(ref_dir / f"{case}.nii.gz")
        ornt = ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(target)))
        turned = img.as_reoriented(ornt)
        assert nib.aff2axcodes(turned.affine) == tuple(target)
        nib.save(nib.Nifti1Image(np.asarray(turned.dataobj), turned.affine), str(ref_dir / f"{case}.nii.gz"))
    out, plain = tmp_path / "out", tmp_path / "plain"
    assert cli.main(["evaluate", str(pred_dir), str(ref_dir), "-o", str(out)]) == 0
    # the same evaluation with the references left in the prediction's axis order
    ref_lps = tmp_path / "ref_lps"
    ref_lps.mkdir()
    for i in range(3):
        ref = _ref_map(i)
        if i == 2:
            ref[ref == 3] = 0
        _write(ref_lps / f"case{i}.nii.gz", ref)
    _write(ref_lps / "only_ref.nii", _ref_map(0))
    assert cli.main(["evaluate", str(pred_dir), str(ref_lps), "-o", str(plain)]) == 0
    _, rows = _read_csv(out / "metrics.csv")
    _, rows_plain = _read_csv(plain / "metrics.csv")
    assert rows == rows_plain
    summary = _strict_json(out / "summary.json")
    assert sorted(summary["reoriented"]) == ["case0", "case1"]
    assert "no interpolation" in summary["reoriented"]["case0"]
    assert _strict_json(plain / "summary.json")["reoriented"] == {}


def test_metrics_api_reorients_with_a_warning_and_still_refuses_other_grids():
    from monai.data import MetaTensor

    from medseg.metrics import dice

    ref = _ref_map(0)
    img = nib.Nifti1Image(ref, AFFINE)
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    turned = img.as_reoriented(ornt_transform(io_orientation(AFFINE), axcodes2ornt(("S", "R", "A"))))
    a = MetaTensor(torch.from_numpy(ref[None].astype(np.int64)), affine=torch.as_tensor(AFFINE))
    b = MetaTensor(torch.from_numpy(np.asarray(turned.dataobj)[None].astype(np.int64)),
                   affine=torch.as_tensor(turned.affine))
    with pytest.warns(UserWarning, match="reoriented exactly"):
        assert dice(b, a, label=1) == 1.0
    shifted = AFFINE.copy()
    shifted[2, 3] += 2.5  # one slice off: a different grid, not another axis order
    c = MetaTensor(torch.from_numpy(ref[None].astype(np.int64)), affine=torch.as_tensor(shifted))
    with pytest.raises(EvaluationError, match="differ by 2.5 mm"):
        dice(c, a, label=1)
