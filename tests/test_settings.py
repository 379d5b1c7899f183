"""Settings read from the environment in one place (medseg.settings), at the CLI edge; the
library follows what it is given; the bundle search path works in an installed package (a wheel
carries the shipped bundles as medseg/bundles/, no repository-relative path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medseg import settings
from medseg.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def test_from_env_parses_each_variable(tmp_path):
    env = {"MEDSEG_PROGRESS": "0", "MEDSEG_BUNDLES": os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]),
           "MEDSEG_CACHE": str(tmp_path / "cache"), "MEDSEG_MAX_VOXELS": " 99 ", "HOME": "/x"}
    s = settings.from_env(env)
    assert s.progress is False and s.bundle_paths == (tmp_path / "a", tmp_path / "b")
    assert s.cache_dir == tmp_path / "cache" and s.limit_text("MEDSEG_MAX_VOXELS") == "99"
    assert s.limit_text("MEDSEG_MAX_EXPANSION") == ""
    d = settings.from_env({})
    assert d.progress is True and d.bundle_paths == () and d.cache_dir is None


def test_library_follows_the_settings_it_is_given(monkeypatch):
    from medseg.io.safety import DEFAULT_MAX_VOXELS, max_voxels

    monkeypatch.delenv("MEDSEG_MAX_VOXELS", raising=False)
    assert max_voxels() == DEFAULT_MAX_VOXELS
    with settings.using(settings.Settings(limits={"MEDSEG_MAX_VOXELS": "1000"}, progress=False)):
        assert max_voxels() == 1000 and settings.progress_enabled(True) is False
        with settings.using(settings.Settings()):  # nested blocks stack
            assert max_voxels() == DEFAULT_MAX_VOXELS and settings.progress_enabled(True) is True
        with settings.using(settings.Settings(limits={"MEDSEG_MAX_VOXELS": "lots"})), \
                pytest.raises(InputError, match="MEDSEG_MAX_VOXELS='lots' is not a number"):
            max_voxels()
    assert max_voxels() == DEFAULT_MAX_VOXELS
    assert settings.progress_enabled(False) is False


def test_cli_reads_the_environment_once_per_command(tmp_path, monkeypatch):
    """`medseg` reads $MEDSEG_* at its start and runs the command under those settings: an
    environment changed while the command runs does not reach it."""
    from medseg import cli
    from medseg.commands import info

    seen = []

    def fake_run(args):
        os.environ["MEDSEG_PROGRESS"] = "1"  # too late: the command keeps the settings it started with
        seen.append((settings.current().progress, settings.current().limit_text("MEDSEG_MAX_VOXELS")))
        return 0

    monkeypatch.setenv("MEDSEG_PROGRESS", "0")
    monkeypatch.setenv("MEDSEG_MAX_VOXELS", "123")
    monkeypatch.setattr(info, "run", fake_run)
    assert cli.main(["info", str(tmp_path)]) == 0
    assert seen == [(False, "123")]


def _installed_copy(site: Path) -> Path:
    """The medseg package copied into ``site`` as a wheel installs it, with the shipped bundles
    under medseg/bundles/ and no repository around it."""
    shutil.copytree(REPO / "medseg", site / "medseg", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("xray_chest_lungs",):
        shutil.copytree(REPO / "bundles" / name, site / "medseg" / "bundles" / name,
                        ignore=shutil.ignore_patterns("scripts"))
    return site


def test_bundle_search_path_in_an_installed_package(tmp_path):
    site = _installed_copy(tmp_path / "site")
    extra = tmp_path / "extra"
    extra.mkdir()
    code = ("import json; from medseg.bundle.load import bundle_search_path, resolve_bundle; "
            "print(json.dumps([[str(p) for p in bundle_search_path()], str(resolve_bundle('xray_chest_lungs'))]))")
    env = {**os.environ, "PYTHONPATH": str(site), "MEDSEG_BUNDLES": str(extra)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         check=True).stdout
    paths, found = json.loads(out.strip().splitlines()[-1])
    assert paths == [str(extra), str(site / "medseg" / "bundles")]  # nothing outside the install
    assert found == str(site / "medseg" / "bundles" / "xray_chest_lungs")


def test_source_checkout_searches_its_bundles_folder(monkeypatch):
    from medseg.bundle.load import bundle_search_path

    monkeypatch.delenv("MEDSEG_BUNDLES", raising=False)
    assert bundle_search_path() == [REPO / "bundles"]
