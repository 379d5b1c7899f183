"""Compressed DICOM in: a phantom CT series written uncompressed by pydicom, re-encoded by DCMTK
(an independent encoder, as a PACS or a modality would) as JPEG Lossless (process 14, the usual
lossless archive format), JPEG-LS lossless and RLE; medseg reads every copy to the SAME voxels
and the same world geometry. A real 12-bit JPEG Extended stream (pydicom's test file), for which
no permissively licensed decoder exists, gives a one-line error that says what to install."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import abdomen_ct
from medseg.errors import InputError
from medseg.io import load

CODECS = {
    # DCMTK tool, its options, the transfer syntax it must have written
    "jpeg_lossless_sv1": ("dcmcjpeg", [], "1.2.840.10008.1.2.4.70"),
    "jpeg_ls_lossless": ("dcmcjpls", [], "1.2.840.10008.1.2.4.80"),
    "rle": ("dcmcrle", [], "1.2.840.10008.1.2.5"),
}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """An oblique, LPS-like phantom CT (HU -1000..~+1000, int16 with a negative intercept)."""
    ph = abdomen_ct(shape=(48, 40, 6), seed=3, orientation="LPS")
    root = tmp_path_factory.mktemp("ct")
    write_dicom_series(ph.image, ph.affine, root / "plain", patient_name="DOE^JANE", patient_id="PID-4711",
                       order="shuffled")
    return root / "plain", ph


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_dcmtk_compressed_series_reads_to_the_same_voxels(series, codec, tmp_path):
    tool, opts, ts_uid = CODECS[codec]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} (dcmtk) not installed; .ci/run installs it")
    plain, ph = series
    out = tmp_path / codec
    out.mkdir()
    for f in sorted(plain.iterdir()):
        subprocess.run([tool, *opts, str(f), str(out / f.name)], check=True, capture_output=True)
        assert pydicom.dcmread(out / f.name, stop_before_pixels=True).file_meta.TransferSyntaxUID == ts_uid
    ref, got = load(plain), load(out)
    assert got.shape == ref.shape == (1, *ph.image.shape)
    np.testing.assert_array_equal(got.numpy(), ref.numpy())
    np.testing.assert_allclose(np.asarray(got.affine), ph.affine, atol=1e-4)
    # the values are the phantom's HU (int16 storage), not just equal to a twin of our own reader
    np.testing.assert_allclose(got[0].numpy(), np.round(ph.image), atol=0.51)


def _jpeg12_series(tmp_path):
    """pydicom's JPEG-lossy.dcm (12-bit JPEG Extended, a real encoder's stream) given the geometry
    a CT slice has and a patient name / ID that must never be printed."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51" and ds.BitsStored == 12
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1.0
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.PatientName, ds.PatientID = "DOE^JANE", "PID-4711"
    path = tmp_path / "s" / "slice.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    return path.parent, ds


def _has_jpeg12_decoder() -> bool:
    try:
        import libjpeg  # noqa: F401  (pylibjpeg-libjpeg, GPL-3: not a medseg dependency)
    except ImportError:
        return False
    return True


def test_12bit_jpeg_extended_decodes_or_says_what_to_install(tmp_path):
    folder, ds = _jpeg12_series(tmp_path)
    if _has_jpeg12_decoder():
        img = load(folder)
        assert img.shape == (1, int(ds.Columns), int(ds.Rows), 1) and float(img.max()) > float(img.min())
        return
    with pytest.raises(InputError) as info:
        load(folder)
    msg = str(info.value)
    assert "pylibjpeg-libjpeg" in msg and "JPEG Extended" in msg and "\n" not in msg
    assert "DOE" not in msg and "4711" not in msg


def test_cli_convert_exits_2_and_writes_nothing_on_an_undecodable_series(tmp_path, capsys):
    if _has_jpeg12_decoder():
        pytest.skip("pylibjpeg-libjpeg is installed here: the stream decodes")
    from medseg import cli

    folder, _ = _jpeg12_series(tmp_path)
    out = tmp_path / "out" / "ct.nii.gz"
    assert cli.main(["convert", str(folder), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pylibjpeg-libjpeg" in err and "DOE" not in err
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))
