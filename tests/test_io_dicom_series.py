"""list_series / select_series on a folder of several phantom series (and a real DICOM SEG that
must not be offered as an image series): grouping, counts, every selection rule and its errors."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from medseg.data.dicom_writer import write_dicom_series
from medseg.errors import SeriesSelectionError
from medseg.io.dicom import SeriesInfo, list_series, read_dicom, select_series


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    aff = np.diag([0.8, 0.8, 2.0, 1.0])
    write_dicom_series(np.zeros((6, 5, 4)), aff, root / "a", series_description="Abdomen venous",
                       order="shuffled", extra_tags={"SeriesNumber": 3})
    write_dicom_series(np.zeros((6, 5, 7)), aff, root / "b", series_description="Abdomen arterial",
                       extra_tags={"SeriesNumber": 2})
    write_dicom_series(np.zeros((6, 5, 7)), aff, root / "c" / "deep", modality="MR",
                       series_description="T2 axial", extra_tags={"SeriesNumber": 5})
    return root


def test_list_series_groups_and_counts(study):
    series = list_series(study)
    assert [s.series_number for s in series] == [2, 3, 5]  # sorted by SeriesNumber
    by_desc = {s.series_description: s for s in series}
    assert by_desc["Abdomen venous"].n_instances == 4 and by_desc["T2 axial"].n_instances == 7
    assert by_desc["T2 axial"].modality == "MR" and by_desc["Abdomen arterial"].modality == "CT"
    for s in series:
        assert isinstance(s, SeriesInfo)
        uids = {pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in s.files}
        assert uids == {s.series_instance_uid}
        assert s.summary().endswith(s.series_instance_uid)
        assert (s.rows, s.columns) == (5, 6)


def test_rules(study):
    series = list_series(study)
    venous = next(s for s in series if s.series_description == "Abdomen venous")
    assert select_series(series, venous.series_instance_uid) is venous
    assert select_series(series, f"uid={venous.series_instance_uid}") is venous
    assert select_series(series, "modality=mr").series_description == "T2 axial"
    assert select_series(series, "description~venous") is venous
    assert select_series(series, "modality=CT,largest").series_description == "Abdomen arterial"
    assert select_series(series, "number=3") is venous
    assert select_series(series, "description~^abdomen, modality=CT, number=2").series_number == 2
    assert select_series([venous], None) is venous


@pytest.mark.parametrize("selector,message", [
    (None, "3 series found"),
    ("modality=CT", "matches 2 series"),
    ("largest", "ambiguous"),
    ("modality=PT", "no series matches"),
    ("colour=red", "unknown key"),
    ("description~(", "bad regular expression"),
    ("1.2.3.999", "no series matches"),
])
def test_selection_errors_list_the_series(study, selector, message):
    series = list_series(study)
    with pytest.raises(SeriesSelectionError) as exc:
        select_series(series, selector)
    msg = str(exc.value)
    assert message in msg and "\n" not in msg
    if message in ("3 series found", "no series matches"):
        for s in series:
            assert s.series_instance_uid in msg and s.series_description in msg


@pytest.mark.network  # fetches the real SEG into the cache on first use
def test_dicom_seg_beside_the_images_is_not_an_image_series(study, tmp_path):
    from medseg.data import sample

    shutil.copytree(study / "a", tmp_path / "a")
    shutil.copy(sample("liver_seg"), tmp_path / "seg.dcm")
    series = list_series(tmp_path)
    assert len(series) == 1 and series[0].series_description == "Abdomen venous"
    img = read_dicom(tmp_path, progress=False)
    assert img.meta["skipped_files"] == 1 and img.shape == (1, 6, 5, 4)
