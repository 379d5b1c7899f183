"""`make test` without the Debian tools: the run ends with the skipped tests and the one command
that installs what they need (tests/skip_summary.py, a plugin loaded by conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = '''
import pytest

def test_validator():
    pytest.skip("dciodvfy (dicom3tools) not installed; .ci/run installs it")

def test_pacs():
    pytest.skip("Debian's orthanc/orthanc-dicomweb not installed")

def test_browser():
    pytest.skip("playwright (dev extra) is not installed")

def test_runs():
    assert 1 + 1 == 2
'''


def test_skipped_tests_and_the_install_command_are_printed(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "skip_summary", "-q", "-p", "no:cacheprovider",
                           "test_sample.py"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out[-2000:]
    assert "3 skipped test(s)" in out
    for name in ("test_validator", "test_pacs", "test_browser"):
        assert f"test_sample.py::{name}" in out
    (install,) = [ln.strip() for ln in out.splitlines() if "apt-get install" in ln]
    assert install.split()[-3:] == ["dicom3tools", "orthanc", "orthanc-dicomweb"]  # not playwright


def test_the_packages_named_are_the_ones_ci_installs():
    from skip_summary import DEBIAN_PACKAGES

    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    for pkg in {"dicom3tools", "dcmtk", "orthanc", "orthanc-dicomweb", "chromium"}:
        assert pkg in DEBIAN_PACKAGES.values() and f"need+=({pkg})" in ci
