"""``medseg evaluate`` across grids on TotalSegmentator's real label map: a prediction on another
grid is refused by default (that case only, naming ``--resample-to reference``), scored with the
flag after nearest-neighbour resampling, and its Dice equals the one computed here on SimpleITK's
own nearest-neighbour resampling of the same file; a broken file fails its case only."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from medseg import cli
from medseg.data import sample


@pytest.fixture()
def folders(tmp_path):
    seg = sample("ts_ct_sm_seg")
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for case in ("moved", "same", "broken"):
        shutil.copy(seg, ref / f"{case}.nii.gz")
    shutil.copy(seg, pred / "same.nii.gz")
    # the same labels on another grid (1.7 x 2.3 x 2.9 mm), made by medseg resample
    assert cli.main(["resample", str(seg), str(pred / "moved.nii.gz"), "--spacing", "1.7", "2.3", "2.9"]) == 0
    (pred / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not a gzip stream")
    return pred, ref


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_other_grid_fails_alone_then_is_resampled_and_scored_like_simpleitk(folders, tmp_path, capsys):
    pred, ref = folders
    out = tmp_path / "plain"
    assert cli.main(["evaluate", str(pred), str(ref), "-o", str(out), "--no-plots"]) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == ["same"]
    assert set(summary["failed"]) == {"moved", "broken"}
    assert "--resample-to reference" in summary["failed"]["moved"]
    assert "broken" in capsys.readouterr().out
    assert {float(r["dice"]) for r in _rows(out / "metrics.csv")} == {1.0}

    out = tmp_path / "resampled"
    assert cli.main(["evaluate", str(pred), str(ref), "-o", str(out), "--no-plots", "--resample-to", "reference"]) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == ["moved", "same"] and list(summary["failed"]) == ["broken"]
    assert list(summary["resampled"]) == ["moved"] and summary["reoriented"] == {}
    assert any(w.startswith("case moved:") and "nearest neighbour" in w for w in summary["warnings"])

    # independent: SimpleITK resamples the prediction onto the reference grid, Dice by numpy
    moving, fixed = sitk.ReadImage(str(pred / "moved.nii.gz")), sitk.ReadImage(str(ref / "moved.nii.gz"))
    p = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    r = sitk.GetArrayFromImage(fixed)
    rows = [row for row in _rows(out / "metrics.csv") if row["case"] == "moved"]
    assert len(rows) == len([v for v in np.unique(r) if v])
    for row in rows:
        lab = int(row["label"])
        a, b = p == lab, r == lab
        dice = 2.0 * (a & b).sum() / (a.sum() + b.sum())
        assert abs(float(row["dice"]) - dice) < 1e-6, (lab, row["dice"], dice)
    assert np.mean([float(x["dice"]) for x in rows]) > 0.85  # a real 3 -> ~2.3 -> 3 mm round trip


def test_every_case_failing_is_one_line_exit_2(folders, tmp_path, capsys):
    pred, ref = folders
    (pred / "same.nii.gz").unlink()
    (pred / "moved.nii.gz").unlink()
    assert cli.main(["evaluate", str(pred), str(ref), "-o", str(tmp_path / "o"), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no case could be scored: case broken" in err[0]
