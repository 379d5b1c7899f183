"""DICOM SEG writer/reader against independent references: highdicom's own reader (frames by
referenced SOP instance), pydicom's raw PlanePositionSequence, and dciodvfy."""

from __future__ import annotations

import logging
import shutil
import subprocess
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.sr.codedict import codes

from medseg.data.dicom_writer import write_dicom_series
from medseg.errors import ConfigError, GeometryError, InputError
from medseg.io.dicom_seg import read_dicom_seg, write_dicom_seg

PATIENT_NAME, PATIENT_ID = "SEGTEST^PERSON", "SEGPID4242"
NAMES = {1: "liver", 2: "spleen", 4: "kidney_left"}


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    t = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def _as_read(volume: np.ndarray, labels: np.ndarray, affine: np.ndarray, files: list[Path]):
    """The MetaTensors a DICOM reader returns for this series, per the medseg.io contract: k runs
    along row x col (flipped here when the writer's k column points the other way)."""
    affine = affine.copy()
    files = [str(f) for f in files]
    if float(np.cross(affine[:3, 0], affine[:3, 1]) @ affine[:3, 2]) < 0:
        n = volume.shape[2]
        affine[:3, 3] = affine[:3, 3] + affine[:3, 2] * (n - 1)
        affine[:3, 2] = -affine[:3, 2]
        volume, labels, files = volume[:, :, ::-1], labels[:, :, ::-1], files[::-1]
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    meta = {"dicom_files": files, "sop_instance_uids": uids, "space": "RAS", "kind": "image",
            "frame_of_reference_uid": str(first.FrameOfReferenceUID)}
    aff_t = torch.as_tensor(affine)
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume))[None], affine=aff_t, meta=meta)
    label = MetaTensor(torch.from_numpy(np.ascontiguousarray(labels))[None], affine=aff_t.clone(),
                       meta={"kind": "label"})
    return image, label


def _phantom(shape=(30, 26, 9)):
    rng = np.random.default_rng(3)
    volume = rng.normal(40, 30, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[2:12, 3:10, 1:5] = 1
    labels[15:27, 4:12, 3:8] = 2
    labels[5:14, 15:24, 6:9] = 4  # a gap in the label values: 3 is absent
    return volume, labels


def _series(tmp_path: Path, affine: np.ndarray, order: str):
    volume, labels = _phantom()
    files = write_dicom_series(volume, affine, tmp_path / "ct", order=order, seed=7,
                               patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    return _as_read(volume, labels, affine, files)


AXIAL = np.array([[-0.7, 0, 0, 90.0], [0, -0.8, 0, 60.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])  # LPS-like


def _oblique_reversed() -> np.ndarray:
    rot = _rotation(np.array([1.0, 0.4, 0.2]), 25.0)
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.9, 0.75, -3.0])  # k points against row x col: slices reversed
    aff[:3, 3] = [-20.0, 35.0, 12.0]
    return aff


GEOMETRIES = [pytest.param(AXIAL, "sorted", id="axial-sorted"),
              pytest.param(_oblique_reversed(), "reversed", id="oblique-reversed"),
              pytest.param(_oblique_reversed(), "shuffled", id="oblique-shuffled")]


def _dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


@pytest.mark.parametrize(("affine", "order"), GEOMETRIES)
def test_round_trip_against_highdicom_reader(tmp_path, affine, order):
    image, labels = _series(tmp_path, affine, order)
    out = write_dicom_seg(labels, image, tmp_path / "seg" / "seg.dcm", label_names=NAMES)
    assert out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["seg.dcm"]  # no temporary left behind

    lab = labels[0].numpy()
    seg = hd.seg.segread(out)
    # segments 1..n in increasing label value, described with the registry's SNOMED codes
    described = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert sorted(described) == [1, 2, 3]
    assert described[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Liver.value
    assert described[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Spleen.value
    kidney = described[3].SegmentedPropertyTypeCodeSequence[0]
    assert kidney.CodeValue == codes.SCT.Kidney.value
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == codes.SCT.Left.value
    assert described[1].SegmentedPropertyCategoryCodeSequence[0].CodeValue == \
        codes.SCT.AnatomicalStructure.value
    assert described[1].SegmentAlgorithmType == "AUTOMATIC"
    # empty frames omitted: one frame per (segment, slice) that holds that label
    expected_frames = sum(int(np.any(lab[:, :, k] == v)) for v in NAMES for k in range(lab.shape[2]))
    assert int(seg.NumberOfFrames) == expected_frames

    # highdicom places frames by referenced SOP instance: compare slice by slice
    uids = image.meta["sop_instance_uids"]
    pix = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3])  # (k, rows, cols, seg)
    for segno, value in ((1, 1), (2, 2), (3, 4)):
        for k in range(lab.shape[2]):
            np.testing.assert_array_equal(pix[k, :, :, segno - 1], (lab[:, :, k] == value).T)

    # our reader on the reference grid returns exactly the label map
    back = read_dicom_seg(out, image, label_names=NAMES)
    assert back.dtype in (torch.int32, torch.int64)
    np.testing.assert_array_equal(back[0].numpy(), lab)
    np.testing.assert_allclose(back.affine.numpy(), image.affine.numpy())
    assert back.meta["labels"] == {1: "Liver", 2: "Spleen", 4: "Left kidney"}
    # without label_names the values are the segment numbers
    plain = read_dicom_seg(out, image)[0].numpy()
    np.testing.assert_array_equal(plain, np.select([lab == 1, lab == 2, lab == 4], [1, 2, 3], 0))


@pytest.mark.parametrize(("affine", "order"), GEOMETRIES[:2])
def test_read_on_own_geometry_matches_world_coordinates(tmp_path, affine, order):
    image, labels = _series(tmp_path, affine, order)
    out = write_dicom_seg(labels, image, tmp_path / "seg.dcm", label_names=NAMES)
    own = read_dicom_seg(out, label_names=NAMES)
    arr = own[0].numpy()
    aff = own.affine.numpy()
    # every voxel of the SEG's own grid maps (through world RAS mm) onto the same label in the source
    idx = np.argwhere(np.ones(arr.shape, bool))
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    src = np.linalg.solve(image.affine.numpy(), np.c_[world, np.ones(len(world))].T).T[:, :3]
    src_idx = np.rint(src).astype(int)
    np.testing.assert_allclose(src, src_idx, atol=1e-3)
    lab = labels[0].numpy()
    np.testing.assert_array_equal(arr.reshape(-1), lab[tuple(src_idx.T)])
    assert int(np.count_nonzero(arr)) == int(np.count_nonzero(lab))
    # k follows row x col, as the DICOM series contract says
    assert float(np.cross(aff[:3, 0], aff[:3, 1]) @ aff[:3, 2]) > 0


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize(("affine", "order"), GEOMETRIES[:2])
def test_dciodvfy_reports_no_errors(tmp_path, affine, order):
    image, labels = _series(tmp_path, affine, order)
    out = write_dicom_seg(labels, image, tmp_path / "seg.dcm", label_names=NAMES)
    errors, warns = _dciodvfy(out)
    for w in warns:
        print("dciodvfy:", w)
    assert not errors, "\n".join(errors)
    # and the checker does catch a broken SEG (guard against a validator that never fails)
    broken = pydicom.dcmread(out)
    del broken.SegmentSequence
    broken.save_as(tmp_path / "broken.dcm")
    assert _dciodvfy(tmp_path / "broken.dcm")[0]


def test_identity_is_not_logged(tmp_path, caplog):
    image, labels = _series(tmp_path, AXIAL, "sorted")
    with caplog.at_level(logging.DEBUG, logger="medseg"):
        out = write_dicom_seg(labels, image, tmp_path / "seg.dcm", label_names=NAMES)
        read_dicom_seg(out, image)
    text = caplog.text + out.name
    assert caplog.records  # the writer does log what it wrote
    assert PATIENT_NAME.split("^")[0] not in text and PATIENT_ID not in text
    seg = pydicom.dcmread(out)
    # the SEG belongs to the source's study (copied as the IOD requires), in a new series
    src = pydicom.dcmread(image.meta["dicom_files"][0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert seg.SeriesDescription == "medseg segmentation"


def test_refuses_labels_off_the_source_grid(tmp_path):
    image, labels = _series(tmp_path, AXIAL, "sorted")
    out = tmp_path / "seg.dcm"
    shifted = labels.clone()
    aff = labels.affine.clone()
    aff[:3, 3] += 0.5 * aff[:3, 2]  # half a slice along k
    shifted.affine = aff
    with pytest.raises(GeometryError, match="resample"):
        write_dicom_seg(shifted, image, out, label_names=NAMES)
    # same affine, but the source files describe another grid: caught by position matching
    moved = image.clone()
    moved.affine = aff
    shifted_both = labels.clone()
    shifted_both.affine = aff.clone()
    with pytest.raises(GeometryError, match="no source slice"):
        write_dicom_seg(shifted_both, moved, out, label_names=NAMES)
    cropped = MetaTensor(labels.as_tensor()[:, :, :, :5].clone(), affine=labels.affine.clone())
    with pytest.raises(GeometryError, match="shape"):
        write_dicom_seg(cropped, image, out, label_names=NAMES)
    assert not out.exists() and list(tmp_path.glob("*.part*")) == []


def test_bad_label_inputs(tmp_path):
    image, labels = _series(tmp_path, AXIAL, "sorted")
    out = tmp_path / "seg.dcm"
    probs = labels.float() * 0.5
    with pytest.raises(InputError, match="non-integer"):
        write_dicom_seg(probs, image, out, label_names=NAMES)
    with pytest.raises(ConfigError, match=r"\[4\]"):
        write_dicom_seg(labels, image, out, label_names={1: "liver", 2: "spleen"})
    with pytest.raises(InputError, match="empty"):
        write_dicom_seg(labels * 0, image, out, label_names={})
    meta = {k: v for k, v in image.meta.items() if k not in ("dicom_files", "affine")}
    no_files = MetaTensor(image.as_tensor().clone(), affine=image.affine.clone(), meta=meta)
    with pytest.raises(InputError, match="dicom_files"):
        write_dicom_seg(labels, no_files, out, label_names=NAMES)
    assert not out.exists()


def test_empty_result_is_a_valid_seg_with_empty_segments(tmp_path):
    image, labels = _series(tmp_path, AXIAL, "sorted")
    empty = MetaTensor(torch.zeros_like(labels.as_tensor()), affine=labels.affine.clone())
    out = write_dicom_seg(empty, image, tmp_path / "empty.dcm", label_names=NAMES)
    seg = hd.seg.segread(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Liver", "Spleen", "Left kidney"]
    assert not np.any(seg.pixel_array)
    back = read_dicom_seg(out, image, label_names=NAMES)
    assert back.shape == labels.shape and not torch.any(back)
    if shutil.which("dciodvfy"):
        assert not _dciodvfy(out)[0]


def test_unknown_label_names_get_generic_codes(tmp_path):
    image, labels = _series(tmp_path, AXIAL, "sorted")
    out = write_dicom_seg(labels, image, tmp_path / "seg.dcm",
                          label_names={1: "tumour core", 2: "spleen", 4: "edema"})
    seg = hd.seg.segread(out)
    first = seg.SegmentSequence[0]
    assert first.SegmentLabel == "tumour core"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Tissue.value
    back = read_dicom_seg(out, image, label_names={1: "tumour core", 2: "spleen", 4: "edema"})
    np.testing.assert_array_equal(back[0].numpy(), labels[0].numpy())


def test_reader_refuses_other_grid_and_non_seg(tmp_path):
    image, labels = _series(tmp_path, AXIAL, "sorted")
    out = write_dicom_seg(labels, image, tmp_path / "seg.dcm", label_names=NAMES)
    aff = image.affine.clone()
    aff[:3, 3] += torch.tensor([7.0, 0.0, 0.0], dtype=aff.dtype)  # 10 voxels along i
    meta = {k: v for k, v in image.meta.items() if k not in ("sop_instance_uids", "affine")}
    other = MetaTensor(image.as_tensor().clone(), affine=aff, meta=meta)
    with pytest.raises(GeometryError):
        read_dicom_seg(out, other)
    with pytest.raises(InputError, match="not a DICOM Segmentation"):
        read_dicom_seg(image.meta["dicom_files"][0])
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(out.read_bytes()[:300])
    with pytest.raises(InputError):
        read_dicom_seg(truncated)


def test_overlapping_segments_higher_number_wins(tmp_path):
    volume, _ = _phantom((16, 12, 4))
    files = write_dicom_series(volume, AXIAL, tmp_path / "ct")
    sources = [pydicom.dcmread(f) for f in files]
    masks = np.zeros((4, 12, 16, 2), dtype=bool)  # (frames, rows, cols, segments)
    masks[1:3, 2:8, 2:8, 0] = True
    masks[2:4, 5:10, 5:12, 1] = True
    algo = hd.AlgorithmIdentificationSequence(name="test", family=codes.cid7162.ArtificialIntelligence,
                                              version="1")
    descs = [hd.seg.SegmentDescription(n, name, codes.SCT.AnatomicalStructure, prop, "AUTOMATIC", algo)
             for n, name, prop in ((1, "Liver", codes.SCT.Liver), (2, "Spleen", codes.SCT.Spleen))]
    seg = hd.seg.Segmentation(sources, masks, "BINARY", descs, hd.UID(), 1, hd.UID(), 1, "test", "test",
                              "1", "1")
    path = tmp_path / "overlap.dcm"
    seg.save_as(path)
    image, _ = _as_read(volume, np.zeros(volume.shape, np.uint8), AXIAL, files)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = read_dicom_seg(path, image)[0].numpy()
    overlap = masks[..., 0] & masks[..., 1]
    assert any("several segments" in str(w.message) for w in caught)
    expected = np.where(masks[..., 1], 2, np.where(masks[..., 0], 1, 0))  # (k, j, i)
    np.testing.assert_array_equal(back, np.transpose(expected, (2, 1, 0)))
    assert overlap.any() and np.all(np.transpose(back, (2, 1, 0))[overlap] == 2)


def _frame_positions(ds) -> np.ndarray:
    return np.array([f.PlanePositionSequence[0].ImagePositionPatient
                     for f in ds.PerFrameFunctionalGroupsSequence], dtype=float)


def test_real_liver_seg_reads_with_correct_geometry():
    from medseg.data import sample

    path = sample("liver_seg")
    seg = read_dicom_seg(path)
    raw = pydicom.dcmread(path)
    assert seg.meta["labels"] == {1: "Liver"}
    assert seg.meta["format"] == "dicom-seg" and seg.meta["kind"] == "label"
    arr, aff = seg[0].numpy(), seg.affine.numpy()
    assert arr.shape[:2] == (int(raw.Columns), int(raw.Rows))
    frames = np.asarray(raw.pixel_array).reshape(-1, int(raw.Rows), int(raw.Columns))
    ipp_lps = _frame_positions(raw)
    for f, ipp in enumerate(ipp_lps):
        ras = ipp * np.array([-1.0, -1.0, 1.0])
        ijk = np.linalg.solve(aff, np.r_[ras, 1.0])[:3]
        # each frame's first pixel lies exactly on voxel (0, 0, k) of the returned grid
        np.testing.assert_allclose(ijk[:2], [0.0, 0.0], atol=1e-4)
        k = int(round(ijk[2]))
        assert abs(ijk[2] - k) < 1e-4
        np.testing.assert_array_equal(arr[:, :, k], frames[f].T.astype(bool).astype(arr.dtype))
    # pixel spacing and orientation straight from the file (LPS -> RAS)
    shared = raw.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    spacing = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, dtype=float)
    np.testing.assert_allclose(aff[:3, 0], iop[:3] * [-1, -1, 1] * spacing[1], atol=1e-6)
    np.testing.assert_allclose(aff[:3, 1], iop[3:] * [-1, -1, 1] * spacing[0], atol=1e-6)
    assert int(arr.sum()) == int(frames.astype(bool).sum())


def test_inconsistent_real_seg_is_refused():
    """pydicom's liver_1frame.dcm: NumberOfFrames removed and one frame of pixels, but three
    per-frame position items; which position belongs to the frame cannot be known."""
    from medseg.data import sample

    path = sample("liver_seg_1frame")
    raw = pydicom.dcmread(path)
    assert "NumberOfFrames" not in raw and len(raw.PerFrameFunctionalGroupsSequence) == 3
    with pytest.raises(InputError, match="inconsistent"):
        read_dicom_seg(path)


def test_enhanced_multiframe_source(tmp_path):
    from medseg.data import sample

    path = sample("enhanced_ct")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    ps = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, dtype=float)
    pos = _frame_positions(ds)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = iop[:3] * ps[1], iop[3:] * ps[0], pos[1] - pos[0], pos[0]
    aff = torch.as_tensor(np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)
    n_i, n_j = int(ds.Columns), int(ds.Rows)
    meta = {"dicom_files": [str(path)] * 2, "sop_instance_uids": [str(ds.SOPInstanceUID)] * 2}
    image = MetaTensor(torch.zeros(1, n_i, n_j, 2), affine=aff, meta=meta)
    lab = np.zeros((n_i, n_j, 2), np.uint8)
    lab[100:180, 300:340, 0] = 1
    lab[40:60, 50:90, 1] = 2
    labels = MetaTensor(torch.from_numpy(lab)[None], affine=aff.clone())
    out = write_dicom_seg(labels, image, tmp_path / "eseg.dcm", label_names={1: "lesion", 2: "lung_nodule"})
    seg = hd.seg.segread(out)
    pix = seg.get_pixels_by_source_frame(str(ds.SOPInstanceUID), [1, 2], segment_numbers=[1, 2])
    for k in range(2):
        np.testing.assert_array_equal(pix[k, :, :, 0], (lab[:, :, k] == 1).T)
        np.testing.assert_array_equal(pix[k, :, :, 1], (lab[:, :, k] == 2).T)
    np.testing.assert_array_equal(read_dicom_seg(out, image)[0].numpy(), lab)
    nodule = seg.SegmentSequence[1]
    assert nodule.SegmentedPropertyCategoryCodeSequence[0].CodeValue == \
        codes.SCT.MorphologicallyAbnormalStructure.value
    assert nodule.AnatomicRegionSequence[0].CodeValue == codes.SCT.Lung.value


# --- through medseg's own DICOM reader (medseg.io.load) ------------------------------------------
def test_source_read_by_medseg_load_with_a_missing_slice(tmp_path):
    from medseg.io import load

    volume, labels = _phantom()
    affine = _oblique_reversed()
    files = write_dicom_series(volume, affine, tmp_path / "ct", order="shuffled", seed=3)
    _, lab_t = _as_read(volume, labels, affine, files)
    image = load(tmp_path / "ct")
    np.testing.assert_allclose(image.affine.numpy(), lab_t.affine.numpy(), atol=1e-6)
    lab = lab_t[0].numpy().copy()
    # drop the source file of plane k=4 (in the reader's order): the reader fills a gap
    Path(image.meta["dicom_files"][4]).unlink()
    gapped = load(tmp_path / "ct", allow_missing_slices=True)
    assert list(gapped.meta["missing_slices"]) == [4]
    aff = gapped.affine.clone()
    with pytest.raises(GeometryError, match="missing"):
        write_dicom_seg(MetaTensor(torch.from_numpy(lab)[None], affine=aff), gapped,
                        tmp_path / "bad.dcm", label_names=NAMES)
    lab[:, :, 4] = 0
    out = write_dicom_seg(MetaTensor(torch.from_numpy(lab)[None], affine=aff.clone()), gapped,
                          tmp_path / "seg.dcm", label_names=NAMES)
    seg = hd.seg.segread(out)
    kept = [k for k in range(lab.shape[2]) if k != 4]
    uids = [gapped.meta["sop_instance_uids"][k] for k in kept]
    pix = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3])
    for n, k in enumerate(kept):
        for segno, value in ((1, 1), (2, 2), (3, 4)):
            np.testing.assert_array_equal(pix[n, :, :, segno - 1], (lab[:, :, k] == value).T)
    np.testing.assert_array_equal(read_dicom_seg(out, gapped, label_names=NAMES)[0].numpy(), lab)


def _zipped_series(tmp_path: Path):
    """(archive, the MetaTensor medseg.io.load reads from it, the labels on its grid)."""
    import zipfile

    from medseg.io import load

    volume, labels = _phantom()
    files = write_dicom_series(volume, AXIAL, tmp_path / "ct", order="reversed")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
    image = load(archive)
    _, lab_t = _as_read(volume, labels, AXIAL, files)
    return archive, image, lab_t


def test_source_from_a_zip_archive_and_load_dispatch(tmp_path):
    from medseg.io import load

    archive, image, lab_t = _zipped_series(tmp_path)
    np.testing.assert_allclose(image.affine.numpy(), lab_t.affine.numpy(), atol=1e-6)
    shutil.rmtree(tmp_path / "ct")  # only the archive is left
    out = write_dicom_seg(MetaTensor(lab_t.as_tensor().clone(), affine=image.affine.clone()), image,
                          tmp_path / "seg.dcm", label_names=NAMES)
    np.testing.assert_array_equal(read_dicom_seg(out, image, label_names=NAMES)[0].numpy(),
                                  lab_t[0].numpy())
    # medseg.io.load hands a SEG file to read_dicom_seg (own geometry)
    loaded = load(out)
    assert loaded.meta["format"] == "dicom-seg"
    own = read_dicom_seg(out)
    np.testing.assert_array_equal(loaded.numpy(), own.numpy())
    np.testing.assert_allclose(loaded.affine.numpy(), own.affine.numpy())


def test_reads_a_labelmap_seg_written_by_highdicom(tmp_path):
    """LABELMAP SEG (pixels hold segment numbers, own SOP class), built with highdicom directly from
    the source datasets in shuffled file order."""
    image, labels = _series(tmp_path, _oblique_reversed(), "shuffled")
    lab = labels[0].numpy()
    sources = [pydicom.dcmread(f) for f in image.meta["dicom_files"]]  # per k
    algo = hd.AlgorithmIdentificationSequence(name="test", family=codes.cid7162.ArtificialIntelligence,
                                              version="1")
    descs = [hd.seg.SegmentDescription(n, name, codes.SCT.AnatomicalStructure, prop, "AUTOMATIC", algo)
             for n, name, prop in ((1, "Liver", codes.SCT.Liver), (2, "Spleen", codes.SCT.Spleen),
                                   (4, "Left kidney", codes.SCT.Kidney))]
    order = np.random.default_rng(1).permutation(len(sources))  # frames not in slice order
    pixels = np.transpose(lab, (2, 1, 0))[order].astype(np.uint8)
    seg = hd.seg.Segmentation([sources[i] for i in order], pixels, "LABELMAP", descs, hd.UID(), 1,
                              hd.UID(), 1, "test", "test", "1", "1")
    path = tmp_path / "labelmap.dcm"
    seg.save_as(path)
    assert pydicom.dcmread(path).SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    np.testing.assert_array_equal(read_dicom_seg(path, image)[0].numpy(), lab)
    own = read_dicom_seg(path)
    binary = read_dicom_seg(write_dicom_seg(labels, image, tmp_path / "binary.dcm", label_names=NAMES),
                            label_names=NAMES)
    np.testing.assert_allclose(own.affine.numpy(), binary.affine.numpy(), atol=1e-6)
    np.testing.assert_array_equal(own.numpy(), binary.numpy())


def test_given_uids_make_a_rerun_produce_the_same_instance(tmp_path):
    image, labels = _series(tmp_path, AXIAL, "sorted")
    uids = ("2.25.1234567890123456789", "2.25.9876543210987654321")
    a = write_dicom_seg(labels, image, tmp_path / "a.dcm", label_names=NAMES,
                        series_instance_uid=uids[0], sop_instance_uid=uids[1])
    b = write_dicom_seg(labels, image, tmp_path / "b.dcm", label_names=NAMES,
                        series_instance_uid=uids[0], sop_instance_uid=uids[1])
    da, db = pydicom.dcmread(a), pydicom.dcmread(b)
    assert (da.SeriesInstanceUID, da.SOPInstanceUID) == uids == (db.SeriesInstanceUID, db.SOPInstanceUID)
    assert da.PixelData == db.PixelData
    c = write_dicom_seg(labels, image, tmp_path / "c.dcm", label_names=NAMES)  # default: fresh UIDs
    assert pydicom.dcmread(c).SOPInstanceUID not in (da.SOPInstanceUID,)


def test_one_segment_seg_reads_on_its_reference(tmp_path):
    """highdicom identifies the only segment once, in the shared functional groups."""
    image, labels = _series(tmp_path, _oblique_reversed(), "shuffled")
    liver = MetaTensor((labels.as_tensor() == 1).to(torch.uint8), affine=labels.affine.clone())
    out = write_dicom_seg(liver, image, tmp_path / "seg.dcm", label_names={1: "liver"})
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert "SegmentIdentificationSequence" in ds.SharedFunctionalGroupsSequence[0]
    back = read_dicom_seg(out, image)
    np.testing.assert_array_equal(back[0].numpy(), liver[0].numpy())


def test_validator_finds_an_empty_reference(tmp_path):
    from medseg.io.dicom_seg import _seg_problems

    image, labels = _series(tmp_path, AXIAL, "sorted")
    ds = pydicom.dcmread(write_dicom_seg(labels, image, tmp_path / "seg.dcm", label_names=NAMES))
    assert _seg_problems(ds, 3) == []
    ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID = ""
    ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0] \
        .ReferencedSOPClassUID = "1.2.x"
    problems = _seg_problems(ds, 3)
    assert any("ReferencedSOPInstanceUID is empty" in p for p in problems)
    assert any("ReferencedSOPClassUID" in p for p in problems)
    assert any("SegmentSequence" in p for p in _seg_problems(ds, 4))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's "Invalid value for VR" on mutated values
def test_broken_seg_files_give_one_line_input_errors(tmp_path):
    """Truncated and corrupted copies of a valid SEG (deterministic mutations): every read ends
    in a result or a MedsegError with one line, never a pydicom/highdicom exception."""
    import random

    from medseg.errors import MedsegError
    from medseg.io import load

    image, labels = _series(tmp_path, AXIAL, "sorted")
    data = write_dicom_seg(labels, image, tmp_path / "seg.dcm", label_names=NAMES).read_bytes()
    rng = random.Random(11)
    mutants = [data[:n] for n in range(140, len(data), max(1, len(data) // 25))]
    for _ in range(75):
        b = bytearray(data)
        start = rng.randrange(132, len(b))
        if rng.random() < 0.5:
            b[start:start + rng.randint(1, 16)] = bytes(rng.randint(1, 16))
        else:
            for _ in range(rng.randint(1, 30)):
                b[rng.randrange(132, min(len(b), 4000))] = rng.randrange(256)
        mutants.append(bytes(b))
    path = tmp_path / "mutant.dcm"
    refused = 0
    for b in mutants:
        path.write_bytes(b)
        for read in (lambda: load(path), lambda: read_dicom_seg(path, image)):
            try:
                read()
            except MedsegError as exc:
                refused += 1
                assert "\n" not in str(exc) and PATIENT_NAME not in str(exc)
    assert refused > len(mutants)  # most mutants are refused; none escaped as another exception


# --- the source travels with the image (DicomSource): no source file is reopened ------------------
#: set from the clock or a fresh UID each time highdicom builds a SEG, so two builds differ there only
_STAMPS = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "SeriesDate",
           "SeriesTime", "ContributionDateTime", "DimensionOrganizationUID"}


def _elements(ds) -> dict:
    return {e.tag: (e.VR, e.value if e.VR != "SQ" else [_elements(i) for i in e.value])
            for e in ds if e.keyword not in _STAMPS}


def test_seg_written_after_the_source_files_are_deleted_equals_the_one_written_from_them(tmp_path):
    """``load`` keeps the scanned headers in ``meta['dicom_source']``: with the series folder gone,
    the SEG written is element for element the SEG written from the files' own headers (re-read
    from disk, as medseg did before), and valid for highdicom and dciodvfy."""
    from medseg.io import load

    volume, labels = _phantom()
    affine = _oblique_reversed()
    files = write_dicom_series(volume, affine, tmp_path / "ct", order="shuffled", seed=7,
                               patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
                               extra_tags={"StudyDescription": "kept", "AccessionNumber": "A1"})
    from_files, lab = _as_read(volume, labels, affine, files)  # only meta['dicom_files']: headers re-read
    image = load(tmp_path / "ct")
    np.testing.assert_allclose(image.affine.numpy(), lab.affine.numpy(), atol=1e-6)
    uids = {"series_instance_uid": "1.2.826.0.1.3680043.10.1234.1", "sop_instance_uid": "1.2.826.0.1.3680043.10.1234.2"}
    before = write_dicom_seg(lab, from_files, tmp_path / "before.dcm", label_names=NAMES, **uids)
    shutil.rmtree(tmp_path / "ct")
    with pytest.raises(InputError, match="no longer on disk"):  # what a writer that reopens files meets
        write_dicom_seg(lab, from_files, tmp_path / "x.dcm", label_names=NAMES, **uids)
    after = write_dicom_seg(lab, image, tmp_path / "after.dcm", label_names=NAMES, **uids)
    a, b = pydicom.dcmread(before), pydicom.dcmread(after)
    assert _elements(a) == _elements(b)
    assert a.PixelData == b.PixelData and a.StudyDescription == "kept"
    seg = hd.seg.segread(after)
    pix = seg.get_pixels_by_source_instance(image.meta["sop_instance_uids"], segment_numbers=[1, 2, 3])
    for k in range(lab.shape[3]):
        for segno, value in ((1, 1), (2, 2), (3, 4)):
            np.testing.assert_array_equal(pix[k, :, :, segno - 1], (lab[0, :, :, k].numpy() == value).T)
    if shutil.which("dciodvfy"):
        assert not _dciodvfy(after)[0]


def test_seg_of_a_series_read_from_an_archive_that_is_gone(tmp_path):
    from medseg.io.dicom_seg import seg_source_problem

    archive, image, lab_t = _zipped_series(tmp_path)
    shutil.rmtree(tmp_path / "ct")
    # a MetaTensor that names the members only: its headers are read from the archive again
    named = MetaTensor(image.as_tensor().clone(), affine=image.affine.clone(),
                       meta={k: image.meta[k] for k in ("dicom_files", "filename_or_obj", "sop_instance_uids")})
    assert seg_source_problem(named) == ""
    archive.unlink()
    with pytest.raises(InputError, match="no longer on disk"):
        seg_source_problem(named)
    assert seg_source_problem(image) == ""  # the image read from it carries its headers
    out = write_dicom_seg(MetaTensor(lab_t.as_tensor().clone(), affine=image.affine.clone()), image,
                          tmp_path / "seg.dcm", label_names=NAMES)
    np.testing.assert_array_equal(read_dicom_seg(out, image, label_names=NAMES)[0].numpy(), lab_t[0].numpy())
