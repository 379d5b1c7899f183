"""Batch sources: folder trees with series rules, CSV manifests; identities from real files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medseg.batch.sources import (
    DicomSeriesInput,
    FileInput,
    csv_cases,
    folder_cases,
    parse_rules,
    uid_identity,
)
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import abdomen_ct, grid_affine, save_phantom
from medseg.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    ph = abdomen_ct(shape=(24, 24, 12), spacing=(3.0, 3.0, 5.0), seed=1)
    save_phantom(ph, root / "nifti_case", format="nifti")
    vol = np.zeros((16, 16, 8), np.float32)
    write_dicom_series(vol, grid_affine((16, 16, 8), (1, 1, 2.5), "LPS"), root / "dicom" / "axial",
                       series_description="AX thin")
    write_dicom_series(vol, grid_affine((16, 16, 8), (1, 1, 5.0), "LPS"), root / "dicom" / "axial_thick",
                       series_description="AX thick")
    write_dicom_series(np.zeros((16, 16, 12), np.float32), grid_affine((16, 16, 12), (1, 1, 2.5), "LIP"),
                       root / "dicom" / "coronal",
                       series_description="COR")
    write_dicom_series(vol, grid_affine((16, 16, 8), (1, 1, 2.5), "LPS"), root / "dicom" / "mr",
                       modality="MR", series_description="T1")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_cases_files_and_series(tree):
    cases = folder_cases(tree, select="modality=CT")
    files = [c for c in cases if isinstance(c.payload, FileInput)]
    series = [c for c in cases if isinstance(c.payload, DicomSeriesInput)]
    assert sorted(c.case for c in files) == ["image", "label"]
    assert len(series) == 3  # three CT series, the MR one is filtered out
    for c in series:
        uid = c.payload.series_instance_uid
        files_of = [f for f in tree.rglob("*.dcm") if pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID == uid]
        sops = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files_of]
        assert c.identity == "dicom:" + uid_identity(sops)
        assert c.case == f"series-{uid}"  # the folder `medseg segment` writes for this series
    assert len({c.identity for c in cases}) == len(cases)


@pytest.mark.parametrize("rule, n", [
    ("modality=CT,orientation=axial", 2), ("modality=CT,orientation=coronal", 1),
    ("modality=CT,thickness<=3", 2), ("description~thick", 1), ("modality=MR", 1), ("min-slices=9", 1),
])
def test_series_rules(tree, rule, n):
    assert len([c for c in folder_cases(tree, select=rule) if isinstance(c.payload, DicomSeriesInput)]) == n


def test_bad_rules_are_config_errors():
    for bad in ("colour=red", "orientation=oblique", "description~(("):
        with pytest.raises(ConfigError):
            parse_rules(bad)


def test_csv_manifest(tree, tmp_path):
    csv = tree / "cases.csv"
    csv.write_text("input,series,case\nnifti_case/image.nii.gz,,abdomen\ndicom/mr,,mr_case\n")
    cases = csv_cases(csv)
    assert [c.case for c in cases] == ["abdomen", "mr_case"]
    assert isinstance(cases[1].payload, DicomSeriesInput)
    bad = tmp_path / "bad.csv"
    bad.write_text("path\nx\n")
    with pytest.raises(InputError, match="column 'input'"):
        csv_cases(bad)
    missing = tree / "missing.csv"
    missing.write_text("input\nnope.nii.gz\n")
    with pytest.raises(InputError, match="line 2"):
        csv_cases(missing)
