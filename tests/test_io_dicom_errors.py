"""Bad DICOM inputs: each raises the right typed error, with a one-line message naming the file
(never the patient), and leaves nothing behind (no temporary extraction folders)."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.data.dicom_writer import write_dicom_series
from medseg.errors import GeometryError, InputError, SeriesSelectionError, UnsafeInputError
from medseg.io.dicom import read_dicom

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "ID-998877"
AFFINE = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 20.0], [0, 0, 2.0, -60.0], [0, 0, 0, 1]])


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path, monkeypatch):
    """Point tempfile at a private folder so leftovers can be detected."""
    tmpdir = tmp_path / "systmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    yield
    assert list(tmpdir.iterdir()) == [], "temporary files left behind"


def _series(folder: Path, n: int = 6, **kw) -> list[Path]:
    vol = np.arange(10 * 8 * n, dtype=np.float32).reshape(10, 8, n) - 200
    kw.setdefault("patient_name", PATIENT_NAME)
    kw.setdefault("patient_id", PATIENT_ID)
    return write_dicom_series(vol, kw.pop("affine", AFFINE), folder, **kw)


def _check_message(exc: pytest.ExceptionInfo, *must: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    assert PATIENT_NAME.split("^")[0] not in msg and PATIENT_ID not in msg
    for m in must:
        assert m.lower() in msg.lower(), msg


def _edit(path: Path, fn) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path, enforce_file_format=True)


def test_truncated_inside_header(tmp_path):
    files = _series(tmp_path / "s")
    data = files[2].read_bytes()
    files[2].write_bytes(data[:600])
    with pytest.raises(InputError) as exc:
        read_dicom(tmp_path / "s", progress=False)
    assert not isinstance(exc.value, UnsafeInputError)
    _check_message(exc, files[2].name, "truncated")


def test_truncated_inside_pixel_data(tmp_path):
    files = _series(tmp_path / "s")
    data = files[3].read_bytes()
    files[3].write_bytes(data[:-40])
    with pytest.raises(InputError) as exc:
        read_dicom(tmp_path / "s", progress=False)
    assert not isinstance(exc.value, UnsafeInputError)
    _check_message(exc, files[3].name, "truncated")


def test_missing_slice_refused_then_filled_when_allowed(tmp_path):
    files = _series(tmp_path / "s", n=7)
    files[3].unlink()
    with pytest.raises(GeometryError) as exc:
        read_dicom(tmp_path / "s", progress=False)
    _check_message(exc, "missing slice", files[2].name, files[4].name)

    img = read_dicom(tmp_path / "s", allow_missing_slices=True, progress=False)
    assert img.shape == (1, 10, 8, 7)
    assert img.meta["missing_slices"] == [3]
    full = np.arange(10 * 8 * 7, dtype=np.float32).reshape(10, 8, 7) - 200
    keep = [0, 1, 2, 4, 5, 6]
    np.testing.assert_array_equal(img[0].numpy()[:, :, keep], full[:, :, keep])
    assert np.all(img[0].numpy()[:, :, 3] == full[:, :, keep].min())
    np.testing.assert_allclose(img.affine.numpy(), AFFINE, atol=1e-5)
    assert img.meta["sop_instance_uids"][3] == ""


def test_two_series_need_a_selection(tmp_path):
    _series(tmp_path / "mix" / "a", n=5, series_description="liver venous")
    _series(tmp_path / "mix" / "b", n=3, modality="MR", series_description="T1 axial")
    with pytest.raises(SeriesSelectionError) as exc:
        read_dicom(tmp_path / "mix", progress=False)
    _check_message(exc, "liver venous", "T1 axial", "--series", "5 files", "3 files")
    ct_uid = pydicom.dcmread(next((tmp_path / "mix" / "a").iterdir())).SeriesInstanceUID
    assert ct_uid in str(exc.value)

    assert read_dicom(tmp_path / "mix", series=ct_uid, progress=False).shape[-1] == 5
    assert read_dicom(tmp_path / "mix", series="modality=MR", progress=False).meta["modality"] == "MR"
    assert read_dicom(tmp_path / "mix", series="description~LIVER", progress=False).shape[-1] == 5
    assert read_dicom(tmp_path / "mix", series="largest", progress=False).shape[-1] == 5
    with pytest.raises(SeriesSelectionError):
        read_dicom(tmp_path / "mix", series="modality=PT", progress=False)


def test_slice_without_image_position(tmp_path):
    files = _series(tmp_path / "s")
    _edit(files[1], lambda ds: delattr(ds, "ImagePositionPatient"))
    with pytest.raises(GeometryError) as exc:
        read_dicom(tmp_path / "s", progress=False)
    _check_message(exc, files[1].name, "ImagePositionPatient")


def test_inconsistent_orientation(tmp_path):
    files = _series(tmp_path / "s")

    def tilt(ds):
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9998, -0.02]
    _edit(files[4], tilt)
    with pytest.raises(GeometryError) as exc:
        read_dicom(tmp_path / "s", progress=False)
    _check_message(exc, "orientation", files[4].name)


def test_uneven_spacing_and_duplicates(tmp_path):
    files = _series(tmp_path / "s")

    def shift(ds):
        ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.7
    _edit(files[2], shift)
    with pytest.raises(GeometryError) as exc:
        read_dicom(tmp_path / "s", progress=False)
    _check_message(exc, "uneven")

    files = _series(tmp_path / "d")
    ipp = pydicom.dcmread(files[1]).ImagePositionPatient

    def dup(ds):
        ds.ImagePositionPatient = ipp
    _edit(files[2], dup)
    with pytest.raises(GeometryError) as exc:
        read_dicom(tmp_path / "d", progress=False)
    _check_message(exc, "duplicate")


def test_gantry_tilt_refused(tmp_path):
    tilted = AFFINE.copy()
    tilted[:3, 2] = [0.0, 2.0 * np.tan(np.radians(15)), 2.0]  # slice offset leans along y
    _series(tmp_path / "s", affine=tilted)
    with pytest.raises(GeometryError) as exc:
        read_dicom(tmp_path / "s", progress=False)
    _check_message(exc, "gantry tilt", "15.0 degrees")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as exc:
        read_dicom(tmp_path / "empty", progress=False)
    _check_message(exc, "empty")


def test_folder_without_dicom(tmp_path):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "a.txt").write_text("hello")
    (d / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300)
    with pytest.raises(InputError) as exc:
        read_dicom(d, progress=False)
    _check_message(exc, "no DICOM", "2 non-DICOM")


def test_non_dicom_files_beside_a_series_are_skipped_and_counted(tmp_path):
    _series(tmp_path / "s")
    (tmp_path / "s" / "README.txt").write_text("not an image")
    (tmp_path / "s" / "sub").mkdir()
    (tmp_path / "s" / "sub" / "x.bin").write_bytes(os.urandom(500))
    img = read_dicom(tmp_path / "s", progress=False)
    assert img.shape == (1, 10, 8, 6) and img.meta["skipped_files"] == 2


def _absurd_file(path: Path) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "MR"
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 100000
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0" * 64
    ds.save_as(path, enforce_file_format=True)


def test_absurd_declared_size_fails_fast_without_allocating(tmp_path):
    path = tmp_path / "bomb.dcm"
    _absurd_file(path)
    assert path.stat().st_size < 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(UnsafeInputError) as exc:
            read_dicom(path, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5
    assert peak < 50 * 2**20
    _check_message(exc, "bomb.dcm", "MEDSEG_MAX_VOXELS")


def test_voxel_cap_is_configurable(tmp_path, monkeypatch):
    _series(tmp_path / "s")
    monkeypatch.setenv("MEDSEG_MAX_VOXELS", "100")
    with pytest.raises(UnsafeInputError):
        read_dicom(tmp_path / "s", progress=False)


def _zip_with(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_archive_with_parent_path_refused(tmp_path):
    files = _series(tmp_path / "s", n=3)
    arc = tmp_path / "evil.zip"
    _zip_with(arc, {"ok/0.dcm": files[0].read_bytes(), "../escaped.dcm": files[1].read_bytes()})
    with pytest.raises(UnsafeInputError) as exc:
        read_dicom(arc, progress=False)
    _check_message(exc, "evil.zip", "../escaped.dcm")
    assert not (tmp_path / "escaped.dcm").exists()
    assert not (Path(tempfile.gettempdir()).parent / "escaped.dcm").exists()


def test_tar_with_absolute_path_symlink_or_device_refused(tmp_path):
    files = _series(tmp_path / "s", n=3)
    data = files[0].read_bytes()
    for kind in ("absolute", "symlink", "device"):
        arc = tmp_path / f"{kind}.tar.gz"
        with tarfile.open(arc, "w:gz") as tf:
            info = tarfile.TarInfo("series/0.dcm")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            bad = tarfile.TarInfo("/tmp/abs.dcm" if kind == "absolute" else "series/x")
            if kind == "absolute":
                bad.size = len(data)
                tf.addfile(bad, io.BytesIO(data))
            elif kind == "symlink":
                bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(bad)
            else:
                bad.type, bad.devmajor, bad.devminor = tarfile.CHRTYPE, 1, 3
                tf.addfile(bad)
        with pytest.raises(UnsafeInputError) as exc:
            read_dicom(arc, progress=False)
        _check_message(exc, arc.name)


def test_archive_over_declared_size_limit_refused(tmp_path, monkeypatch):
    files = _series(tmp_path / "s", n=3)
    arc = tmp_path / "big.zip"
    _zip_with(arc, {f"{i}.dcm": f.read_bytes() for i, f in enumerate(files)})
    monkeypatch.setenv("MEDSEG_MAX_ARCHIVE_BYTES", "2000")
    with pytest.raises(UnsafeInputError) as exc:
        read_dicom(arc, progress=False)
    _check_message(exc, "big.zip", "MEDSEG_MAX_ARCHIVE_BYTES")


def test_zip_and_tar_archives_read_like_the_folder(tmp_path):
    files = _series(tmp_path / "s", n=5, order="shuffled")
    ref = read_dicom(tmp_path / "s", progress=False)
    z = tmp_path / "series.zip"
    _zip_with(z, {f"study/series/{f.name}": f.read_bytes() for f in files})
    t = tmp_path / "series.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        for f in files:
            tf.add(f, arcname=f"x/{f.name}")
    for arc in (z, t):
        img = read_dicom(arc, progress=False)
        np.testing.assert_array_equal(img.numpy(), ref.numpy())
        np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy())
        assert img.meta["sop_instance_uids"] == ref.meta["sop_instance_uids"]
        assert all(f.startswith(f"{arc}!") for f in img.meta["dicom_files"])


@pytest.mark.filterwarnings("ignore")
def test_corrupted_real_files_give_typed_errors_only(tmp_path):
    """Seeded fuzz: cut or flip bytes of real files; every failure must be a MedsegError."""
    import logging

    from medseg.data import sample
    from medseg.errors import MedsegError

    logging.getLogger("medseg.io.dicom").setLevel(logging.ERROR)
    sources = [Path(sample(n)).read_bytes() for n in ("ct_small", "enhanced_ct", "cr_rg3")]
    rng = np.random.default_rng(2024)
    refused = {"cut": 0, "flip": 0}
    n = 60
    for it in range(n):
        data = bytearray(sources[it % 3])
        kind = "cut" if it % 2 else "flip"
        if kind == "cut":
            data = data[: int(rng.integers(132, len(data) - 2))]
        else:
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(132, min(len(data), 3000)))] = int(rng.integers(0, 256))
        path = tmp_path / f"f{it}.dcm"
        path.write_bytes(bytes(data))
        try:
            read_dicom(path, progress=False)
        except MedsegError as exc:
            refused[kind] += 1
            msg = str(exc)
            assert "\n" not in msg
            assert path.name in msg or "series" in msg, msg
        path.unlink()
    assert refused["cut"] == n // 2, refused  # every truncated file is refused
