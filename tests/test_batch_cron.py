"""`medseg batch` under cron: stdout holds only the summary table, progress goes to stderr as plain
periodic lines when stderr is not a terminal (a bar when it is), exit codes 0 / 3 / 2."""

from __future__ import annotations

import io

import pytest

from medseg import cli
from medseg.batch.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal_and_a_bar_on_one(monkeypatch):
    monkeypatch.delenv("MEDSEG_PROGRESS", raising=False)
    plain = io.StringIO()
    p = Progress(3, stream=plain, interval_s=0)
    for outcome in ("done", "failed", "skipped"):
        p.update(outcome)
    p.close()
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("medseg batch: 1/3 cases (1 done, 0 failed, 0 skipped)")
    assert lines[-1].startswith("medseg batch: 3/3 cases (1 done, 1 failed, 1 skipped)")
    assert "\r" not in plain.getvalue() and "\x1b" not in plain.getvalue()

    quiet = io.StringIO()
    p = Progress(3, stream=quiet, interval_s=3600)  # periodic: nothing until the interval or the end
    p.update()
    assert quiet.getvalue() == ""
    p.close()
    assert quiet.getvalue().count("\n") == 1

    tty = _Terminal()
    p = Progress(2, stream=tty)
    p.update()
    p.close()
    assert "\r" in tty.getvalue()  # tqdm redraws its bar in place


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from test_batch_job import make_band_run

    return make_band_run(tmp_path_factory.mktemp("run"), (48, 48, 16))


def test_stdout_is_the_summary_and_exit_codes(run_dir, tmp_path, monkeypatch, capsys):
    from test_batch_job import _write_series

    monkeypatch.setenv("MEDSEG_PROGRESS_INTERVAL", "0")
    monkeypatch.delenv("MEDSEG_PROGRESS", raising=False)
    src = tmp_path / "in"
    _write_series(src / "a", seed=31)
    out = tmp_path / "out"
    args = ["batch", str(src), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[:2] == [
        f"{'done':>8} {'failed':>8} {'skipped':>8} {'seconds':>9} {'cases/h':>9}",
        captured.out.splitlines()[1]]
    assert captured.out.splitlines()[1].split()[:3] == ["1", "0", "0"]
    assert captured.out.splitlines()[-1] == f"manifest: {out / 'manifest.jsonl'}"
    assert "medseg batch: 1/1 cases (1 done" in captured.err and "\r" not in captured.err
    assert "cases" not in captured.out.replace("cases/h", "")

    (src / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not gzip")
    assert cli.main(args) == 3  # the job ran; one case failed
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].split()[:3] == ["0", "1", "1"]
    assert "failed: broken" in captured.out

    assert cli.main([*args, "--limit", "0"]) == 2  # bad invocation: one line, nothing on stdout
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
