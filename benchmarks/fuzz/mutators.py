"""Structure-aware mutators, one family per input format, plus byte-level fallbacks.

``mutate(seed, rng, work)`` copies the seed into ``work`` (an empty folder), damages the copy
and returns ``(input_path, operation)``; ``operation`` names what was done (for the report and
for reproducing a finding: the campaign is deterministic for a given ``--seed``).
"""

from __future__ import annotations

import io
import random
import shutil
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.fuzz.seeds import CANARY_NAME, CANARY_VALUE, Seed, copy_seed

# --------------------------------------------------------------------------------------------
# byte-level fallbacks
# --------------------------------------------------------------------------------------------


def _bytes_mutation(data: bytes, rng: random.Random, protect: int = 0) -> tuple[bytes, str]:
    """Flip, overwrite, insert, delete or truncate; ``protect`` leading bytes are kept (magic)."""
    buf = bytearray(data)
    if len(buf) <= protect + 1:
        return bytes(buf) + b"\x00" * rng.randint(1, 64), "append"
    op = rng.choice(["flip", "flip", "overwrite", "insert", "delete", "truncate", "interesting"])
    pos = rng.randrange(protect, len(buf))
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            p = rng.randrange(protect, len(buf))
            buf[p] ^= 1 << rng.randrange(8)
    elif op == "overwrite":
        n = rng.randint(1, 32)
        buf[pos:pos + n] = bytes(rng.randrange(256) for _ in range(n))
    elif op == "insert":
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif op == "delete":
        del buf[pos:pos + rng.randint(1, 64)]
    elif op == "truncate":
        del buf[pos:]
    else:
        val = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
        fmt = rng.choice(["<H", "<I", ">H", ">I"])
        size = struct.calcsize(fmt)
        buf[pos:pos + size] = struct.pack(fmt, val & ((1 << (8 * size)) - 1))
    return bytes(buf), op


def bytes_file(path: Path, rng: random.Random, protect: int = 0) -> str:
    data, op = _bytes_mutation(path.read_bytes(), rng, protect)
    path.write_bytes(data)
    return f"bytes:{op}"


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------

_NUM_VALUES = ["", "0", "-0", "-1", "-5", "1e308", "-1e308", "nan", "NaN", "inf", "-inf", "Infinity",
               "1e-320", "0.5", "3", "100000", "2147483648", "99999999999999999999", " ", "1\\2",
               "1\\2\\3\\4\\5\\6\\7", CANARY_VALUE, "12a", "0x10"]
_US_VALUES = [0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 32, 33, 64, 255, 256, 4096, 32768, 65535]
_UID_VALUES = ["", "1.2", "1.2.3/../../../tmp/x", "../..", "1.2." + "9" * 200, "1.2.840.10008.1.2.1.99",
               f"1.2.{CANARY_VALUE}", "/etc/passwd", "1.2.3\\4.5", "1..2", "0.0", "1.2.840.10008.1.2.4.50",
               "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1"]
_STR_VALUES = ["", CANARY_VALUE, CANARY_NAME, "X" * 300, "\x00\x01\xff", "CT", "MR", "SEG", "DX", "MONOCHROME1",
               "RGB", "YBR_FULL", "PALETTE COLOR", "L\\F", "LF\\HA", "R\\R", "%s%n", "../../x"]
_TS_VALUES = ["", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
              "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
              "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.3.4.5.6", CANARY_VALUE, "1.2.840.10008.1.2.4.201"]

#: keyword -> kind of value generator
_DICOM_FIELDS = {
    "Rows": "US", "Columns": "US", "BitsAllocated": "US", "BitsStored": "US", "HighBit": "US",
    "PixelRepresentation": "US", "SamplesPerPixel": "US", "PlanarConfiguration": "US",
    "NumberOfFrames": "IS", "InstanceNumber": "IS", "SeriesNumber": "IS", "AcquisitionNumber": "IS",
    "PixelSpacing": "DS2", "ImagerPixelSpacing": "DS2", "ImagePositionPatient": "DS3",
    "ImageOrientationPatient": "DS6", "SliceThickness": "DS1", "SpacingBetweenSlices": "DS1",
    "SliceLocation": "DS1", "RescaleSlope": "DS1", "RescaleIntercept": "DS1", "WindowCenter": "DS1",
    "WindowWidth": "DS1", "EstimatedRadiographicMagnificationFactor": "DS1",
    "PhotometricInterpretation": "CS", "Modality": "CS", "PatientOrientation": "CS",
    "SeriesDescription": "LO", "StudyDescription": "LO", "PatientName": "PN", "PatientID": "LO",
    "SeriesInstanceUID": "UI", "StudyInstanceUID": "UI", "SOPInstanceUID": "UI", "SOPClassUID": "UI",
    "FrameOfReferenceUID": "UI", "SpecificCharacterSet": "CS",
}


def _dicom_value(kind: str, rng: random.Random):
    if kind == "US":
        r = rng.random()
        if r < 0.6:
            return rng.choice(_US_VALUES)
        if r < 0.8:
            return [rng.choice(_US_VALUES) for _ in range(rng.choice([2, 7]))]
        return None
    if kind == "UI":
        return rng.choice(_UID_VALUES)
    if kind in ("CS", "LO", "PN"):
        return rng.choice(_STR_VALUES)
    n = {"DS1": 1, "DS2": 2, "DS3": 3, "DS6": 6, "IS": 1}[kind]
    mult = rng.choice([n, n, n, 1, 2, 7, 0])
    base = {"DS2": ["0.8", "0.9"], "DS3": ["1", "2", "3"], "DS6": ["1", "0", "0", "0", "1", "0"]}.get(kind, ["1"])
    vals = [(base[i % len(base)] if rng.random() < 0.6 else rng.choice(_NUM_VALUES)) for i in range(mult)]
    return "\\".join(vals)


def _set_raw(ds, keyword: str, value, vr: str | None = None) -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import DataElement, RawDataElement
    from pydicom.tag import Tag

    tag = tag_for_keyword(keyword)
    vr = vr or dictionary_VR(tag)
    if isinstance(value, str):
        raw = value.encode("latin-1", "replace")
        if len(raw) % 2:
            raw += b" "
        # written byte for byte: decoded (or refused) only by the reader under test
        ds[tag] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
        return
    ds[tag] = DataElement(tag, vr, value)


def raw_parts(ds, *, implicit: bool = False) -> tuple[bytes, bytes]:
    """``ds`` serialised without any validation: (preamble + file meta as given, body encoded as
    explicit or implicit little endian)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, ds.file_meta, enforce_standard=False)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, implicit
    body_ds = ds.copy()
    body_ds.file_meta = None
    write_dataset(body, body_ds)
    return fp.getvalue(), body.getvalue()


def raw_dataset_bytes(ds, *, implicit: bool = False, deflate_body: bool | None = None) -> bytes:
    """:func:`raw_parts` joined, the body deflated only if asked."""
    head, data = raw_parts(ds, implicit=implicit)
    if deflate_body:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = c.compress(data) + c.flush()
    return head + data


def mutate_dicom_file(path: Path, rng: random.Random) -> str:
    from pydicom import config

    saved = (config.settings.writing_validation_mode, config.settings.reading_validation_mode)
    config.settings.writing_validation_mode = config.IGNORE
    config.settings.reading_validation_mode = config.IGNORE
    try:
        return _mutate_dicom_file(path, rng)
    finally:  # the forked children must see pydicom's defaults, as a fresh process does
        config.settings.writing_validation_mode, config.settings.reading_validation_mode = saved


def _mutate_dicom_file(path: Path, rng: random.Random) -> str:
    import pydicom

    if rng.random() < 0.12:
        return bytes_file(path, rng, protect=132 if rng.random() < 0.7 else 0)
    ds = pydicom.dcmread(path)
    ops = []
    deflate_body = None
    implicit = False
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        r = rng.random()
        if r < 0.55:
            kw = rng.choice(list(_DICOM_FIELDS))
            kind = _DICOM_FIELDS[kw]
            value = _dicom_value(kind, rng)
            if value is None:
                if kw in ds:
                    del ds[kw]
                ops.append(f"del:{kw}")
                continue
            if isinstance(value, list) or isinstance(value, int):
                _set_raw(ds, kw, value, "US" if kind == "US" else None)
            elif kind == "US":
                _set_raw(ds, kw, value, "IS")
            else:
                _set_raw(ds, kw, value)
            ops.append(f"set:{kw}")
        elif r < 0.62:
            kw = rng.choice(["Rows", "Columns", "BitsAllocated", "NumberOfFrames", "PixelSpacing",
                             "ImagePositionPatient", "RescaleIntercept", "SeriesInstanceUID", "InstanceNumber",
                             "SliceThickness", "PatientName"])
            _set_raw(ds, kw, rng.choice([CANARY_VALUE, "1\\" + CANARY_VALUE, "", "nan"]),
                     rng.choice(["IS", "DS", "US", "UL", "OB", "UN", "SQ", "FD", "LO"]))
            ops.append(f"wrongvr:{kw}")
        elif r < 0.72:
            ts = rng.choice(_TS_VALUES)
            ds.file_meta.TransferSyntaxUID = ts
            ops.append(f"ts:{ts[:30]}")
        elif r < 0.78:
            deflate_body = rng.random() < 0.5
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1" if deflate_body else "1.2.840.10008.1.2.1.99"
            ops.append("deflate_body" if deflate_body else "deflated_header_plain_body")
        elif r < 0.86 and "PixelData" in ds:
            px = ds.PixelData
            cut = rng.choice([0, 1, len(px) // 2, len(px) - 1])
            ds.PixelData = px[:cut]
            ops.append("short_pixels")
        elif r < 0.9:
            implicit = True
            ops.append("implicit_body")
        else:
            kw = rng.choice(["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
                             "PixelData", "SOPClassUID", "Modality", "SeriesInstanceUID", "BitsAllocated",
                             "PhotometricInterpretation", "SamplesPerPixel"])
            if kw in ds:
                del ds[kw]
            ops.append(f"del:{kw}")
    data = raw_dataset_bytes(ds, implicit=implicit, deflate_body=deflate_body)
    if rng.random() < 0.1:
        data, op = _bytes_mutation(data, rng, protect=132)
        ops.append(f"bytes:{op}")
    path.write_bytes(data)
    return "dicom:" + ",".join(ops)


def deflated_bomb(path: Path, rng: random.Random, n_bytes: int) -> str:
    """A deflated-transfer-syntax file whose body inflates to ``n_bytes`` of pixel data (zeros)."""
    import pydicom

    ds = pydicom.dcmread(path)
    side = int((n_bytes // 2) ** 0.5)
    ds.Rows = ds.Columns = min(side, 65535)
    ds.PixelData = b""
    del ds["PixelData"]
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    head, body = raw_parts(ds)
    length = ds.Rows * ds.Columns * 2
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [c.compress(body + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", length))]
    zeros = b"\x00" * (1 << 22)
    left = length
    while left > 0:
        out.append(c.compress(zeros[:min(left, len(zeros))]))
        left -= len(zeros)
    out.append(c.flush())
    path.write_bytes(head + b"".join(out))
    return f"deflated_bomb:{length}"


def mutate_series(folder: Path, rng: random.Random) -> str:
    files = sorted(folder.glob("*.dcm"))
    r = rng.random()
    if r < 0.5:
        ops = [mutate_dicom_file(f, rng) for f in rng.sample(files, rng.choice([1, 1, len(files)]))]
        return "series:" + ";".join(ops)
    import pydicom

    if r < 0.6:
        victim = rng.choice(files)
        victim.unlink()
        return "series:drop_slice"
    if r < 0.68:
        src = rng.choice(files)
        shutil.copyfile(src, folder / ("dup_" + src.name))
        return "series:duplicate_file"
    ds_all = [(f, pydicom.dcmread(f)) for f in files]
    if r < 0.78:
        f, ds = rng.choice(ds_all)
        ds.ImageOrientationPatient = rng.choice([[0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0.7071, 0.7071],
                                                 [1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]])
        ds.save_as(f)
        return "series:mixed_orientation"
    if r < 0.86:
        uid = rng.choice(["1.2.4/../../../tmp/x", "../../etc", "/abs/uid", "1.2." + "7" * 200, "", CANARY_VALUE])
        for f, ds in ds_all:
            if rng.random() < 0.7:
                ds.SeriesInstanceUID = uid
                ds.save_as(f)
        return "series:uid_traversal"
    if r < 0.93:
        for k, (f, ds) in enumerate(ds_all):
            ds.ImagePositionPatient = [0, 0, float(rng.choice([k * 2.5, k * 2.5 + 0.7, 0, k * 1e300 if k else 0]))]
            ds.save_as(f)
        return "series:bad_positions"
    nested = folder
    for _ in range(rng.choice([3, 40, 200])):
        nested = nested / "d"
    nested.mkdir(parents=True, exist_ok=True)
    shutil.move(str(files[0]), str(nested / files[0].name))
    return "series:deep_folder"


# --------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------


def _series_members(seed_dir: Path) -> list[tuple[str, bytes]]:
    return [(f"study/{f.name}", f.read_bytes()) for f in sorted(seed_dir.glob("*.dcm"))]


def build_zip(path: Path, members, rng: random.Random) -> str:
    ops = []
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            r = rng.random()
            if r < 0.05:
                name = "../" * rng.randint(1, 3) + "evil.dcm"
                ops.append("dotdot")
            elif r < 0.08:
                name = "/tmp/abs_evil.dcm"
                ops.append("absolute")
            elif r < 0.1:
                name = "/".join(["d"] * 200) + "/x.dcm"
                ops.append("deep200")
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if rng.random() < 0.04:
                info.external_attr = (0o120777 << 16)
                data = b"/etc/passwd"
                ops.append("symlink")
            zf.writestr(info, data)
        if rng.random() < 0.1:
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w") as z2:
                for name, data in members[:1]:
                    z2.writestr(name, data)
            zf.writestr("nested.zip", inner.getvalue())
            ops.append("nested_zip")
    data = bytearray(bio.getvalue())
    r = rng.random()
    if r < 0.12:  # set the encrypted flag on every local and central header
        for sig in (b"PK\x03\x04", b"PK\x01\x02"):
            off = 6 if sig == b"PK\x03\x04" else 8
            i = data.find(sig)
            while i >= 0:
                data[i + off] |= 1
                i = data.find(sig, i + 4)
        ops.append("encrypted_flag")
    elif r < 0.24:
        method = rng.choice([1, 6, 9, 12, 14, 93, 95, 98, 99])
        for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
            i = data.find(sig)
            while i >= 0:
                data[i + off:i + off + 2] = struct.pack("<H", method)
                i = data.find(sig, i + 4)
        ops.append(f"method{method}")
    elif r < 0.34:
        data, op = _bytes_mutation(bytes(data), rng, protect=4)
        ops.append(f"bytes:{op}")
    path.write_bytes(bytes(data))
    return "zip:" + (",".join(ops) or "plain")


def zip_bomb(path: Path, n_bytes: int) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(zipfile.ZipInfo("study/bomb.dcm"), "w", force_zip64=True) as fh:
            chunk = b"\x00" * (1 << 22)
            for _ in range(n_bytes // len(chunk)):
                fh.write(chunk)
    return f"zip:bomb{n_bytes}"


def build_tar(path: Path, members, rng: random.Random, gz: bool) -> str:
    ops = []
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w:gz" if gz else "w") as tf:
        for name, data in members:
            r = rng.random()
            ti = tarfile.TarInfo(name)
            if r < 0.06:
                ti.name = "../" * rng.randint(1, 3) + "evil.dcm"
                ops.append("dotdot")
            elif r < 0.09:
                ti.name = "/tmp/abs_evil.dcm"
                ops.append("absolute")
            elif r < 0.12:
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
                ops.append("symlink")
                tf.addfile(ti)
                continue
            elif r < 0.14:
                ti.type, ti.linkname = tarfile.LNKTYPE, "/etc/passwd"
                ops.append("hardlink")
                tf.addfile(ti)
                continue
            elif r < 0.16:
                ti.type = tarfile.CHRTYPE
                ops.append("device")
                tf.addfile(ti)
                continue
            elif r < 0.19:
                ti.name = "/".join(["d"] * 200) + "/x.dcm"
                ops.append("deep200")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    data = bio.getvalue()
    if rng.random() < 0.25:
        data, op = _bytes_mutation(data, rng, protect=0 if not gz else 2)
        ops.append(f"bytes:{op}")
    path.write_bytes(data)
    return ("tgz:" if gz else "tar:") + (",".join(ops) or "plain")


# --------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------

_NIFTI1_FIELDS = {  # name: (offset, struct format)
    "sizeof_hdr": (0, "<i"), "dim0": (40, "<h"), "dim1": (42, "<h"), "dim2": (44, "<h"), "dim3": (46, "<h"),
    "dim4": (48, "<h"), "dim5": (50, "<h"), "intent_code": (68, "<h"), "datatype": (70, "<h"),
    "bitpix": (72, "<h"), "pixdim0": (76, "<f"), "pixdim1": (80, "<f"), "pixdim2": (84, "<f"),
    "pixdim3": (88, "<f"), "pixdim4": (92, "<f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"), "xyzt_units": (123, "<B"), "qform_code": (252, "<h"), "sform_code": (254, "<h"),
    "quatern_b": (256, "<f"), "quatern_c": (260, "<f"), "quatern_d": (264, "<f"), "qoffset_x": (268, "<f"),
    "srow_x0": (280, "<f"), "srow_y1": (300, "<f"), "srow_z2": (320, "<f"), "srow_z3": (324, "<f"),
}
_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.9, 1.5, 2.0, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), float("-inf"),
           352.0, 348.0, 1e9, -352.0, 100000.0]
_INTS = [0, 1, -1, 2, 3, 4, 5, 7, 8, 16, 32767, -32768, 1000, 2, 4, 16, 64, 128, 256, 512, 768, 1024, 1536,
         1792, 2048, 2304, 1002, 348, 540]


def mutate_nifti(path: Path, rng: random.Random) -> str:
    import gzip

    gz = path.name.endswith(".gz")
    data = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    ops = []
    nifti2 = data[4:8] == b"n+2\x00"
    if nifti2 or rng.random() < 0.12:
        data, op = _bytes_mutation(bytes(data), rng, protect=0 if rng.random() < 0.3 else 4)
        data = bytearray(data)
        ops.append(f"bytes:{op}")
    else:
        for _ in range(rng.choice([1, 1, 2, 3])):
            name = rng.choice(list(_NIFTI1_FIELDS))
            off, fmt = _NIFTI1_FIELDS[name]
            if name in ("quatern_b", "quatern_c", "quatern_d") and rng.random() < 0.5:
                # make b^2 + c^2 + d^2 > 1: a negative "a" term
                for q in ("quatern_b", "quatern_c", "quatern_d"):
                    o, f = _NIFTI1_FIELDS[q]
                    struct.pack_into(f, data, o, rng.choice([0.8, 0.9, 1.0, 2.0]))
                struct.pack_into("<h", data, 252, 1)
                ops.append("negative_quaternion")
                continue
            value = rng.choice(_FLOATS) if fmt == "<f" else rng.choice(_INTS)
            if fmt == "<B":
                value = int(value) & 0xFF if not isinstance(value, float) else 0
            elif fmt == "<h":
                value = int(value) if isinstance(value, int) else 1
                value = max(-32768, min(32767, value))
            struct.pack_into(fmt, data, off, value)
            ops.append(f"{name}={value}")
    if rng.random() < 0.08:
        cut = rng.randrange(0, len(data))
        del data[cut:]
        ops.append("truncate")
    out = bytes(data)
    if gz:
        out = zlib_gzip(out)
        if rng.random() < 0.05:
            out = out[: rng.randrange(10, len(out))]
            ops.append("gz_truncate")
    path.write_bytes(out)
    return "nifti:" + ",".join(ops)


def zlib_gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=6, mtime=0)


def _gzip_stream(prefix: bytes, n_zero: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [c.compress(prefix)]
    zeros = b"\x00" * (1 << 22)
    left = n_zero
    while left > 0:
        out.append(c.compress(zeros[:min(left, len(zeros))]))
        left -= len(zeros)
    out.append(c.flush())
    return b"".join(out)


def nifti_bomb(path: Path, n_bytes: int, honest: bool) -> str:
    """A .nii.gz whose header declares ``n_bytes`` of int16 voxels; ``honest``: the stream holds
    them all (zeros), else only 1 MB of them."""
    import nibabel as nib

    side = int((n_bytes // 2 // 64) ** 0.5)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((side, side, 64))
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(np.eye(4), 1)
    hdr["vox_offset"] = 352
    head = hdr.binaryblock + b"\x00" * 4
    path.write_bytes(_gzip_stream(head, side * side * 64 * 2 if honest else 1 << 20))
    return f"nifti:bomb{'_honest' if honest else '_short'}{side}x{side}x64"


# --------------------------------------------------------------------------------------------
# NRRD / MetaImage
# --------------------------------------------------------------------------------------------

_NRRD_EDITS = {
    "dimension": ["-1", "0", "1", "2", "4", "16", "100", "x", ""],
    "sizes": ["16 12", "16 12 4 2", "-16 12 4", "0 12 4", "65535 65535 65535", "1000000000 2 2", "16 12 x",
              "16 12 4 5 6 7 8", "", "40000 40000 1"],
    "type": ["short", "float", "double", "uchar", "int64", "bogus", "", "block", "complex"],
    "encoding": ["raw", "gzip", "bzip2", "ascii", "hex", "bogus", ""],
    "space directions": ["(inf,0,0) (0,1,0) (0,0,1)", "(nan,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)",
                         "(1,0,0) (1,0,0) (0,0,1)", "none none none", "(1e308,0,0) (0,1e308,0) (0,0,1e308)", ""],
    "space origin": ["(inf,0,0)", "(nan,nan,nan)", "(1,2)", "", "(1e308,1e308,1e308)"],
    "endian": ["big", "little", "middle"],
    "byte skip": ["-1", "100000000", "-5", "x"],
    "line skip": ["1", "1000000", "-3"],
    "data file": ["/etc/passwd", "../x.raw", "../../etc/passwd", "det.raw", "missing.raw", "LIST", "%d.raw 0 3 1"],
    "space": ["left-posterior-superior", "bogus", "3D-right-handed", ""],
    "kinds": ["domain domain domain", "RGB-color domain domain", "bogus", ""],
}
_MHA_EDITS = {
    "NDims": ["-1", "0", "1", "2", "4", "100", "x", ""],
    "DimSize": ["16 12", "16 12 4 2", "-16 12 4", "0 12 4", "65535 65535 65535", "1000000000 2 2", "x", "",
                "40000 40000 1"],
    "ElementType": ["MET_SHORT", "MET_FLOAT", "MET_DOUBLE", "MET_UCHAR", "MET_LONG_LONG", "MET_BOGUS", "",
                    "MET_STRING"],
    "ElementSpacing": ["inf 1 1", "nan 1 1", "0 0 0", "-1 -1 -1", "1e308 1e308 1e308", "1", ""],
    "Offset": ["inf 0 0", "nan nan nan", "1 2", ""],
    "TransformMatrix": ["0 0 0 0 0 0 0 0 0", "1 0 0 1 0 0 0 0 1", "nan 0 0 0 1 0 0 0 1", "1 0"],
    "ElementNumberOfChannels": ["0", "-1", "3", "1000000"],
    "CompressedData": ["True", "False", "bogus"],
    "CompressedDataSize": ["0", "-1", "999999999", "1"],
    "HeaderSize": ["-1", "100000000", "-7"],
    "BinaryDataByteOrderMSB": ["True", "False"],
    "ElementDataFile": ["/etc/passwd", "../x.raw", "../../etc/passwd", "LOCAL", "missing.raw",
                        "LIST", "slice%03d.raw 1 3 1"],
}


def _edit_text_header(data: bytes, rng: random.Random, nrrd: bool) -> tuple[bytes, list[str]]:
    if nrrd:
        end = data.find(b"\n\n")
        head, body = (data[:end], data[end:]) if end >= 0 else (data, b"")
        sep, edits = ": ", _NRRD_EDITS
    else:
        idx = data.find(b"ElementDataFile")
        nl = data.find(b"\n", idx) if idx >= 0 else -1
        head, body = (data[:nl], data[nl:]) if nl >= 0 else (data, b"")
        sep, edits = " = ", _MHA_EDITS
    lines = head.decode("latin-1").split("\n")
    ops = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        key = rng.choice(list(edits))
        r = rng.random()
        idx = next((i for i, ln in enumerate(lines) if ln.split(":" if nrrd else "=")[0].strip() == key), None)
        if r < 0.15 and idx is not None:
            del lines[idx]
            ops.append(f"del:{key}")
            continue
        value = rng.choice(edits[key])
        line = f"{key}{sep}{value}"
        if idx is None:
            lines.insert(len(lines) if nrrd else max(len(lines) - 1, 0), line)
        else:
            lines[idx] = line
        ops.append(f"{key}={value[:20]}")
    return "\n".join(lines).encode("latin-1") + body, ops


def mutate_itk(path: Path, rng: random.Random) -> str:
    nrrd = path.name.endswith((".nrrd", ".nhdr"))
    if rng.random() < 0.12:
        return bytes_file(path, rng, protect=4)
    data, ops = _edit_text_header(path.read_bytes(), rng, nrrd)
    if rng.random() < 0.08:
        data = data[: rng.randrange(len(data) // 2, len(data))]
        ops.append("truncate")
    path.write_bytes(data)
    return ("nrrd:" if nrrd else "mha:") + ",".join(ops)


def itk_bomb(path: Path, n_bytes: int, nrrd: bool) -> str:
    side = int((n_bytes // 2 // 64) ** 0.5)
    if nrrd:
        head = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {side} {side} 64\nendian: little\n"
                "encoding: gzip\n\n").encode()
        path.write_bytes(head + _gzip_stream(b"", side * side * 64 * 2))
    else:
        raw = zlib.compressobj(9, zlib.DEFLATED, 15)
        zeros = b"\x00" * (1 << 22)
        left, parts = side * side * 64 * 2, []
        while left > 0:
            parts.append(raw.compress(zeros[:min(left, len(zeros))]))
            left -= len(zeros)
        parts.append(raw.flush())
        body = b"".join(parts)
        head = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                f"CompressedData = True\nCompressedDataSize = {len(body)}\nDimSize = {side} {side} 64\n"
                "ElementType = MET_SHORT\nElementDataFile = LOCAL\n").encode()
        path.write_bytes(head + body)
    return f"{'nrrd' if nrrd else 'mha'}:bomb{side}x{side}x64"


# --------------------------------------------------------------------------------------------
# TIFF / PNG
# --------------------------------------------------------------------------------------------

_TIFF_TAGS = [256, 257, 258, 259, 262, 273, 277, 278, 279, 282, 283, 284, 296, 317, 322, 323, 324, 325, 338, 339,
              270, 34118]
_TIFF_VALUES = [0, 1, 2, 3, 5, 7, 8, 16, 32, 64, 255, 65535, 0x7FFFFFFF, 0xFFFFFFFF, 100000, 32773, 34712, 50000]


def _tiff_ifd_entries(data: bytes) -> list[tuple[int, int, int, int]]:
    """(entry offset, tag, type, count) of the first IFD of a classic little-endian TIFF."""
    if data[:4] != b"II*\x00":
        return []
    off = struct.unpack_from("<I", data, 4)[0]
    if off + 2 > len(data):
        return []
    n = struct.unpack_from("<H", data, off)[0]
    out = []
    for i in range(n):
        e = off + 2 + 12 * i
        if e + 12 > len(data):
            break
        tag, typ, count = struct.unpack_from("<HHI", data, e)
        out.append((e, tag, typ, count))
    return out


def mutate_tiff(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    entries = _tiff_ifd_entries(bytes(data))
    r = rng.random()
    if r < 0.15 or not entries:
        return bytes_file(path, rng, protect=4 if rng.random() < 0.8 else 0)
    if r < 0.25 and b"<OME" in data:
        xml_start = data.find(b"<?xml")
        text = data[xml_start:data.find(b"</OME>", xml_start) + 6].decode("utf-8", "replace")
        import re

        key = rng.choice(["SizeX", "SizeY", "SizeZ", "SizeC", "SizeT", "PhysicalSizeX", "PhysicalSizeZ",
                          "DimensionOrder", "Type"])
        value = rng.choice(["100000", "0", "-1", "nan", "inf", "1e308", "XYZCT", "bogus", "uint16", "float"])
        new = re.sub(rf'{key}="[^"]*"', f'{key}="{value}"', text, count=1)
        enc = new.encode()
        old_len = len(text.encode())
        if len(enc) <= old_len:  # keep offsets: pad in place
            data[xml_start:xml_start + old_len] = enc + b" " * (old_len - len(enc))
            path.write_bytes(bytes(data))
            return f"tiff:ome_{key}={value}"
        desc = [e for e in entries if e[1] == 270]
        if desc:  # longer: append the new XML and point ImageDescription at it
            e = desc[0][0]
            struct.pack_into("<II", data, e + 4, len(enc) + 1, len(data))
            path.write_bytes(bytes(data) + enc + b"\0")
            return f"tiff:ome_{key}={value}"
    ops = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        e, tag, typ, count = rng.choice(entries)
        what = rng.random()
        if what < 0.5:
            val = rng.choice(_TIFF_VALUES)
            if typ == 3 and count == 1:
                struct.pack_into("<H", data, e + 8, val & 0xFFFF)
            else:
                struct.pack_into("<I", data, e + 8, val)
            ops.append(f"value{tag}={val}")
        elif what < 0.7:
            struct.pack_into("<I", data, e + 4, rng.choice([0, 2, 7, 1000, 0x7FFFFFFF, 0xFFFFFFFF]))
            ops.append(f"count{tag}")
        elif what < 0.85:
            struct.pack_into("<H", data, e + 2, rng.choice([0, 1, 2, 5, 7, 12, 13, 16, 17, 99]))
            ops.append(f"type{tag}")
        else:
            struct.pack_into("<H", data, e, rng.choice(_TIFF_TAGS))
            ops.append(f"retag{tag}")
    path.write_bytes(bytes(data))
    return "tiff:" + ",".join(ops)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(path: Path, width: int, height: int, honest: bool) -> str:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    c = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    parts = []
    rows = height if honest else min(height, 16)
    for _ in range(rows):
        parts.append(c.compress(row))
    parts.append(c.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
                     + _png_chunk(b"IEND", b""))
    return f"png:bomb{width}x{height}{'_honest' if honest else '_short'}"


def mutate_png(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    r = rng.random()
    if r < 0.4:
        # IHDR fields, with the CRC recomputed so that the decoder gets past it
        field = rng.choice([(16, ">I", [0, 1, 7, 65535, 100000, 0x7FFFFFFF, 0xFFFFFFFF]),
                            (20, ">I", [0, 1, 7, 65535, 100000, 0x7FFFFFFF]),
                            (24, ">B", [0, 1, 2, 4, 8, 16, 3, 255]),
                            (25, ">B", [0, 2, 3, 4, 6, 7, 255]),
                            (28, ">B", [0, 1, 2])])
        off, fmt, vals = field
        struct.pack_into(fmt, data, off, rng.choice(vals))
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
        path.write_bytes(bytes(data))
        return f"png:ihdr@{off}"
    if r < 0.5:
        body = rng.choice([struct.pack(">IIB", 0, 0, 1), struct.pack(">IIB", 1, 1, 0), b"\xff" * 9, b""])
        chunk = _png_chunk(b"pHYs", body)
        path.write_bytes(bytes(data[:33]) + chunk + bytes(data[33:]))
        return "png:phys"
    return bytes_file(path, rng, protect=8 if rng.random() < 0.8 else 0)


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------

BOMB_BYTES = 1 << 30  # decompressed size of the bombs (~1 MB compressed): under every cap


def _cached(cache: Path, key: str, dest: Path, build: Callable[[Path], str]) -> tuple[Path, str]:
    """Bombs take seconds to compress: build each once per campaign, then copy it."""
    src = cache / key / dest.name
    op_file = cache / key / "op.txt"
    if not op_file.exists():
        src.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.copyfile(dest, src)
        op_file.write_text(build(src))
    shutil.copyfile(src, dest)
    return dest, op_file.read_text()


def mutate(seed: Seed, rng: random.Random, work: Path, cache: Path | None = None) -> tuple[Path, str]:
    """A damaged copy of ``seed`` inside ``work``; returns ``(path, operation)``.

    ``cache``: a folder where bombs are kept between calls (default: ``work``'s parent).
    A structure-aware mutator that cannot apply its change falls back to a byte-level one.
    """
    try:
        with warnings.catch_warnings():  # pydicom / zipfile complain about what we write on purpose
            warnings.simplefilter("ignore")
            return _mutate(seed, rng, work, cache)
    except Exception as exc:  # noqa: BLE001 - a mutator bug must not stop the campaign
        for child in work.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        p = copy_seed(seed, work)
        target = p if p.is_file() else sorted(p.glob("*.dcm"))[0]
        return p, f"fallback({type(exc).__name__}):" + bytes_file(target, rng)


def _mutate(seed: Seed, rng: random.Random, work: Path, cache: Path | None) -> tuple[Path, str]:
    fmt = seed.fmt
    cache = cache or work.parent / "_bombs"
    if fmt in ("dicom", "xray", "deflated", "seg"):
        p = copy_seed(seed, work)
        if fmt == "deflated" and rng.random() < 0.04:
            n = rng.choice([BOMB_BYTES, 1 << 28])
            return _cached(cache, f"deflated{n}", p, lambda q: deflated_bomb(q, rng, n))
        return p, mutate_dicom_file(p, rng)
    if fmt == "series":
        p = copy_seed(seed, work)
        return p, mutate_series(p, rng)
    if fmt == "zip":
        p = work / "series.zip"
        if rng.random() < 0.03:
            n = rng.choice([1 << 28, BOMB_BYTES])
            return _cached(cache, f"zip{n}", p, lambda q: zip_bomb(q, n))
        members = _series_members(seed.path.parent / "series_ct")
        if rng.random() < 0.3:
            m = work / "m.dcm"
            k = rng.randrange(len(members))
            m.write_bytes(members[k][1])
            mutate_dicom_file(m, rng)
            members[k] = (members[k][0], m.read_bytes())
            m.unlink()
        return p, build_zip(p, members, rng)
    if fmt == "tar":
        gz = seed.path.name.endswith(".gz")
        p = work / seed.path.name
        members = _series_members(seed.path.parent / "series_ct")
        return p, build_tar(p, members, rng, gz)
    if fmt == "nifti":
        p = copy_seed(seed, work)
        if p.name.endswith(".gz") and rng.random() < 0.04:
            n, honest = rng.choice([BOMB_BYTES, 2 * BOMB_BYTES]), rng.random() < 0.5
            return _cached(cache, f"nifti{n}{honest}", p, lambda q: nifti_bomb(q, n, honest))
        return p, mutate_nifti(p, rng)
    if fmt in ("nrrd", "mha"):
        p = copy_seed(seed, work)
        if p.name in ("gz.nrrd", "z.mha") and rng.random() < 0.06:
            return _cached(cache, f"itk{fmt}", p, lambda q: itk_bomb(q, BOMB_BYTES, nrrd=fmt == "nrrd"))
        return p, mutate_itk(p, rng)
    if fmt == "tiff":
        p = copy_seed(seed, work)
        return p, mutate_tiff(p, rng)
    if fmt == "png":
        p = copy_seed(seed, work)
        if rng.random() < 0.04:
            w, h, honest = rng.choice([20000, 30000]), rng.choice([12000, 20000]), rng.random() < 0.5
            return _cached(cache, f"png{w}x{h}{honest}", p, lambda q: png_bomb(q, w, h, honest))
        return p, mutate_png(p, rng)
    raise ValueError(fmt)


MUTATORS: dict[str, Callable] = {"mutate": mutate}
