"""The report as a reader sees it: the reference drawn next to the prediction (also a structure
the model missed, on the correct side of the patient), cases named by series description and
number with UIDs only in the details column, pixels (not mm²) for a microscopy picture without a
pixel size, and the CT display window chosen from the model's task."""

from __future__ import annotations

import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from test_batch_job import make_band_run

from medseg import cli
from medseg.data import sample
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import abdomen_ct
from medseg.io.windows import CT_WINDOWS, display_window
from medseg.report.compare import REFERENCE_RGB, comparison_panels

CANARY_NAME, CANARY_ID = "CANARY^REPORTNAME", "CANARYRPT99"


def _lps_affine(shape):
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])  # i -> patient's left, j -> posterior (an LPS grid)
    aff[:3, 3] = [(shape[0] - 1), (shape[1] - 1), -30.0]
    return aff


def test_a_missed_structure_is_outlined_on_its_side_of_the_patient():
    shape = (40, 36, 20)
    aff = _lps_affine(shape)
    pred = np.zeros(shape, np.uint8)
    pred[4:14, 10:26, 2:12] = 1  # i small = RAS x large: the patient's RIGHT ("liver")
    ref = pred.copy()
    ref[28:33, 15:20, 14:17] = 2  # a nodule on the patient's LEFT, on slices without any prediction
    panels = comparison_panels(pred, ref, aff, colours={1: (220, 130, 100), 2: (255, 60, 60)})
    nodule_z = nib.affines.apply_affine(aff, [30, 17, 15])[2]
    axial = [p for p in panels if p.view == "axial"]
    hit = [p for p in axial if abs(p.position_mm - nodule_z) < 3.0 / 2 + 1e-6]
    assert hit, [p.position_mm for p in axial]  # the nodule's slice is shown though nothing is predicted there
    white = np.all(hit[0].rgb == REFERENCE_RGB, axis=2)
    assert white.any() and hit[0].labels_present == [2]
    cols = np.flatnonzero(white.any(axis=0))
    assert cols.min() > hit[0].rgb.shape[1] / 2  # radiological display: the patient's left is on the right
    # where both hold the liver, the prediction is filled and the reference outline lies on its edge
    both = [p for p in axial if p.labels_present == [1]][0]
    filled = np.all(both.rgb == np.rint(0.45 * 40 + 0.55 * np.array([220, 130, 100])), axis=2)
    outline = np.all(both.rgb == REFERENCE_RGB, axis=2)
    assert filled.sum() > outline.sum() > 0
    assert np.flatnonzero(outline.any(axis=0)).max() < both.rgb.shape[1] / 2  # the patient's right: image left


def test_ct_window_follows_the_task():
    assert display_window("CT", preset="ct_abdomen") == CT_WINDOWS["abdomen"] == (-160.0, 240.0)  # W400 L40
    assert display_window("CT", label_names=["lung_nodule"]) == CT_WINDOWS["lung"]
    assert display_window("CT", label_names=["vertebra_L1"]) == CT_WINDOWS["bone"]
    assert display_window("unknown", preset="ct_lung") == CT_WINDOWS["lung"]  # NIfTI: the preset says CT
    assert display_window("MR", preset=None, label_names=["brain"]) is None  # percentiles for MR
    assert display_window("CT", label_names=["liver"]) == CT_WINDOWS["abdomen"]


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("named")
    (root / "run").mkdir()
    run = make_band_run(root / "run", (48, 48, 16))
    ph = abdomen_ct(shape=(40, 40, 16), spacing=(6.0, 6.0, 12.0), orientation="LPS", seed=5)
    write_dicom_series(ph.image, ph.affine, root / "ct", modality="CT", series_description="Abdomen venous",
                       patient_name=CANARY_NAME, patient_id=CANARY_ID, extra_tags={"SeriesNumber": 7})
    out = root / "out"
    assert cli.main(["segment", str(root / "ct"), "--model", str(run), "--output", str(out)]) == 0
    (case,) = [p.name for p in out.iterdir()]
    refs = root / "refs"
    refs.mkdir()
    ref = (ph.label == 1).astype(np.uint8)
    ref[20:24, 8:12, 6:9] = 2  # a "lesion" the band model cannot find
    nib.save(nib.Nifti1Image(ref, ph.affine), refs / f"{case}.nii.gz")
    return {"root": root, "out": out, "refs": refs, "case": case, "uid": case.removeprefix("series-")}


def test_cases_are_named_by_series_uids_only_in_details(dicom_case, tmp_path):
    html_path = tmp_path / "report.html"
    assert cli.main(["report", str(dicom_case["out"]), "-o", str(html_path), "--reference",
                     str(dicom_case["refs"])]) == 0
    page = html_path.read_text(encoding="utf-8")
    assert re.search(r'<h2 id="case-1">1\. Abdomen venous \(series 7\)</h2>', page)
    assert '<a href="#case-1">Abdomen venous (series 7)</a>' in page
    uid = dicom_case["uid"]
    details = re.findall(r'<td class="details">([^<]*)</td>', page) + \
        re.findall(r'<p class="note details">([^<]*)</p>', page)
    assert all(uid in d for d in details) and len(details) == 2
    # the text a reader sees holds the UID in the details only (file names and attributes aside)
    visible = re.sub(r'<td class="details">[^<]*</td>|<p class="note details">[^<]*</p>', "", page)
    visible = re.sub(r"<[^>]+>", " ", visible)
    assert uid not in visible
    assert CANARY_NAME not in page and CANARY_ID not in page and "CANARY" not in page
    # the reference picture exists next to the overlay, and is another picture than the overlay
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    compare = [s for s in imgs if s.endswith("_reference.png")]
    assert len(compare) == 1 and "reference outlined in white" in page
    overlay = [s for s in imgs if not s.endswith("_reference.png")][0]
    assert (html_path.parent / compare[0]).read_bytes() != (html_path.parent / overlay).read_bytes()
    from PIL import Image

    rgb = np.asarray(Image.open(html_path.parent / compare[0]).convert("RGB"))
    assert rgb.shape[0] > 200 and np.all(rgb == 255, axis=2).sum() > 50  # white outlines drawn


def test_overlay_of_abdominal_ct_uses_the_soft_tissue_window(dicom_case, monkeypatch, tmp_path):
    import medseg.io.overlay as overlay

    seen = {}
    real = overlay.save_overlay_montage

    def spy(*args, **kwargs):
        seen["window"] = kwargs.get("window")
        return real(*args, **kwargs)

    monkeypatch.setattr(overlay, "save_overlay_montage", spy)
    run = dicom_case["root"] / "run"
    assert cli.main(["segment", str(dicom_case["root"] / "ct"), "--model", str(run), "--output",
                     str(tmp_path / "o"), "--format", "png"]) == 0
    assert seen["window"] == (-160.0, 240.0)


def test_microscopy_without_pixel_size_is_counted_in_pixels(tmp_path):
    pytest.importorskip("tifffile")
    from medseg.bundle import list_bundles

    if "fluo_nuclei_2d" not in {b.name for b in list_bundles()}:
        pytest.skip("fluo_nuclei_2d bundle not shipped")
    img = tmp_path / "cells.tif"
    shutil.copy(sample("nuclei_image"), img)
    out = tmp_path / "out"
    assert cli.main(["segment", str(img), "--model", "fluo_nuclei_2d", "--output", str(out),
                     "--format", "nifti"]) == 0
    html_path = tmp_path / "r.html"
    assert cli.main(["report", str(out), "-o", str(html_path)]) == 0
    page = html_path.read_text(encoding="utf-8")
    seg = np.asarray(nib.load(out / "cells" / "seg.nii.gz").dataobj)
    n_pixels = int(np.count_nonzero(seg))
    assert re.search(rf"\d+ instances, {n_pixels} pixels in all", page), n_pixels
    sizes = re.findall(r"<p>sizes: ([^<]*)</p>", page)
    assert sizes and "mm²" not in sizes[0]
