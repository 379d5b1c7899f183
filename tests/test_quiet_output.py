"""Quiet output: while a command runs without ``--verbose``, MONAI's INFO log lines and the libraries'
deprecation notes (torch, MONAI) do not reach stderr; medseg's warnings and the readers' warnings
about the input do. ``--verbose`` shows them all. Checked on captured stderr, in process through
``medseg.cli.main`` (a real command) and for the mechanism, and the logging state is restored."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from medseg import cli, logsafe

TORCH_FILE = os.path.join(os.sep, "venv", "site-packages", "torch", "nn", "modules", "module.py")
MONAI_FILE = os.path.join(os.sep, "venv", "site-packages", "monai", "transforms", "inverse.py")


@pytest.fixture
def monai_style_logger():
    """A logger set up as MONAI's ``get_logger`` does: its own stderr handler at INFO."""
    import sys

    logger = logging.getLogger("monai.bundle.test_quiet")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)


def _emit(tag: str, logger: logging.Logger) -> None:
    logger.info(f"INFO from MONAI {tag}")
    warnings.warn_explicit(f"torch feature {tag} is deprecated", FutureWarning, TORCH_FILE, 1)
    warnings.warn_explicit(f"no invertible transforms {tag}", UserWarning, MONAI_FILE, 1)
    warnings.warn_explicit(f"Invalid value for VR DS {tag}", UserWarning, "/venv/site-packages/pydicom/valuerep.py", 1)
    warnings.warn_explicit(f"slice gap of 3 mm {tag}", UserWarning, logsafe.__file__, 1)


@pytest.mark.parametrize("verbose", [False, True])
def test_library_notes_hidden_unless_verbose(verbose, capfd, monai_style_logger, monkeypatch):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    logsafe.install()
    tag = f"v{int(verbose)}"
    disable_before = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logsafe.install()
        with logsafe.quiet_libraries(verbose):
            _emit(tag, monai_style_logger)
    err = capfd.readouterr().err
    assert f"medseg: warning: slice gap of 3 mm {tag}" in err  # medseg's own: always
    assert f"Invalid value for VR DS {tag}" in err  # about the input: always
    for library_note in (f"INFO from MONAI {tag}", f"torch feature {tag} is deprecated",
                         f"no invertible transforms {tag}"):
        assert (library_note in err) is verbose, (library_note, err)
    assert logging.root.manager.disable == disable_before  # the process's logging state is back


def test_a_real_command_runs_quiet_and_verbose(tmp_path, capfd, monai_style_logger, monkeypatch):
    """``medseg convert`` with library notes raised while it runs (the reader patched to emit them)."""
    import nibabel as nib
    import numpy as np

    import medseg.io.nifti as nifti

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "x.nii.gz")
    real = nifti.read_nifti
    calls = iter(["cli-quiet", "cli-verbose"])

    def noisy(*args, **kwargs):
        _emit(next(calls), monai_style_logger)
        return real(*args, **kwargs)

    monkeypatch.setattr(nifti, "read_nifti", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["convert", str(tmp_path / "x.nii.gz"), str(tmp_path / "a.nii")]) == 0
        quiet = capfd.readouterr().err
        assert cli.main(["convert", str(tmp_path / "x.nii.gz"), str(tmp_path / "b.nii"), "--verbose"]) == 0
        verbose = capfd.readouterr().err
    assert "slice gap of 3 mm cli-quiet" in quiet and "INFO from MONAI" not in quiet and "deprecated" not in quiet
    assert "INFO from MONAI cli-verbose" in verbose and "torch feature cli-verbose is deprecated" in verbose


def test_verbose_is_accepted_after_nested_actions():
    args = cli.build_parser().parse_args(["bundle", "verify", "some_bundle", "--verbose"])
    assert args.verbose is True
    assert not getattr(cli.build_parser().parse_args(["bundle", "list"]), "verbose", False)
