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


@pytest.mark.parametrize("name, suffix", [
    ("series-1.2.840.10008.5.nii.gz", ".nii.gz"), ("seg.nii.gz", ".nii.gz"), ("a.b.c.dcm", ".dcm"),
    ("x.tar.gz", ".tar.gz"), ("report.html", ".html"), ("noext", ""),
])
def test_temporary_keeps_the_format_suffix(tmp_path, name, suffix):
    with atomic_path(tmp_path / name) as tmp:
        assert tmp.name.endswith(".part" + suffix)
        tmp.write_bytes(b"x")
    assert (tmp_path / name).read_bytes() == b"x"


def test_save_to_a_uid_named_nifti(tmp_path):
    import numpy as np
    import torch
    from monai.data import MetaTensor

    from medseg.io import load, save

    img = MetaTensor(torch.from_numpy(np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)),
                     affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64)))
    out = save(img, tmp_path / "series-1.2.840.113619.2.55.nii.gz")
    assert np.array_equal(load(out).numpy(), img.numpy())
