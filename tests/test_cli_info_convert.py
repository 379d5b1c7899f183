"""``medseg info`` and ``medseg convert``: DICOM phantom -> NIfTI in world coordinates (checked
with nibabel and SimpleITK's DICOM reader), multi-series folders, no patient identifiers in the
output, and bad inputs -> exit 2, one line on stderr, no output file."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg import cli

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "MRN12345"
MARKER = (8, 3, 4)


def _rot(a: float, b: float) -> np.ndarray:
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    return np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]]) @ np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory):
    from medseg.data.dicom_writer import write_dicom_series

    root = tmp_path_factory.mktemp("dicom")
    aff = np.eye(4)
    aff[:3, :3] = _rot(0.25, -0.4) @ np.diag([0.8, 0.7, 2.5])
    aff[:3, 3] = [100.0, 80.0, -50.0]
    vol = np.full((12, 10, 6), -1000.0, np.float32)
    vol[MARKER] = 500.0
    vol[0, 0, 0] = -200.0
    write_dicom_series(vol, aff, root / "ct", patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
                       series_description="phantom ct", order="shuffled")
    mr = np.full((12, 10, 3), 100.0, np.float32)
    write_dicom_series(mr, aff, root / "mr", modality="MR", series_description="t1",
                       patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    return root, aff


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medseg", *args], capture_output=True, text=True, timeout=300)


def _sitk_dicom_marker_ras(folder) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img)
    zyx = np.unravel_index(int(np.argmax(arr)), arr.shape)
    return np.array(img.TransformIndexToPhysicalPoint([int(v) for v in zyx[::-1]])) * [-1.0, -1.0, 1.0]


def _main(capfd, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (importing MONAI in a fresh process costs many seconds here)."""
    capfd.readouterr()
    code = cli.main(list(args))
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def test_convert_dicom_series_to_nifti_keeps_world_geometry(dicom_folder, tmp_path, capfd):
    root, aff = dicom_folder
    out = tmp_path / "ct.nii.gz"
    code, stdout, err = _main(capfd, "convert", str(root / "ct"), str(out))
    assert code == 0, err
    assert stdout.strip() == str(out)
    nii = nib.load(out)
    data = np.asarray(nii.dataobj)
    ijk = np.argwhere(data == 500.0)[0]
    assert tuple(ijk) == MARKER
    world = (nii.affine @ [*ijk, 1.0])[:3]
    np.testing.assert_allclose(world, (aff @ [*MARKER, 1.0])[:3], atol=1e-3)
    np.testing.assert_allclose(world, _sitk_dicom_marker_ras(root / "ct"), atol=1e-3)
    assert float(data[0, 0, 0]) == -200.0


def test_convert_multi_series_needs_a_selector(dicom_folder, tmp_path, capfd):
    root, _ = dicom_folder
    out = tmp_path / "any.nii.gz"
    assert cli.main(["convert", str(root), str(out)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medseg: error:") and "--series" in err
    assert PATIENT_NAME not in err and PATIENT_ID not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert cli.main(["convert", str(root), str(out), "--series", "modality=MR"]) == 0
    assert nib.load(out).shape == (12, 10, 3)


def test_info_json_and_table_never_show_patient_identifiers(dicom_folder, capfd):
    root, aff = dicom_folder
    code, listing_text, err = _main(capfd, "info", str(root), "--json")
    assert code == 0, err
    listing = json.loads(listing_text)
    assert listing["selected"] is None and {s["modality"] for s in listing["series"]} == {"CT", "MR"}
    code, info_text, _ = _main(capfd, "info", str(root), "--series", "modality=CT", "--json")
    info = json.loads(info_text)
    assert info["modality"] == "CT" and info["shape"] == [1, 12, 10, 6]
    assert info["orientation"] == "".join(nib.orientations.aff2axcodes(aff))
    np.testing.assert_allclose(info["spacing_mm"], [0.8, 0.7, 2.5], atol=1e-4)
    np.testing.assert_allclose(info["origin_ras_mm"], aff[:3, 3], atol=1e-3)
    assert info["value_range"] == [-1000.0, 500.0]
    code, table, table_err = _main(capfd, "info", str(root), "--series", "description~phantom")
    assert code == 0 and "phantom ct" in table and "orientation" in table
    for text in (listing_text, info_text, table, table_err):
        assert PATIENT_NAME not in text and "DOE" not in text and PATIENT_ID not in text


def test_convert_nrrd_and_tiff_keep_geometry(tmp_path, capfd):
    img = sitk.Image([5, 4, 3], sitk.sitkFloat32)
    img.SetSpacing([0.5, 0.6, 1.5])
    img.SetOrigin([10.0, -4.0, 7.0])
    img.SetDirection([0, 1, 0, -1, 0, 0, 0, 0, 1])
    img.SetPixel([4, 1, 2], 42.0)
    sitk.WriteImage(img, str(tmp_path / "in.nrrd"))
    assert cli.main(["convert", str(tmp_path / "in.nrrd"), str(tmp_path / "out.nii")]) == 0
    nii = nib.load(tmp_path / "out.nii")
    ijk = np.argwhere(np.asarray(nii.dataobj) == 42.0)[0]
    expected = np.array(img.TransformIndexToPhysicalPoint([4, 1, 2])) * [-1.0, -1.0, 1.0]
    np.testing.assert_allclose((nii.affine @ [*ijk, 1.0])[:3], expected, atol=1e-5)
    assert cli.main(["convert", str(tmp_path / "out.nii"), str(tmp_path / "back.mha")]) == 0
    back = sitk.ReadImage(str(tmp_path / "back.mha"))
    np.testing.assert_allclose(back.TransformIndexToPhysicalPoint([4, 1, 2]),
                               img.TransformIndexToPhysicalPoint([4, 1, 2]), atol=1e-5)
    assert back.GetPixel(4, 1, 2) == 42.0
    capfd.readouterr()


def _huge_header() -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 4096))
    hdr.set_data_dtype(np.float32)
    return hdr.binaryblock + b"\0" * 676


def _bad_inputs(tmp_path) -> dict[str, str]:
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), good)
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), tmp_path / "good.nii")
    files = {
        "zero.nii.gz": (b"", "empty"),
        "text.nii.gz": (b"name,id\nsomeone,123\n", "not gzip"),
        "trunc.nii": ((tmp_path / "good.nii").read_bytes()[:-2000], "truncated"),
        "corrupt.nii.gz": (good.read_bytes()[:40] + b"\xff" * 60 + good.read_bytes()[100:], "NIfTI"),
        "cut.nii.gz": (good.read_bytes()[:200], "truncated or corrupt"),
        "huge.nii": (_huge_header(), "over the cap"),
        "huge.nii.gz": (gzip.compress(_huge_header()), "over the cap"),
        "nan.nii.gz": (None, "NaN or infinite"),
        "notes.txt": (b"hello", "unsupported input"),
    }
    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii.gz")
    expected = {}
    for name, (content, fragment) in files.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        expected[name] = fragment
    return expected


def test_bad_inputs_exit_2_one_line_no_output(tmp_path, capfd):
    src = tmp_path / "src"
    src.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name, fragment in _bad_inputs(src).items():
        target = out_dir / f"{name.split('.')[0]}.nii.gz"
        code = cli.main(["convert", str(src / name), str(target)])
        captured = capfd.readouterr()
        assert code == 2, name
        assert captured.err.count("\n") == 1 and captured.err.startswith("medseg: error:"), (name, captured.err)
        assert fragment in captured.err, (name, captured.err)
        assert "Traceback" not in captured.err and captured.out == ""
        assert list(out_dir.iterdir()) == [], name  # no output, no temporary left behind
        if name == "nan.nii.gz":  # `info` describes the file, counting the bad voxels
            assert cli.main(["info", str(src / name)]) == 0
            assert re.search(r"^nonfinite_voxels\s+1$", capfd.readouterr().out, re.M)
            continue
        assert cli.main(["info", str(src / name)]) == 2
        assert capfd.readouterr().err.count("\n") == 1


def test_bad_input_and_bad_output_through_the_real_process(tmp_path):
    (tmp_path / "zero.nii.gz").write_bytes(b"")
    proc = _run("convert", str(tmp_path / "zero.nii.gz"), str(tmp_path / "out.nii.gz"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "empty" in proc.stderr
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)), tmp_path / "ok.nii.gz")
    proc = _run("convert", str(tmp_path / "ok.nii.gz"), str(tmp_path / "out.vtk"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and ".nii.gz" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.nii.gz", "zero.nii.gz"]


def test_unwritable_outputs_are_config_errors(tmp_path, capfd):
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)), tmp_path / "ok.nii.gz")
    (tmp_path / "taken.nii.gz").mkdir()
    code, _, err = _main(capfd, "convert", str(tmp_path / "ok.nii.gz"), str(tmp_path / "taken.nii.gz"))
    assert code == 2 and "is a folder" in err and err.count("\n") == 1
    (tmp_path / "file").write_bytes(b"x")  # a file where a parent folder should be
    code, _, err = _main(capfd, "convert", str(tmp_path / "ok.nii.gz"), str(tmp_path / "file" / "out.nii.gz"))
    assert code == 2 and "cannot write out.nii.gz" in err and err.count("\n") == 1
