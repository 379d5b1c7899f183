"""Outputs that cannot be written are refused before any work: an existing file as --output, a path
below a file, an immutable folder (chattr +i, which binds root too). One line, exit 2, nothing left.
The bundle named is missing on purpose: the output error must come first (no model, no input read)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from medseg import cli


def _immutable(path):
    path.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available on this file system")
    return path


@pytest.fixture
def bad_outputs(tmp_path):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a folder")
    made = {"existing-file": a_file, "below-a-file": a_file / "sub"}
    try:
        made["immutable"] = _immutable(tmp_path / "locked")
    except pytest.skip.Exception:
        pass
    yield made
    if "immutable" in made:
        subprocess.run(["chattr", "-i", str(made["immutable"])], check=False)


def _argv(command, out, tmp_path):
    src = tmp_path / "input.nii.gz"
    src.write_bytes(b"\x00" * 400)
    (tmp_path / "pred").mkdir(exist_ok=True)
    (tmp_path / "ref").mkdir(exist_ok=True)
    return {
        "segment": ["segment", str(src), "--bundle", str(tmp_path / "no_such_bundle"), "--output", str(out)],
        "batch": ["batch", str(tmp_path / "pred"), "--bundle", str(tmp_path / "no_such_bundle"), "--output", str(out)],
        "evaluate": ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out)],
        "report": ["report", str(tmp_path / "pred"), "-o", str(out / "report.html")],
    }[command]


@pytest.mark.parametrize("command", ["segment", "batch", "evaluate", "report"])
@pytest.mark.parametrize("kind", ["existing-file", "below-a-file", "immutable"])
def test_unwritable_output_is_refused_first(bad_outputs, tmp_path, command, kind, capsys):
    if kind not in bad_outputs:
        pytest.skip("chattr +i is not available on this file system")
    out = bad_outputs[kind]
    if command == "report" and kind == "existing-file":
        out = out.parent / "report_dir"
        out.mkdir()
        argv = ["report", str(tmp_path / "pred"), "-o", str(out)]  # a folder where the page should go
    else:
        argv = _argv(command, out, tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medseg: error:"), err
    assert "bundle" not in lines[0] and ("-o" in lines[0] or "--output" in lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_writable_new_folder_is_not_created_by_the_check(tmp_path):
    from medseg.io.atomic import check_writable_dir

    target = tmp_path / "a" / "b"
    assert check_writable_dir(target) == target
    assert list(tmp_path.iterdir()) == []
