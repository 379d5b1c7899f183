"""Hostile and malformed inputs found by the fuzz campaign (benchmarks/fuzz), one test per class
of failure: each must end in a typed one-line :class:`~medseg.errors.MedsegError` (or read
correctly), quickly and without allocating what a bomb would expand to, and never print a
header value. Every file is built here from medseg's own generators (or nibabel / SimpleITK /
tifffile / Pillow / zipfile writers), then damaged."""

from __future__ import annotations

import gzip
import io
import json
import struct
import sys
import time
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from medseg.cli import main as cli_main
from medseg.data.dicom_writer import write_dicom_series, write_dicom_xray
from medseg.errors import GeometryError, InputError, UnsafeInputError
from medseg.io import load
from medseg.io.safety import GeometryWarning

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.fuzz.mutators import deflated_bomb, raw_dataset_bytes  # noqa: E402  (the fuzz campaign's builders)

NAME, PID, VALUE = "CANARY^HOSTILE^XQZ", "HOSTXQZ1", "HDRHOSTXQZ"
AFFINE = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 20.0], [0, 0, 2.0, -60.0], [0, 0, 0, 1]])


def _series(folder: Path, n: int = 3) -> list[Path]:
    vol = np.arange(10 * 8 * n, dtype=np.float32).reshape(10, 8, n) - 100
    return write_dicom_series(vol, AFFINE, folder, patient_name=NAME, patient_id=PID)


def _raw_write(ds, path: Path, *, deflate_body: bool = False) -> None:
    """Write ``ds`` exactly as given (no validation, file meta as set), body explicit VR LE: the
    fuzz campaign's own serialiser (benchmarks/fuzz/mutators.py)."""
    path.write_bytes(raw_dataset_bytes(ds, deflate_body=deflate_body))


def _set_raw(ds, keyword: str, text: str, vr: str | None = None) -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = tag_for_keyword(keyword)
    raw = text.encode("latin-1")
    raw += b" " * (len(raw) % 2)
    # written byte for byte: decoded (or refused) only by the reader under test
    ds[tag] = RawDataElement(Tag(tag), vr or dictionary_VR(tag), len(raw), raw, 0, False, True)


def _one_line(exc: BaseException, *forbidden: str) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    for word in (NAME, PID, VALUE, *forbidden):
        assert word not in msg
    return msg


def _damaged(tmp_path: Path, edit, *, deflate: bool = False) -> Path:
    files = _series(tmp_path / "s", n=3)
    out = tmp_path / "bad"
    out.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        edit(ds)
        _raw_write(ds, out / f.name, deflate_body=deflate)
    return out


# ---------------------------------------------------------------------------------------------
# DICOM attributes with the wrong number of values, non-finite or zero values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["Rows", "Columns"])
def test_rows_or_columns_with_two_values_is_an_input_error(tmp_path, keyword):
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement

    def edit(ds):
        ds[tag_for_keyword(keyword)] = DataElement(tag_for_keyword(keyword), "US", [8, 10])

    with pytest.raises(InputError) as info:
        load(_damaged(tmp_path, edit))
    assert keyword in _one_line(info.value) and "2 values" in str(info.value)


@pytest.mark.parametrize("keyword,text", [("PixelSpacing", "0.8"), ("ImagePositionPatient", "12.5"),
                                          ("ImageOrientationPatient", "1")])
def test_geometry_attribute_with_one_value_is_a_geometry_error(tmp_path, keyword, text):
    with pytest.raises(GeometryError) as info:
        load(_damaged(tmp_path, lambda ds: _set_raw(ds, keyword, text)))
    assert keyword in _one_line(info.value)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e308"])
def test_nonfinite_or_overflowing_rescale_intercept_is_refused_not_a_nan_volume(tmp_path, text):
    with pytest.raises(InputError) as info:
        load(_damaged(tmp_path, lambda ds: _set_raw(ds, "RescaleIntercept", text)))
    assert "RescaleIntercept" in _one_line(info.value)


def test_zero_rescale_slope_is_refused(tmp_path):
    with pytest.raises(InputError, match="RescaleSlope is 0"):
        load(_damaged(tmp_path, lambda ds: _set_raw(ds, "RescaleSlope", "0")))


@pytest.mark.parametrize("keyword", ["Rows", "Columns"])
def test_zero_rows_or_columns_is_refused_not_a_zero_size_volume(tmp_path, keyword):
    with pytest.raises(InputError) as info:
        load(_damaged(tmp_path, lambda ds: setattr(ds, keyword, 0)))
    assert f"{keyword} is 0" in _one_line(info.value)


def test_value_under_a_numeric_vr_is_named_by_keyword_never_printed(tmp_path):
    with pytest.raises(InputError) as info:
        load(_damaged(tmp_path, lambda ds: _set_raw(ds, "Rows", VALUE, "IS")))
    _one_line(info.value)


def test_infinite_slice_thickness_of_a_single_slice_falls_back_to_1mm(tmp_path):
    files = _series(tmp_path / "s", n=1)
    ds = pydicom.dcmread(files[0])
    _set_raw(ds, "SliceThickness", "inf")
    _raw_write(ds, files[0])
    img = load(files[0])
    aff = img.affine.numpy()
    assert np.all(np.isfinite(aff))
    assert np.allclose(np.linalg.norm(aff[:3, :3], axis=0), [0.8, 0.8, 1.0])


def test_positions_that_overflow_give_a_geometry_error(tmp_path):
    files = _series(tmp_path / "s", n=3)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [0, 0, 1.5e308 * (k - 1)]
        ds.save_as(f)
    with pytest.raises(GeometryError):
        load(tmp_path / "s")


# ---------------------------------------------------------------------------------------------
# transfer syntaxes and deflate
# ---------------------------------------------------------------------------------------------


def test_empty_transfer_syntax_is_an_input_error(tmp_path):
    def edit(ds):
        ds.file_meta.TransferSyntaxUID = ""

    with pytest.raises(InputError, match="TransferSyntaxUID is empty"):
        load(_damaged(tmp_path, edit))


def test_unknown_transfer_syntax_is_named_without_its_value(tmp_path):
    def edit(ds):
        ds.file_meta.TransferSyntaxUID = "1.2.3." + "9" * 10

    with pytest.raises(InputError) as info:
        load(_damaged(tmp_path, edit))
    assert "TransferSyntaxUID" in _one_line(info.value, "1.2.3.9999")


def test_deflated_transfer_syntax_with_a_plain_body_is_an_input_error(tmp_path):
    def edit(ds):
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"

    with pytest.raises(InputError, match="not a valid deflate stream"):
        load(_damaged(tmp_path, edit))


def test_deflated_file_still_reads(tmp_path):
    files = _series(tmp_path / "s", n=1)
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    out = tmp_path / "defl.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert np.array_equal(load(out).numpy(), load(files[0]).numpy())


def _deflated_bomb(tmp_path: Path, n_bytes: int) -> Path:
    """A deflated-transfer-syntax file whose body inflates to ``n_bytes`` of pixel data: the fuzz
    campaign's own builder (benchmarks/fuzz/mutators.py), applied to one slice of a phantom."""
    import random

    path = _series(tmp_path / "s", n=1)[0]
    deflated_bomb(path, random.Random(0), n_bytes)
    return path


def _refused_fast_and_small(path: Path, exc_type=UnsafeInputError, seconds: float = 10.0) -> str:
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(exc_type) as info:
        load(path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak Python allocation {peak} bytes"
    assert elapsed < seconds
    return _one_line(info.value)


def test_deflated_dicom_bomb_is_refused_before_inflating_it(tmp_path):
    path = _deflated_bomb(tmp_path, 600 * 2**20)
    assert path.stat().st_size < 2 * 2**20
    assert "decompression bomb" in _refused_fast_and_small(path)


def test_corrupt_length_in_the_middle_of_a_header_is_an_input_error(tmp_path):
    files = _series(tmp_path / "s", n=1)
    data = bytearray(files[0].read_bytes())
    i = data.find(b"\x08\x00\x3e\x10")  # (0008,103E) SeriesDescription, explicit VR: LO + 2-byte length
    assert i > 0
    data[i + 6:i + 8] = b"\xff\xff"
    files[0].write_bytes(bytes(data))
    with pytest.raises(InputError):
        load(files[0])


def test_file_meta_element_with_absurd_length_is_an_input_error(tmp_path):
    files = _series(tmp_path / "s", n=1)
    data = bytearray(files[0].read_bytes())
    i = data.find(b"\x02\x00\x01\x00OB")  # (0002,0001) FileMetaInformationVersion
    data[i + 8:i + 12] = struct.pack("<I", 0xFFFFFFF0)
    files[0].write_bytes(bytes(data))
    with pytest.raises(InputError, match="file meta information"):
        load(files[0])


# ---------------------------------------------------------------------------------------------
# radiographs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword,text", [("PixelSpacing", "nan\\0.2"), ("PixelSpacing", "0.2"),
                                          ("EstimatedRadiographicMagnificationFactor", "inf")])
def test_radiograph_spacing_never_nonfinite(tmp_path, keyword, text):
    path = tmp_path / "dx.dcm"
    write_dicom_xray(np.arange(12 * 10).reshape(12, 10) % 100, 0.2, path, patient_name=NAME, patient_id=PID,
                     spacing_tag="ImagerPixelSpacing" if keyword.startswith("Estimated") else "PixelSpacing",
                     magnification=1.1 if keyword.startswith("Estimated") else None)
    ds = pydicom.dcmread(path)
    _set_raw(ds, keyword, text)
    _raw_write(ds, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        try:
            img = load(path)
        except GeometryError as exc:
            assert keyword in _one_line(exc)
            return
    spacing = np.linalg.norm(img.affine.numpy()[:3, :2], axis=0)
    assert np.all(np.isfinite(spacing)) and np.all(spacing > 0)


# ---------------------------------------------------------------------------------------------
# archives
# ---------------------------------------------------------------------------------------------


def _zip_of_series(tmp_path: Path) -> bytearray:
    files = _series(tmp_path / "s", n=2)
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"study/{f.name}")
    return bytearray(bio.getvalue())


def _patch_all(data: bytearray, local_off: int, central_off: int, fn) -> None:
    for sig, off in ((b"PK\x03\x04", local_off), (b"PK\x01\x02", central_off)):
        i = data.find(sig)
        while i >= 0:
            fn(data, i + off)
            i = data.find(sig, i + 4)


def test_encrypted_zip_member_is_an_input_error(tmp_path):
    data = _zip_of_series(tmp_path)

    def flag(buf, at):
        buf[at] |= 1

    _patch_all(data, 6, 8, flag)
    path = tmp_path / "enc.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="encrypted"):
        load(path)


@pytest.mark.parametrize("method", [6, 9, 99])
def test_unsupported_zip_compression_is_an_input_error(tmp_path, method):
    data = _zip_of_series(tmp_path)

    def set_method(buf, at):
        buf[at:at + 2] = struct.pack("<H", method)

    _patch_all(data, 8, 10, set_method)
    path = tmp_path / "m.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="compression method"):
        load(path)


def test_zip_bomb_under_the_caps_is_refused_before_extracting(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("study/a.dcm", "w", force_zip64=True) as fh:
            zeros = bytes(1 << 22)
            for _ in range(128):  # 512 MB of zeros, about 0.5 MB compressed
                fh.write(zeros)
    assert "decompression bomb" in _refused_fast_and_small(path)


def test_truncated_tar_gz_is_an_input_error(tmp_path):
    import tarfile

    files = _series(tmp_path / "s", n=2)
    path = tmp_path / "s.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for f in files:
            tf.add(f, f"study/{f.name}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        load(path)


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------


def _nifti_bytes(**fields) -> bytes:
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(4, 3, 2), np.diag([2.0, 2.0, 3.0, 1.0]))
    for key, value in fields.items():
        img.header[key] = value
    return img.header.binaryblock + b"\0" * 4 + np.asarray(img.dataobj).tobytes("F")


def _bad_quaternion(tmp_path: Path, sform_code: int) -> Path:
    raw = bytearray(_nifti_bytes(qform_code=1, sform_code=sform_code))
    for off in (256, 260, 264):  # quatern_b/c/d: b^2 + c^2 + d^2 = 1.92 > 1, a negative a^2
        struct.pack_into("<f", raw, off, 0.8)
    path = tmp_path / f"q{sform_code}.nii"
    path.write_bytes(bytes(raw))
    return path


def test_nifti_with_a_negative_quaternion_term_and_an_sform_uses_the_sform(tmp_path):
    path = _bad_quaternion(tmp_path, sform_code=1)
    with pytest.warns(GeometryWarning, match="qform is invalid"):
        img = load(path)
    assert img.meta["affine_source"] == "sform"
    assert np.allclose(img.affine.numpy(), np.diag([2.0, 2.0, 3.0, 1.0]))


def test_nifti_with_a_negative_quaternion_term_only_is_a_geometry_error(tmp_path):
    with pytest.raises(GeometryError, match="quaternion") as info:
        load(_bad_quaternion(tmp_path, sform_code=0))
    _one_line(info.value)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -352.0, 1e30])
def test_nifti_with_an_unusable_vox_offset_is_an_input_error(tmp_path, value):
    raw = bytearray(_nifti_bytes())
    struct.pack_into("<f", raw, 108, value)
    for name, data in (("v.nii", bytes(raw)), ("v.nii.gz", gzip.compress(bytes(raw)))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError):
            load(path)


def _gzip_zeros(prefix: bytes, n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [c.compress(prefix)]
    zeros = bytes(1 << 22)
    while n > 0:
        parts.append(c.compress(zeros[:min(n, len(zeros))]))
        n -= len(zeros)
    parts.append(c.flush())
    return b"".join(parts)


def test_nifti_gzip_bomb_under_the_voxel_cap_is_refused_before_decompressing(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2048, 2048, 64))  # 512 MB of int16 zeros in a 0.5 MB file
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(np.eye(4), 1)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(_gzip_zeros(hdr.binaryblock + b"\0" * 4, 2048 * 2048 * 64 * 2))
    assert path.stat().st_size < 2**20
    assert "decompression bomb" in _refused_fast_and_small(path, seconds=2.0)


def test_nifti_with_dimensions_over_32767_is_written_as_nifti2(tmp_path):
    png = tmp_path / "wide.png"
    Image.fromarray(np.zeros((1, 40000), np.uint8)).save(png)
    out = tmp_path / "wide.nii.gz"
    assert cli_main(["convert", str(png), str(out)]) == 0
    img = nib.load(str(out))
    assert isinstance(img, nib.Nifti2Image) and img.shape[:2] == (40000, 1)


# ---------------------------------------------------------------------------------------------
# NRRD / MetaImage: headers checked before SimpleITK's parser
# ---------------------------------------------------------------------------------------------


def _mha(tmp_path: Path, **edits: str) -> Path:
    img = sitk.GetImageFromArray(np.zeros((2, 3, 4), np.int16))
    path = tmp_path / "x.mha"
    sitk.WriteImage(img, str(path))
    text = path.read_bytes()
    head, _, body = text.partition(b"ElementDataFile = LOCAL\n")
    lines = head.decode().splitlines()
    for key, value in edits.items():
        lines = [ln for ln in lines if not ln.startswith(key + " ")] + [f"{key} = {value}"]
    path.write_bytes("\n".join(lines).encode() + b"\nElementDataFile = LOCAL\n" + body)
    return path


@pytest.mark.parametrize("edits", [{"NDims": "-1"}, {"NDims": "0"}, {"NDims": "100"}, {"DimSize": "-4 3 2"},
                                   {"DimSize": "4 3"}, {"ElementType": "MET_BOGUS"}, {"ElementSpacing": "inf 1 1"},
                                   {"Offset": "nan 0 0"}, {"ElementNumberOfChannels": "-1"}])
def test_malformed_metaimage_header_is_refused_before_simpleitk(tmp_path, edits):
    # NDims = -1 crashed SimpleITK with a segmentation fault: the header is checked in Python first
    with pytest.raises(InputError) as info:
        load(_mha(tmp_path, **edits))
    _one_line(info.value)


@pytest.mark.parametrize("data_file", ["/etc/passwd", "../x.raw", "LIST", "slice%03d.raw 1 3 1"])
def test_metaimage_data_file_outside_its_folder_is_refused(tmp_path, data_file):
    path = tmp_path / "d.mhd"
    path.write_text(f"ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\n"
                    f"ElementDataFile = {data_file}\n")
    with pytest.raises(UnsafeInputError):
        load(path)


def test_nrrd_gzip_bomb_is_refused_before_decompressing(tmp_path):
    head = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2048 2048 64\nendian: little\nencoding: gzip\n\n"
    path = tmp_path / "bomb.nrrd"
    path.write_bytes(head + _gzip_zeros(b"", 2048 * 2048 * 64 * 2))
    assert path.stat().st_size < 2 * 2**20
    assert "decompression bomb" in _refused_fast_and_small(path, seconds=2.0)


@pytest.mark.parametrize("line", ["dimension: -1", "sizes: 4 3", "type: bogus", "encoding: bogus",
                                  "space directions: (inf,0,0) (0,1,0) (0,0,1)"])
def test_malformed_nrrd_header_is_refused(tmp_path, line):
    key = line.split(":")[0]
    base = {"type": "short", "dimension": "3", "sizes": "4 3 2", "endian": "little", "encoding": "raw"}
    base[key] = line.split(":", 1)[1].strip()
    head = "NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in base.items()) + "\n"
    path = tmp_path / "m.nrrd"
    path.write_bytes(head.encode() + bytes(48))
    with pytest.raises(InputError):
        load(path)


def test_coordinates_beyond_float32_are_refused_on_write_not_stored_as_inf(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((2, 3, 4), np.int16))
    img.SetOrigin((1e308, 1e308, 1e308))
    src = tmp_path / "far.nrrd"
    sitk.WriteImage(img, str(src))
    out = tmp_path / "far.nii.gz"
    with pytest.raises(GeometryError, match="32-bit"):
        from medseg.io.write import convert

        convert(src, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


# ---------------------------------------------------------------------------------------------
# TIFF / PNG
# ---------------------------------------------------------------------------------------------


def _tiff_with(tmp_path: Path, tag: int, value: int) -> Path:
    path = tmp_path / f"t{tag}.tif"
    tifffile.imwrite(path, np.zeros((12, 16), np.uint16))
    data = bytearray(path.read_bytes())
    off = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, off)[0]):
        e = off + 2 + 12 * i
        t, typ = struct.unpack_from("<HH", data, e)
        if t == tag:
            struct.pack_into("<H" if typ == 3 else "<I", data, e + 8, value)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("tag,value", [(256, 0), (257, 0), (258, 0), (259, 0), (277, 65535)])
def test_malformed_tiff_tags_are_input_errors(tmp_path, tag, value):
    with pytest.raises(InputError) as info:
        load(_tiff_with(tmp_path, tag, value))
    _one_line(info.value)


def _ome_with(tmp_path: Path, **sizes: str) -> Path:
    """A 2-plane OME-TIFF whose XML is rewritten (appended, ImageDescription pointed at it)."""
    import re

    path = tmp_path / "o.ome.tif"
    tifffile.imwrite(path, np.zeros((2, 12, 16), np.uint16), metadata={"axes": "ZYX"}, ome=True)
    data = bytearray(path.read_bytes())
    start, end = data.find(b"<?xml"), data.find(b"</OME>") + 6
    text = data[start:end].decode()
    for key, value in sizes.items():
        text = re.sub(rf'{key}="[^"]*"', f'{key}="{value}"', text, count=1)
    off = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, off)[0]):
        e = off + 2 + 12 * i
        if struct.unpack_from("<H", data, e)[0] == 270:
            struct.pack_into("<II", data, e + 4, len(text) + 1, len(data))
    path.write_bytes(bytes(data) + text.encode() + b"\0")
    return path


@pytest.mark.parametrize("sizes,exc", [({"SizeX": "100000", "SizeY": "100000", "SizeZ": "100000"}, UnsafeInputError),
                                       ({"SizeZ": "100000"}, InputError), ({"SizeT": "100000"}, InputError),
                                       ({"SizeZ": "3"}, InputError), ({"SizeZ": "nan"}, InputError)])
def test_ome_tiff_declaring_sizes_the_file_does_not_hold_is_refused(tmp_path, sizes, exc):
    # tifffile built a list of 10^15 missing planes (MemoryError) or zero-filled the missing ones
    with pytest.raises(exc) as info:
        load(_ome_with(tmp_path, **sizes))
    _one_line(info.value)


def test_ome_tiff_still_reads(tmp_path):
    img = load(_ome_with(tmp_path))
    assert tuple(img.shape) == (1, 16, 12, 2)


def _png_bomb(path: Path, width: int, height: int) -> None:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    c = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(c.compress(row) for _ in range(height)) + c.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_png_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    _png_bomb(path, 20000, 15000)  # 300 MB of pixels in under 1 MB
    assert path.stat().st_size < 2**20
    assert "decompression bomb" in _refused_fast_and_small(path, seconds=2.0)


def test_png_with_absurd_phys_has_a_default_spacing(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(path, dpi=(1e-30, 1e-30))
    img = load(path)
    assert img.meta["spacing_source"] == "default"


# ---------------------------------------------------------------------------------------------
# the CLI: one line, exit 2, valid JSON, no header value
# ---------------------------------------------------------------------------------------------


def test_cli_one_line_and_no_header_value_for_a_hostile_series(tmp_path, capsys):
    bad = _damaged(tmp_path, lambda ds: _set_raw(ds, "SeriesInstanceUID", f"1.2/../{VALUE}"))
    out = tmp_path / "o" / "x.nii.gz"
    assert cli_main(["convert", str(bad), str(out)]) in (0, 2)
    assert cli_main(["info", str(bad), "--json"]) == 0
    captured = capsys.readouterr()
    for word in (NAME, PID, VALUE):
        assert word not in captured.out and word not in captured.err
    info = json.loads(captured.out.split("\n", 1)[1] if not captured.out.startswith("{") else captured.out,
                      parse_constant=lambda c: pytest.fail(f"JSON constant {c}"))
    assert info["series_instance_uid"].startswith("invalid-uid-")


def test_info_json_never_prints_nan_or_infinity():
    from medseg.commands.info import _json_safe

    text = json.dumps(_json_safe({"a": [1.0, float("inf")], "b": {"c": float("nan")}, "d": "x"}), allow_nan=False)
    assert json.loads(text) == {"a": [1.0, None], "b": {"c": None}, "d": "x"}


@pytest.mark.parametrize("value", ["-1", "0", "999999999"])
def test_metaimage_compressed_size_that_does_not_fit_the_file_is_refused(tmp_path, value):
    # ITK allocates CompressedDataSize bytes before reading them (std::bad_alloc for -1)
    with pytest.raises(InputError, match="CompressedDataSize"):
        load(_mha(tmp_path, CompressedData="True", CompressedDataSize=value))


def test_deflated_dicom_just_over_the_image_floor_is_refused(tmp_path):
    path = _deflated_bomb(tmp_path, 100 * 2**20)  # 100 MB of pixels from ~0.1 MB
    assert "decompression bomb" in _refused_fast_and_small(path)


def test_sparse_label_map_compressing_300_to_1_still_reads(tmp_path):
    # label maps compress far better than images: under 256 MB decoded they are never refused
    lab = np.zeros((512, 512, 400), np.uint8)
    lab[200:260, 180:240, 150:190] = 1
    path = tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.diag([0.8, 0.8, 1.0, 1.0])), str(path))
    assert lab.nbytes > 100 * path.stat().st_size  # a "bomb" by ratio alone
    img = load(path, kind="label")
    assert tuple(img.shape) == (1, 512, 512, 400) and int(img.sum()) == 60 * 60 * 40


def test_tiff_compression_needing_a_missing_codec_is_an_input_error(tmp_path):
    # compression 50000 (zstd): tifffile imports a codec on demand (ModuleNotFoundError escaped)
    with pytest.raises(InputError) as info:
        load(_tiff_with(tmp_path, 259, 50000))
    _one_line(info.value)


def test_modality_that_is_not_a_defined_term_is_never_shown(tmp_path, capsys):
    bad = _damaged(tmp_path, lambda ds: _set_raw(ds, "Modality", "CANARYXQZ"))
    assert cli_main(["info", str(bad), "--json"]) == 0
    captured = capsys.readouterr()
    assert "CANARYXQZ" not in captured.out + captured.err
    assert '"modality": "unknown"' in captured.out


def test_nifti_with_absurd_voxel_sizes_is_a_geometry_error(tmp_path):
    # srow_x = 1e-30 and srow_y = 1e30: finite, invertible, and nonsense (0.0 mm in `info`)
    aff = np.diag([1e-30, 1e30, 2.5, 1.0])
    img = nib.Nifti1Image(np.zeros((4, 3, 2), np.int16), aff)
    img.set_sform(aff, 1)
    img.set_qform(None, 0)
    path = tmp_path / "s.nii"
    nib.save(img, str(path))
    with pytest.raises(GeometryError, match="geometry is unknown"):  # pixdim holds the same sizes
        load(path)
