"""Untrusted inputs: absurd declared sizes, truncation, corruption, non-finite voxels.

Every case goes through the public ``medseg.io.load`` and must raise a typed error with a
one-line message, quickly, without allocating what the header claims.
"""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
import zlib

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from medseg.errors import ConfigError, InputError, UnsafeInputError
from medseg.io import describe, load
from medseg.io.safety import check_declared_size, check_finite, max_voxels


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def _huge_nifti_header() -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 4096))  # 2**36 float32 voxels = 256 GB
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(np.eye(4), code=1)
    block = hdr.binaryblock + b"\0" * 4
    return block + b"\0" * (1024 - len(block))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_1kb_nifti_claiming_256gb_fails_fast_without_allocating(tmp_path, suffix):
    raw = _huge_nifti_header()
    assert len(raw) == 1024
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(UnsafeInputError) as info:
        load(path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 32 * 2**20, f"peak Python allocation {peak} bytes"
    msg = _one_line(info.value)
    assert "68719476736 voxels" in msg and "256.0 GB" in msg and "MEDSEG_MAX_VOXELS" in msg


@pytest.mark.parametrize(
    "name, text",
    [
        ("huge.mha", "ObjectType = Image\nNDims = 3\nDimSize = 4096 4096 4096\nElementType = MET_FLOAT\n"
                     "ElementDataFile = LOCAL\n"),
        ("huge.nrrd", "NRRD0004\ntype: float\ndimension: 3\nsizes: 4096 4096 4096\nencoding: raw\n"
                      "endian: little\n\n"),
    ],
)
def test_itk_header_claiming_256gb_fails_fast(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode() + b"\0" * 512)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(UnsafeInputError) as info:
        load(path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 32 * 2**20
    assert "68719476736 voxels" in _one_line(info.value)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_png_claiming_ten_gigapixels_is_refused(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _png_chunk(b"IEND", b""))
    t0 = time.perf_counter()
    with pytest.raises(UnsafeInputError) as info:
        load(path)
    assert time.perf_counter() - t0 < 1.0
    _one_line(info.value)


def test_voxel_cap_follows_environment(tmp_path, monkeypatch):
    arr = np.zeros((10, 10, 10), np.float32)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "a.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "a.mha"))
    tifffile.imwrite(tmp_path / "a.tif", arr[0])
    monkeypatch.setenv("MEDSEG_MAX_VOXELS", "99")
    assert max_voxels() == 99
    for name in ("a.nii.gz", "a.mha", "a.tif"):
        with pytest.raises(UnsafeInputError, match="over the cap of 99 voxels"):
            load(tmp_path / name)
    monkeypatch.setenv("MEDSEG_MAX_VOXELS", "1000")
    assert load(tmp_path / "a.nii.gz").shape == (1, 10, 10, 10)
    monkeypatch.setenv("MEDSEG_MAX_VOXELS", "lots")
    with pytest.raises(InputError, match="MEDSEG_MAX_VOXELS"):
        max_voxels()


def test_check_declared_size_api():
    assert check_declared_size((2, 3, 4), 2, file_size=48 + 352, data_offset=352) == 48
    with pytest.raises(InputError, match="truncated"):
        check_declared_size((2, 3, 4), 2, file_size=47 + 352, data_offset=352)
    with pytest.raises(InputError, match="zero or negative"):
        check_declared_size((2, 0, 4), 2)
    with pytest.raises(UnsafeInputError):
        check_declared_size((2**40, 2**40), 1)  # Python ints: no overflow to a small number
    check_finite(np.arange(5, dtype=np.int16), "ints")  # integers are always finite
    with pytest.raises(InputError, match="1 of 3 voxels"):
        check_finite(np.array([0.0, np.inf, 1.0]), "x")
    check_finite(np.array([np.nan]), "x", allow_nonfinite=True)


def _nifti_bytes(tmp_path, gz: bool) -> bytes:
    path = tmp_path / ("src.nii.gz" if gz else "src.nii")
    nib.save(nib.Nifti1Image(np.arange(20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20), np.eye(4)), path)
    return path.read_bytes()


def test_truncated_uncompressed_nifti(tmp_path):
    data = _nifti_bytes(tmp_path, gz=False)
    path = tmp_path / "cut.nii"
    path.write_bytes(data[:-1000])
    with pytest.raises(InputError, match="truncated") as info:
        load(path)
    assert "32000 bytes" in _one_line(info.value)
    assert not isinstance(info.value, UnsafeInputError)


def test_truncated_gzip_nifti(tmp_path):
    data = _nifti_bytes(tmp_path, gz=True)
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as info:
        load(path)
    _one_line(info.value)


def test_corrupt_gzip_nifti(tmp_path):
    data = bytearray(_nifti_bytes(tmp_path, gz=True))
    data[30:60] = b"x" * 30  # inside the deflate stream, header of the gzip intact
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as info:
        load(path)
    _one_line(info.value)


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.nii.gz", b"", "empty"),
        ("empty.nii", b"", "empty"),
        ("notes.nii.gz", b"patient list\nnot an image\n", "not gzip"),
        ("notes.nii", b"not an image\n" * 50, "not a readable NIfTI"),
        ("empty.mha", b"", "empty"),
        ("notes.nrrd", b"hello\n" * 20, "not a readable NRRD"),
        ("notes.tif", b"hello\n" * 20, "not a readable TIFF"),
        ("notes.png", b"hello\n" * 20, "not a readable PNG"),
        ("notes.xyz", b"hello\n", "unsupported input"),
    ],
)
def test_empty_text_and_unknown_files(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load(path)
    msg = _one_line(info.value)
    assert expected in msg and str(tmp_path) not in msg


def test_unknown_format_lists_supported(tmp_path):
    path = tmp_path / "scan.bmp"
    path.write_bytes(b"BM" + b"\0" * 100)
    with pytest.raises(InputError, match=r"NIfTI \(\.nii, \.nii\.gz\).*NRRD.*TIFF"):
        load(path)


def test_negative_dimension_in_nifti_header(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4, 4, 4))
    block = bytearray(hdr.binaryblock)
    struct.pack_into("<h", block, 42, -5)  # dim[1]
    path = tmp_path / "neg.nii"
    path.write_bytes(bytes(block) + b"\0" * 260)
    with pytest.raises(InputError, match="zero or negative"):
        load(path)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_truncated_raw_itk_files(tmp_path, suffix):
    src = tmp_path / f"ok{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((10, 20, 30), np.int16)), str(src))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(src.read_bytes()[:-500])
    with pytest.raises(InputError, match="truncated: the header declares 12000 bytes"):
        load(cut)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_truncated_compressed_itk_files(tmp_path, suffix, capfd):
    src = tmp_path / f"ok{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(6000, dtype=np.int16).reshape(10, 20, 30)), str(src), True)
    cut = tmp_path / f"cut{suffix}"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) - 40])
    with pytest.raises(InputError, match="truncated or corrupt") as info:
        load(cut)
    _one_line(info.value)
    assert capfd.readouterr().err == ""  # ITK's C++ chatter is folded into the message


def test_detached_header_pointing_outside_its_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    header = tmp_path / "sub" / "evil.mhd"
    header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                      "ElementDataFile = ../secret.raw\n")
    (tmp_path / "secret.raw").write_bytes(b"\1" * 8)
    with pytest.raises(UnsafeInputError, match="outside its folder"):
        load(header)


def test_truncated_detached_nhdr(tmp_path):
    src = tmp_path / "vol.nhdr"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32)), str(src))
    raw = tmp_path / "vol.raw"
    assert raw.exists()
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(InputError, match="truncated"):
        load(src)


def test_truncated_tiff_strip(tmp_path):
    src = tmp_path / "ok.tif"
    tifffile.imwrite(src, np.arange(100 * 100, dtype=np.uint16).reshape(100, 100))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(src.read_bytes()[:-3000])
    with pytest.raises(InputError, match="truncated"):
        load(cut)


def test_truncated_png(tmp_path):
    from PIL import Image

    src = tmp_path / "ok.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(src)
    cut = tmp_path / "cut.png"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        load(cut)
    _one_line(info.value)


def test_nonfinite_voxels_refused_with_count_unless_allowed(tmp_path):
    arr = np.ones((5, 6, 7), np.float32)
    arr[1, 2, 3] = np.nan
    arr[4, 5, 6] = np.inf
    arr[0, 0, 0] = -np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii.gz")
    img = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)).copy())
    sitk.WriteImage(img, str(tmp_path / "nan.mha"))
    tifffile.imwrite(tmp_path / "nan.tif", arr[:, :, 0].T.copy())
    expected = {"nan.nii.gz": "3 of 210", "nan.mha": "3 of 210", "nan.tif": "1 of 30"}
    for name, count in expected.items():
        with pytest.raises(InputError, match=count):
            load(tmp_path / name)
        out = load(tmp_path / name, allow_nonfinite=True).numpy()
        assert np.count_nonzero(~np.isfinite(out)) == int(count.split()[0])
        info = describe(tmp_path / name)  # describing a file reports the count instead of failing
        assert info["nonfinite_voxels"] == int(count.split()[0]) and info["value_range"] == [1.0, 1.0]


def test_label_map_with_fractions_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 0.5, np.float32), np.eye(4)), tmp_path / "frac.nii.gz")
    with pytest.raises(InputError, match="non-integer"):
        load(tmp_path / "frac.nii.gz", kind="label")
    with pytest.raises(ConfigError):
        load(tmp_path / "frac.nii.gz", kind="mask")


def test_small_gzip_claiming_4gb_under_the_cap_is_truncated_not_allocated(tmp_path):
    """1e9 float32 voxels is under the voxel cap, but 1 KB of deflate cannot hold 4 GB."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1000, 1000, 1000))
    hdr.set_data_dtype(np.float32)
    path = tmp_path / "claims4gb.nii.gz"
    path.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 676))
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"cannot hold the 4000000\d* bytes") as info:
        load(path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 32 * 2**20
    assert not isinstance(info.value, UnsafeInputError)


def test_compressed_metaimage_checks_ratio_and_detached_path(tmp_path):
    local = tmp_path / "small.mha"
    local.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 1000 1000 500\nElementType = MET_FLOAT\n"
                      b"CompressedData = True\nElementDataFile = LOCAL\n" + zlib.compress(b"\0" * 1000))
    with pytest.raises(InputError, match="cannot hold"):
        load(local)
    (tmp_path / "sub").mkdir()
    detached = tmp_path / "sub" / "evil.mhd"
    detached.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                        "CompressedData = True\nElementDataFile = /etc/hostname\n")
    with pytest.raises(UnsafeInputError, match="outside its folder"):
        load(detached)
