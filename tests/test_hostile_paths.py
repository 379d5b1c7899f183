"""Header strings never become paths: a SeriesInstanceUID that climbs out (``1.2.4/../../../x``)
names no folder, in `medseg segment` and `medseg batch`; nothing appears outside --output."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from test_cli_segment import run_dir  # noqa: F401 - fixture: a hand-set bone-threshold model

from medseg import cli
from medseg.data.dicom_writer import write_dicom_series

HOSTILE_UIDS = ["1.2.4/../../../escaped", "../../escaped", "/tmp/escaped", "1.2." + "9" * 80, "1.2.3\\..\\x",
                "1.02.3"]


def _series(root, uid: str):
    vol = np.full((16, 16, 6), -1000.0)
    vol[4:12, 4:12, 1:5] = 800.0  # bone: the threshold model labels it
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    d = root / "input" / "study"
    write_dicom_series(vol, aff, d, series_instance_uid=uid)
    return d


def _all_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("uid", HOSTILE_UIDS)
def test_segment_names_the_case_by_a_hash_of_a_bad_uid(run_dir, tmp_path, uid):  # noqa: F811
    series = _series(tmp_path, uid)
    before = set(_all_files(tmp_path))
    out = tmp_path / "sandbox" / "out"
    assert cli.main(["segment", str(series), "--bundle", str(run_dir), "--output", str(out),
                     "--format", "nifti"]) == 0
    created = sorted(set(_all_files(tmp_path)) - before)
    assert created and all(c.startswith("sandbox/out/") for c in created), created
    (case,) = [p for p in out.iterdir()]
    assert case.name == f"series-invalid-uid-{hashlib.sha256(uid.encode()).hexdigest()[:16]}"
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "sandbox" / "escaped").exists()


def test_valid_uid_still_names_the_folder(run_dir, tmp_path):  # noqa: F811
    series = _series(tmp_path, "1.2.826.0.1.3680043.8.498.1")
    out = tmp_path / "out"
    assert cli.main(["segment", str(series), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti"]) == 0
    assert [p.name for p in out.iterdir()] == ["series-1.2.826.0.1.3680043.8.498.1"]


def test_batch_keeps_everything_inside_output(run_dir, tmp_path):  # noqa: F811
    uid = "1.2.4/../../../escaped"
    _series(tmp_path, uid)
    before = set(_all_files(tmp_path))
    out = tmp_path / "sandbox" / "out"
    code = cli.main(["batch", str(tmp_path / "input"), "--bundle", str(run_dir), "--output", str(out),
                     "--format", "nifti"])
    assert code == 0
    created = sorted(set(_all_files(tmp_path)) - before)
    assert all(c.startswith("sandbox/out/") for c in created), created
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["done"]
    assert records[0]["case"] == f"series-invalid-uid-{hashlib.sha256(uid.encode()).hexdigest()[:16]}"
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("uid", HOSTILE_UIDS + [""])
def test_pacs_instance_file_name_never_comes_from_a_bad_uid(tmp_path, uid):
    from pydicom.dataset import Dataset

    from medseg.batch.pacs import _instance_path

    ds = Dataset()
    ds.SOPInstanceUID = uid
    p = _instance_path(tmp_path, ds, 7)
    assert p.parent == tmp_path and p.name == "instance-000007.dcm"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    assert _instance_path(tmp_path, ds, 7).name == "1.2.826.0.1.3680043.8.498.7.dcm"
