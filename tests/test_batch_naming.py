"""Batch case folders are named exactly as `medseg segment` names them, survive an interrupt and a
resume without redoing finished work, and a manifest of the previous version still resumes.

Inputs are real files: a single-file DICOM (medseg.data.dicom_writer), a DICOM series folder,
NIfTI files with a double suffix and with spaces/brackets in the name. The reference for every
name is what `medseg.inference.pipeline.segment_file` itself writes for that input.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from test_batch_job import make_band_run

import medseg.inference.pipeline as pipeline
from medseg import cli
from medseg.batch.manifest import Manifest
from medseg.batch.sources import csv_cases
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import abdomen_ct
from medseg.errors import InputError
from medseg.inference import SegmentationModel

SHAPE, SPACING = (32, 32, 12), (6.0, 6.0, 12.0)
NIFTI_NAMES = {"my scan (v2).nii.gz": "my_scan_v2", "a.b.nii.gz": "a.b"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A training-run folder holding a hand-set band model (40..90 HU -> label 1 'liver')."""
    return make_band_run(tmp_path_factory.mktemp("run"), (32, 32, 12))


def _inputs(root: Path) -> Path:
    """Write the inputs and a CSV listing them; returns the CSV."""
    ph = abdomen_ct(shape=SHAPE, spacing=SPACING, seed=3)
    single = write_dicom_series(ph.image[:, :, 5:6], ph.affine, root / "single dicom", modality="CT",
                                series_description="one slice")
    assert len(single) == 1
    write_dicom_series(ph.image, ph.affine, root / "series", modality="CT", series_description="phantom",
                       order="shuffled", seed=3)
    for n, name in enumerate(NIFTI_NAMES):
        vol = abdomen_ct(shape=SHAPE, spacing=SPACING, seed=10 + n)
        nib.save(nib.Nifti1Image(vol.image.astype(np.float32), vol.affine), str(root / name))
    rows = ["input", f"single dicom/{single[0].name}", "series", *NIFTI_NAMES]
    csv = root / "cases.csv"
    csv.write_text("\n".join(f'"{r}"' for r in rows) + "\n")
    return csv


def _expected_names(root: Path) -> dict[str, str]:
    """input -> case folder name, from the DICOM headers (pydicom) and the file names."""
    root = root.resolve()  # the CSV source resolves its inputs
    single = next((root / "single dicom").iterdir())
    series = next((root / "series").iterdir())
    return {
        str(single): "series-" + pydicom.dcmread(single, stop_before_pixels=True).SeriesInstanceUID,
        str(root / "series"): "series-" + pydicom.dcmread(series, stop_before_pixels=True).SeriesInstanceUID,
        **{str(root / k): v for k, v in NIFTI_NAMES.items()},
    }


def _manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


class _Counting:
    """Wraps segment_file: counts calls per input; optionally raises KeyboardInterrupt on call n."""

    def __init__(self, interrupt_on: int | None = None):
        self.calls: Counter[str] = Counter()
        self.interrupt_on = interrupt_on
        self.real = pipeline.segment_file

    def __call__(self, input_path, *args, **kwargs):
        self.calls[str(input_path)] += 1
        if self.interrupt_on is not None and sum(self.calls.values()) == self.interrupt_on:
            raise KeyboardInterrupt
        return self.real(input_path, *args, **kwargs)


def _check_consistent(out: Path, expected: set[str]) -> list[dict]:
    rows = _manifest(out)
    assert {r["case"] for r in rows} == expected
    for r in rows:
        assert r["status"] == "done", r
        assert (out / r["case"]).is_dir()  # every manifest row points at an existing folder ...
        assert r["outputs"] and all(Path(p).is_file() and Path(p).parent.name == r["case"]
                                    for p in r["outputs"].values())  # ... holding the listed files
    case_dirs = {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert case_dirs == expected  # no orphan or half-written folder
    return rows


def test_csv_names_equal_what_segment_file_writes(tmp_path, run_dir):
    csv = _inputs(tmp_path)
    expected = _expected_names(tmp_path)
    cases = {str(c.payload.path if hasattr(c.payload, "path") else c.payload.root): c.case for c in csv_cases(csv)}
    assert cases == expected
    # the reference: the folder `medseg segment` writes for the single-file DICOM and the odd NIfTI name
    model = SegmentationModel.from_run_dir(run_dir)
    for src in (next((tmp_path / "single dicom").iterdir()).resolve(), (tmp_path / "my scan (v2).nii.gz").resolve()):
        written = pipeline.segment_file(src, model, tmp_path / "segment_out", formats="nifti", progress=False).path
        assert written.name == expected[str(src)]


def test_interrupt_then_resume_redoes_nothing_and_points_at_real_folders(tmp_path, run_dir, monkeypatch):
    csv = _inputs(tmp_path)
    expected = _expected_names(tmp_path)
    out = tmp_path / "out"
    args = ["batch", str(csv), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti,dicom-seg"]
    monkeypatch.setenv("MEDSEG_PROGRESS", "0")

    # Run 1: Ctrl-C while the third case is being segmented.
    first = _Counting(interrupt_on=3)
    monkeypatch.setattr(pipeline, "segment_file", first)
    assert cli.main(args) == 130
    done_before = Manifest(out / "manifest.rank0.jsonl").records()
    assert len(done_before) == 2 and {r.status for r in done_before} == {"done"}
    for r in done_before:
        assert r.case in expected.values() and (out / r.case / "seg.nii.gz").is_file()

    # Run 2 (resume): only the two unfinished cases run, each once.
    second = _Counting()
    monkeypatch.setattr(pipeline, "segment_file", second)
    assert cli.main(args) == 0
    assert sum(second.calls.values()) == 2 and set(second.calls.values()) == {1}
    assert not {expected[k] for k in second.calls} & {r.case for r in done_before}
    rows = _check_consistent(out, set(expected.values()))
    dicom_rows = [r for r in rows if r["case"].startswith("series-")]
    assert len(dicom_rows) == 2 and all("seg.dcm" in r["outputs"] for r in dicom_rows)
    journal = Counter(r.key for r in Manifest(out / "manifest.rank0.jsonl").records() if r.status == "done")
    assert set(journal.values()) == {1}  # each case finished exactly once

    # Run 3: everything is done, nothing runs, nothing moves.
    third = _Counting()
    monkeypatch.setattr(pipeline, "segment_file", third)
    assert cli.main(args) == 0 and not third.calls
    assert _check_consistent(out, set(expected.values())) == rows


def test_crash_between_rename_and_journal_redoes_only_that_case(tmp_path, run_dir, monkeypatch):
    """A kill after the case folder was moved into place but before its `done` line was written."""
    csv = _inputs(tmp_path)
    expected = _expected_names(tmp_path)
    out = tmp_path / "out"
    args = ["batch", str(csv), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti"]
    monkeypatch.setenv("MEDSEG_PROGRESS", "0")
    real_append = Manifest.append
    n_appends = Counter()

    def dying_append(self, record):
        n_appends["n"] += 1
        if n_appends["n"] == 2:
            raise KeyboardInterrupt
        real_append(self, record)

    monkeypatch.setattr(Manifest, "append", dying_append)
    assert cli.main(args) == 130
    monkeypatch.setattr(Manifest, "append", real_append)
    (recorded,) = Manifest(out / "manifest.rank0.jsonl").records()
    unrecorded = {p.name for p in out.iterdir() if p.is_dir()} - {recorded.case}
    assert len(unrecorded) == 1  # its folder is there, its record is not

    again = _Counting()
    monkeypatch.setattr(pipeline, "segment_file", again)
    assert cli.main(args) == 0
    assert sum(again.calls.values()) == 3 and {expected[k] for k in again.calls} >= unrecorded
    _check_consistent(out, set(expected.values()))


def test_manifest_of_the_previous_version_still_resumes(tmp_path, run_dir, monkeypatch):
    """The previous version named a `.dcm` listed in a CSV `<file>.dcm` and a series `series-<hash16>`;
    a job it finished must resume as finished, without new folders."""
    import hashlib

    csv = _inputs(tmp_path)
    expected = _expected_names(tmp_path)
    out = tmp_path / "out"
    args = ["batch", str(csv), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti"]
    monkeypatch.setenv("MEDSEG_PROGRESS", "0")
    assert cli.main(args) == 0

    # Rewrite the output into what the previous version left: its folder names, its record fields.
    single = next((tmp_path / "single dicom").iterdir()).resolve()
    series_uid = pydicom.dcmread(next((tmp_path / "series").iterdir()), stop_before_pixels=True).SeriesInstanceUID
    old_name = {expected[str(single)]: single.name,
                expected[str((tmp_path / "series").resolve())]: "series-" + hashlib.sha256(series_uid.encode()).hexdigest()[:16]}
    lines = []
    for r in _manifest(out):
        name = old_name.get(r["case"], r["case"])
        if name != r["case"]:
            (out / r["case"]).rename(out / name)
        old = {"key": r["key"], "case": name, "status": "done", "reason": "",
               "outputs": {k: str(out / name / k) for k in r["outputs"]}, "timings_s": r["timings_s"],
               "attempts": 1, "rank": 0, "finished_at": r["finished_at"], "extra": {}}
        lines.append(json.dumps(old, sort_keys=True, separators=(",", ":")))
    for j in ("manifest.jsonl", "manifest.rank0.jsonl"):  # the previous version kept both
        (out / j).write_text("\n".join(lines) + "\n")
    before = sorted(p.name for p in out.iterdir())

    resumed = _Counting()
    monkeypatch.setattr(pipeline, "segment_file", resumed)
    assert cli.main(args) == 0
    assert not resumed.calls  # nothing redone
    assert sorted(p.name for p in out.iterdir()) == before
    rows = _manifest(out)
    assert sorted(r["case"] for r in rows) == sorted(old_name.get(n, n) for n in expected.values())
    assert all((out / r["case"]).is_dir() for r in rows)


def test_a_changed_input_never_replaces_another_inputs_folder(tmp_path, run_dir, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    ph = abdomen_ct(shape=SHAPE, spacing=SPACING, seed=1)
    nib.save(nib.Nifti1Image(ph.image.astype(np.float32), ph.affine), str(src / "scan.nii.gz"))
    out = tmp_path / "out"
    args = ["batch", str(src), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti"]
    monkeypatch.setenv("MEDSEG_PROGRESS", "0")
    assert cli.main(args) == 0
    kept = (out / "scan" / "provenance.json").read_bytes()
    other = abdomen_ct(shape=SHAPE, spacing=SPACING, seed=2)  # new bytes under the same file name
    nib.save(nib.Nifti1Image(other.image.astype(np.float32), other.affine), str(src / "scan.nii.gz"))
    assert cli.main(args) == 3
    failed = [r for r in _manifest(out) if r["status"] == "failed"]
    assert len(failed) == 1 and "already holds the finished output of another input" in failed[0]["reason"]
    assert (out / "scan" / "provenance.json").read_bytes() == kept
    shutil.rmtree(out / "scan")  # the user removes the old output: the new input may take the name
    assert cli.main(args) == 0
    assert (out / "scan" / "provenance.json").read_bytes() != kept


@pytest.mark.parametrize("rows, message", [
    ('input\n"x y.nii.gz"\nx_y.nii.gz\n', "same case name"),
    ("input,case\nx_y.nii.gz,..\n", "no letter or digit"),
    ("input,case\nx_y.nii.gz,manifest.jsonl\n", "reserved"),
])
def test_csv_names_that_would_collide_are_refused(tmp_path, rows, message):
    img = abdomen_ct(shape=(8, 8, 4), spacing=SPACING, seed=0)
    for name in ("x y.nii.gz", "x_y.nii.gz"):
        nib.save(nib.Nifti1Image(img.image.astype(np.float32), img.affine), str(tmp_path / name))
    csv = tmp_path / "cases.csv"
    csv.write_text(rows)
    with pytest.raises(InputError, match=message):
        csv_cases(csv)
