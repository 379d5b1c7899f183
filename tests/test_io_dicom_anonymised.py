"""Anonymised DICOM as it comes from a PACS export: SeriesInstanceUID, StudyInstanceUID,
SOPClassUID and SOPInstanceUID present but EMPTY (file meta too), optionally compressed by an
independent encoder (DCMTK JPEG-LS / JPEG Lossless, GDCM JPEG 2000 lossless as the real scanner
export uses). medseg groups such images by the keys left, reads them to the same voxels and world
geometry as the original, refuses a mix it cannot tell apart, never hashes empty UIDs, and never
writes an invalid DICOM SEG from them (it says in one line why none was written).

Phantoms only: TotalSegmentator's example DICOM is a blind check and is not used here."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from test_cli_segment import phantom_files, run_dir  # noqa: F401 - shared fixtures
from test_io_dicom_compressed import CODECS
from test_io_dicom_seg import _dciodvfy

from medseg import cli
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import abdomen_ct
from medseg.errors import InputError, MedsegError
from medseg.io import load
from medseg.io.dicom import list_series, select_series
from medseg.io.dicom.series import content_digest

PATIENT = ("DOE^JANE", "PID-4711")
ANON = re.compile(r"anon-[0-9a-f]{16}")
BLANKED = ("SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID", "SOPInstanceUID")


def blank_uids(src: Path, dst: Path, *, prefix: str = "", file_meta: bool = True, remove: bool = False,
               **tags) -> list[Path]:
    """Copy every file of ``src`` to ``dst`` with the four UIDs present but empty (as anonymisers
    leave them; removed with ``remove``; the file meta's SOP UIDs emptied too when ``file_meta``)
    and ``tags`` set."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        for kw in BLANKED:
            if remove:
                delattr(ds, kw)
            else:
                setattr(ds, kw, "")
        if file_meta:
            ds.file_meta.MediaStorageSOPClassUID = ""
            ds.file_meta.MediaStorageSOPInstanceUID = ""
        for kw, value in tags.items():
            setattr(ds, kw, value)
        path = dst / f"{prefix}{f.name}"
        ds.save_as(path, enforce_file_format=False)
        out.append(path)
    return out


def _gdcm_j2k(src: Path, dst: Path) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEG2000Lossless))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    writer.SetFileName(str(dst))
    assert writer.Write()


def compress(src: Path, dst: Path, codec: str) -> Path:
    """Re-encode every file of ``src`` into ``dst``: a DCMTK codec of test_io_dicom_compressed, or
    "jpeg2000_lossless" (GDCM; DCMTK has no JPEG 2000 encoder)."""
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if codec == "jpeg2000_lossless":
            _gdcm_j2k(f, dst / f.name)
            ts = "1.2.840.10008.1.2.4.90"
        else:
            tool, opts, ts = CODECS[codec]
            subprocess.run([tool, *opts, str(f), str(dst / f.name)], check=True, capture_output=True)
        assert pydicom.dcmread(dst / f.name, stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
    return dst


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """An LPS phantom CT (HU -1000..~+1000, int16), files shuffled, with a patient name/ID that
    must never be printed."""
    ph = abdomen_ct(shape=(48, 40, 6), seed=3, orientation="LPS")
    root = tmp_path_factory.mktemp("anon")
    write_dicom_series(ph.image, ph.affine, root / "plain", patient_name=PATIENT[0], patient_id=PATIENT[1],
                       order="shuffled", series_description="Abdomen venous")
    return root / "plain", ph


@pytest.mark.parametrize("codec", ["uncompressed", "jpeg_ls_lossless", "jpeg_lossless_sv1", "jpeg2000_lossless"])
@pytest.mark.parametrize("file_meta", [True, False], ids=["meta-blank", "meta-kept"])
def test_blanked_series_reads_to_the_same_voxels_and_world_geometry(ct, codec, file_meta, tmp_path):
    plain, ph = ct
    src = plain
    if codec in CODECS:
        if shutil.which(CODECS[codec][0]) is None:
            pytest.skip(f"{CODECS[codec][0]} (dcmtk) not installed; .ci/run installs it")
        src = compress(plain, tmp_path / "compressed", codec)
    elif codec == "jpeg2000_lossless":
        src = compress(plain, tmp_path / "compressed", codec)
    anon = tmp_path / "anon"
    blank_uids(src, anon, file_meta=file_meta)
    assert pydicom.dcmread(next(anon.iterdir()), stop_before_pixels=True).SeriesInstanceUID == ""
    ref, got = load(plain), load(anon)
    assert got.shape == ref.shape == (1, *ph.image.shape)
    np.testing.assert_array_equal(got.numpy(), ref.numpy())
    np.testing.assert_array_equal(np.asarray(got.affine), np.asarray(ref.affine))
    np.testing.assert_allclose(np.asarray(got.affine), ph.affine, atol=1e-4)  # the phantom's world grid
    key = got.meta["series_instance_uid"]
    assert ANON.fullmatch(key)
    assert got.meta["sop_instance_uids"] == [""] * ph.image.shape[2]
    # the key is stable (content + grouping keys), selects the series, and is what list_series shows
    (info,) = list_series(anon)
    assert info.anonymous and info.series_instance_uid == key and not info.problem
    assert info.content_sha256 == content_digest(list(anon.iterdir()))
    assert select_series([info], key) is info
    np.testing.assert_array_equal(load(anon, series=key).numpy(), ref.numpy())


def _as_unsigned_12bit(src: Path, dst: Path) -> Path:
    """The storage most CT scanners use: unsigned 12 bits stored, RescaleIntercept -1024."""
    dst.mkdir()
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        ds.PixelData = np.clip(np.round(hu) + 1024, 0, 4095).astype(np.uint16).tobytes()
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.save_as(dst / f.name, enforce_file_format=True)
    return dst


@pytest.mark.parametrize("storage", ["int16", "uint12"])
def test_blanked_jpeg2000_series_matches_simpleitk(ct, tmp_path, storage):
    """An independent reader (SimpleITK/GDCM, as used on the real anonymised export) gives the
    same voxels and world coordinates for the blanked JPEG 2000 series, and the HU are the
    phantom's (stored signed, or unsigned 12-bit with intercept -1024 as scanners do)."""
    import SimpleITK as sitk

    plain, ph = ct
    if storage == "uint12":
        plain = _as_unsigned_12bit(plain, tmp_path / "u12")
    anon = tmp_path / "anon"
    blank_uids(compress(plain, tmp_path / "j2k", "jpeg2000_lossless"), anon)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(anon)))
    img = reader.Execute()
    got = load(anon)
    np.testing.assert_array_equal(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)), got[0].numpy())
    aff = np.asarray(got.affine)
    for idx in [(0, 0, 0), (47, 0, 0), (0, 39, 5), (47, 39, 5)]:
        ras = np.array(img.TransformIndexToPhysicalPoint(idx)) * np.array([-1.0, -1.0, 1.0])
        np.testing.assert_allclose(aff[:3, :3] @ np.array(idx, float) + aff[:3, 3], ras, atol=1e-4)
    np.testing.assert_allclose(got[0].numpy(), np.clip(np.round(ph.image), -1024, 3071), atol=0.51)


def test_removed_uids_read_like_empty_ones(ct, tmp_path):
    plain, _ = ct
    blank_uids(plain, tmp_path / "removed", remove=True)
    assert "SeriesInstanceUID" not in pydicom.dcmread(next((tmp_path / "removed").iterdir()))
    got = load(tmp_path / "removed")
    assert ANON.fullmatch(got.meta["series_instance_uid"])
    np.testing.assert_array_equal(got.numpy(), load(plain).numpy())
    np.testing.assert_array_equal(np.asarray(got.affine), np.asarray(load(plain).affine))


def test_one_warning_without_header_values(ct, tmp_path, caplog, capsys):
    plain, _ = ct
    anon = tmp_path / "anon"
    blank_uids(plain, anon, SeriesDescription="Abdomen late phase")
    with caplog.at_level(logging.WARNING, logger="medseg.io.dicom"):
        key = list_series(anon)[0].series_instance_uid
        load(anon)
        assert cli.main(["info", str(anon)]) == 0
    records = [r for r in caplog.records if "SeriesInstanceUID" in r.getMessage()]
    assert len(records) == 1  # once per process, however often the folder is scanned
    msg = records[0].getMessage()
    assert "\n" not in msg and key in msg and "6 DICOM image(s)" in msg
    assert "late phase" not in msg  # no header value in the warning
    out = capsys.readouterr()
    for secret in PATIENT:
        assert secret not in msg and secret not in out.out + out.err
    assert key in out.out


def _two_series(ct, root: Path, **second):
    """The ``ct`` phantom (axial) plus a second one sharing its frame of reference; both blanked,
    in one folder."""
    plain, ph = ct
    for_uid = str(pydicom.dcmread(next(plain.iterdir()), stop_before_pixels=True).FrameOfReferenceUID)
    other = abdomen_ct(shape=(48, 40, 6), seed=9, orientation=second.pop("orientation", "LPS"))
    write_dicom_series(other.image, other.affine, root / "src2", frame_of_reference_uid=for_uid,
                       series_description=second.pop("series_description", "Abdomen venous"),
                       extra_tags=second or None)
    mixed = root / "mixed"
    blank_uids(plain, mixed, prefix="a")
    blank_uids(root / "src2", mixed, prefix="b")
    return mixed, ph, other


@pytest.mark.parametrize("difference", [
    {"series_description": "Abdomen arterial"},
    {"orientation": "RAS"},
    {"series_description": "Abdomen venous", "AcquisitionNumber": 2},  # same keys, told apart by acquisition
])
def test_two_blanked_series_in_one_folder_split(ct, tmp_path, difference):
    mixed, ph, other = _two_series(ct, tmp_path, **difference)
    series = list_series(mixed)
    assert len(series) == 2 and all(s.anonymous and not s.problem for s in series)
    assert len({s.series_instance_uid for s in series}) == 2
    assert sorted(s.n_instances for s in series) == [6, 6]
    for s in series:
        assert {f.name[0] for f in s.files} in ({"a"}, {"b"})  # never mixed
        got = load(mixed, series=s.series_instance_uid)
        truth = ph if next(iter(s.files)).name.startswith("a") else other
        np.testing.assert_allclose(np.asarray(got.affine), truth.affine, atol=1e-4)
        np.testing.assert_allclose(got[0].numpy(), np.round(truth.image), atol=0.51)
    with pytest.raises(MedsegError, match="2 series found"):
        load(mixed)


def test_ambiguous_mix_is_refused_in_one_line(ct, tmp_path, capsys):
    mixed, _, _ = _two_series(ct, tmp_path)  # same keys, same positions, same acquisition number
    (info,) = list_series(mixed)
    assert info.anonymous and info.n_instances == 12 and "cannot be told apart" in info.problem
    assert "cannot be read" in info.summary()
    with pytest.raises(InputError, match="cannot be told apart") as exc:
        load(mixed)
    assert "\n" not in str(exc.value)
    assert cli.main(["convert", str(mixed), str(tmp_path / "out.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medseg: error:") and err.count("\n") == 1 and "own folder" in err
    assert not (tmp_path / "out.nii.gz").exists()
    for secret in PATIENT:
        assert secret not in err


def test_blanked_images_without_positions_are_refused_as_such(ct, tmp_path):
    plain, _ = ct
    anon = tmp_path / "anon"
    blank_uids(plain, anon)
    for f in anon.iterdir():
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f, enforce_file_format=False)
    (info,) = list_series(anon)
    assert "6 of them have no usable ImagePositionPatient" in info.problem
    with pytest.raises(InputError, match="no usable ImagePositionPatient"):
        load(anon)


def test_convert_and_info_json_on_a_blanked_compressed_series(ct, tmp_path, capsys):
    if shutil.which("dcmcjpls") is None:
        pytest.skip("dcmcjpls (dcmtk) not installed; .ci/run installs it")
    plain, ph = ct
    anon = tmp_path / "anon"
    blank_uids(compress(plain, tmp_path / "jls", "jpeg_ls_lossless"), anon)
    assert cli.main(["info", "--json", str(anon)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert ANON.fullmatch(info["selected"]) and info["series"][0]["series_instance_uid"] == info["selected"]
    assert info["shape"] == [1, *ph.image.shape]
    assert cli.main(["convert", str(anon), str(tmp_path / "anon.nii.gz"), "--series", info["selected"]]) == 0
    assert cli.main(["convert", str(plain), str(tmp_path / "plain.nii.gz")]) == 0
    a, b = nib.load(tmp_path / "anon.nii.gz"), nib.load(tmp_path / "plain.nii.gz")
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_array_equal(a.affine, b.affine)
    np.testing.assert_allclose(a.affine, ph.affine, atol=1e-4)


def test_a_sequential_scan_with_one_acquisition_per_slab_stays_one_series(ct, tmp_path):
    """Acquisition numbers that change along the stack (step-and-shoot CT) do not split a series
    whose positions are all distinct."""
    plain, ph = ct
    anon = tmp_path / "anon"
    blank_uids(plain, anon)
    for f in anon.iterdir():
        ds = pydicom.dcmread(f)
        ds.AcquisitionNumber = 1 + int(round(float(ds.SliceLocation))) % 2
        ds.save_as(f, enforce_file_format=False)
    (info,) = list_series(anon)
    assert info.n_instances == 6 and not info.problem
    np.testing.assert_array_equal(load(anon).numpy(), load(plain).numpy())


def _segment(run, src: Path, out: Path, capsys, *extra: str) -> tuple[Path, str]:
    assert cli.main(["segment", str(src), "--bundle", str(run), "--output", str(out), *extra]) == 0
    std = capsys.readouterr()
    (case,) = list(out.iterdir())
    assert std.out.strip() == str(case)
    return case, std.err


def test_segment_blanked_series_writes_nifti_no_seg_and_says_why(run_dir, phantom_files, tmp_path,  # noqa: F811
                                                                 capsys):
    _, root = phantom_files
    series_dir = root / "dcm" / "image"
    anon = tmp_path / "anon"
    blank_uids(series_dir, anon)
    case, err = _segment(run_dir, anon, tmp_path / "out", capsys)
    assert re.fullmatch(r"series-[A-Za-z0-9-]+", case.name)
    assert sorted(p.name for p in case.iterdir()) == ["overlay.png", "provenance.json", "seg.nii.gz"]
    lines = err.strip().splitlines()
    warning = [x for x in lines if x.startswith("medseg: warning: no DICOM SEG written:")]
    assert len(warning) == 1 and "SeriesInstanceUID" in warning[0] and "SOPInstanceUID" in warning[0]
    prov = json.loads((case / "provenance.json").read_text())
    assert "SOPInstanceUID" in prov["output"]["skipped"]["dicom-seg"]
    assert prov["output"]["files"] == ["seg.nii.gz", "overlay.png"]
    # identity from the files' bytes, never from a list of empty UIDs
    empty = hashlib.sha256("\n".join([""] * len(list(anon.iterdir()))).encode()).hexdigest()
    assert prov["input"]["sha256"] == content_digest(list(anon.iterdir())) != empty
    assert "sha256" in prov["input"]["hash_of"]
    # the labels are those of the same series with its UIDs: same voxels, same world grid
    ref_case, ref_err = _segment(run_dir, series_dir, tmp_path / "ref", capsys)
    assert "warning" not in ref_err
    a, b = nib.load(case / "seg.nii.gz"), nib.load(ref_case / "seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_array_equal(a.affine, b.affine)
    assert np.asarray(a.dataobj).any()
    text = err + (case / "provenance.json").read_text() + case.name
    for secret in ("PHANTOM^ANON", "PHANTOM0001"):
        assert secret not in text
    # the SEG of the series with its UIDs is valid for dciodvfy
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) not installed; .ci/run installs it")
    errors, _ = _dciodvfy(ref_case / "seg.dcm")
    assert errors == []


def test_segment_selects_a_blanked_series_by_its_key(run_dir, phantom_files, tmp_path, capsys):  # noqa: F811
    _, root = phantom_files
    mixed = tmp_path / "mixed"
    blank_uids(root / "dcm" / "image", mixed, prefix="a", SeriesDescription="spine")
    blank_uids(root / "dcm" / "image", mixed, prefix="b", SeriesDescription="spine again")
    keys = {s.series_description: s.series_instance_uid for s in list_series(mixed)}
    assert set(keys) == {"spine", "spine again"}
    case, err = _segment(run_dir, mixed, tmp_path / "out", capsys, "--series", keys["spine"],
                         "--format", "nifti,dicom-seg")
    assert (case / "seg.nii.gz").is_file() and not (case / "seg.dcm").exists()
    assert err.count("no DICOM SEG written") == 1
    assert json.loads((case / "provenance.json").read_text())["input"]["series_instance_uid"] == keys["spine"]


def test_segment_nifti_with_format_dicom_seg_says_why(run_dir, phantom_files, tmp_path, capsys):  # noqa: F811
    _, root = phantom_files
    src = root / "nii" / "image.nii.gz"
    case, err = _segment(run_dir, src, tmp_path / "out", capsys, "--format", "dicom-seg")
    assert err.strip().splitlines() == [
        "medseg: warning: no DICOM SEG written: a DICOM SEG needs a 3D DICOM series as input, this input is nifti"]
    assert sorted(p.name for p in case.iterdir()) == ["provenance.json"]
    # the default formats on a NIfTI write what they can without a word about the SEG
    _, err = _segment(run_dir, src, tmp_path / "out2", capsys)
    assert "DICOM SEG" not in err


def test_write_dicom_seg_refuses_a_source_without_uids(ct, tmp_path):
    import torch
    from monai.data import MetaTensor

    from medseg.io.dicom_seg import SegNotWritable, seg_source_problem, write_dicom_seg

    plain, _ = ct
    anon = tmp_path / "anon"
    blank_uids(plain, anon)
    image = load(anon)
    labels = MetaTensor((image > 100).as_tensor().to(torch.uint8), affine=image.affine.clone())
    problem = seg_source_problem(image)
    assert "SOPInstanceUID in 6 of 6" in problem and "FrameOfReferenceUID" not in problem
    with pytest.raises(SegNotWritable, match="lack identifiers") as exc:
        write_dicom_seg(labels, image, tmp_path / "seg.dcm", label_names={1: "bone"})
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "seg.dcm").exists() and list(tmp_path.glob(".seg*")) == []
    assert seg_source_problem(load(plain)) == ""


def test_folder_batch_cases_of_a_blanked_series(ct, tmp_path):
    from medseg.batch.sources import folder_cases

    plain, _ = ct
    anon = tmp_path / "in" / "anon"
    blank_uids(plain, anon)
    (case,) = folder_cases(tmp_path / "in")
    assert case.identity == "dicom-bytes:" + content_digest(list(anon.iterdir()))
    assert re.fullmatch(r"series-[A-Za-z0-9-]+", case.case)
    assert ANON.fullmatch(case.payload.series_instance_uid)


def test_batch_records_why_no_seg_and_resumes_by_file_bytes(run_dir, phantom_files, tmp_path, capsys):  # noqa: F811
    _, root = phantom_files
    src = tmp_path / "in"
    blank_uids(root / "dcm" / "image", src / "anon")
    shutil.copytree(root / "dcm" / "image", src / "named")
    out = tmp_path / "out"
    args = ["batch", str(src), "--bundle", str(run_dir), "--output", str(out), "--format", "nifti,dicom-seg"]
    assert cli.main(args) == 0
    capsys.readouterr()
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["status"] for r in records} == {"done"}
    anon = next(r for r in records if "seg.dcm" not in r["outputs"])
    named = next(r for r in records if "seg.dcm" in r["outputs"])
    assert anon["reason"].startswith("no DICOM SEG written: ") and "SOPInstanceUID" in anon["reason"]
    assert named["reason"] == ""
    assert (out / anon["case"] / "seg.nii.gz").is_file() and re.fullmatch(r"series-[A-Za-z0-9-]+", anon["case"])
    assert cli.main(args) == 0  # a rerun finds both done (the blanked one keyed on its files' bytes)
    journal = [json.loads(x) for x in (out / "manifest.rank0.jsonl").read_text().splitlines()]
    assert len(journal) == 2


def test_input_hash_never_hashes_empty_or_partial_uids(ct, tmp_path):
    from types import SimpleNamespace

    from medseg.inference.pipeline import input_hash

    plain, _ = ct
    files = sorted(plain.iterdir())
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    by_bytes = content_digest(files)

    def meta(sop, dicom_files=files):
        return SimpleNamespace(meta={"format": "dicom", "sop_instance_uids": sop,
                                     "dicom_files": [str(f) for f in dicom_files]})

    full = hashlib.sha256("\n".join(sorted(uids)).encode()).hexdigest()
    assert input_hash(meta(uids), plain) == (full, "sorted SOP Instance UIDs")
    for sop in ([""] * len(files), [*uids[:-1], ""]):  # all empty, one empty
        digest, what = input_hash(meta(sop), plain)
        assert digest == by_bytes and "sha256" in what
    # a missing slice ("" for both) keeps the UID hash of the files that are there
    assert input_hash(meta([*uids[:-1], ""], [*files[:-1], ""]), plain)[1] == "sorted SOP Instance UIDs"
