from __future__ import annotations

import subprocess
import sys

from medseg import cli
from medseg.errors import InputError, MedsegError


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "medseg", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "COMMAND" in out.stdout


def test_medseg_error_maps_to_exit_2_one_line(capsys, monkeypatch):
    def boom(args):
        raise InputError("the file x.dcm is truncated\n before pixel data")

    monkeypatch.setattr(cli, "build_parser", lambda: _FakeParser(boom))
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated before pixel data" in err
    assert "Traceback" not in err


class _FakeParser:
    def __init__(self, fn):
        self.fn = fn

    def parse_args(self, argv):
        class NS:
            pass

        ns = NS()
        ns._run = self.fn
        return ns


def test_error_hierarchy():
    assert issubclass(InputError, MedsegError)
    assert MedsegError.exit_code == 2


def test_closed_output_pipe_is_quiet():
    # `medseg data list | head -1`: the reader closes the pipe early; no traceback on stderr.
    proc = subprocess.run(f"{sys.executable} -m medseg data list | head -c 10 >/dev/null",
                          shell=True, capture_output=True, text=True)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
