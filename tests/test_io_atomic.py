"""Atomic writes: nothing at the final path on failure, normal permissions on success."""

from __future__ import annotations

import os
import stat

import pytest

from medseg.io.atomic import atomic_dir, atomic_path, atomic_write_text


def test_failure_leaves_nothing_and_keeps_old_file(tmp_path):
    final = tmp_path / "seg.nii.gz"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            assert tmp.name.endswith(".nii.gz")  # suffix kept so writers sniff the format
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "case") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "case").stat().st_mode) == 0o755


def test_atomic_dir_refuses_nothing_half_done(tmp_path):
    with pytest.raises(KeyError):
        with atomic_dir(tmp_path / "case") as d:
            (d / "seg.nii.gz").write_text("partial")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []
