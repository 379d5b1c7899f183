"""RT Structure Set writer against independent references: dciodvfy (dicom3tools), rt-utils' reader
(its own series sorting, pixel<->patient matrix and OpenCV polygon fill), and a rasteriser here
that places every contour point with SimpleITK's geometry of the source series (GDCM's slice
order) and fills polygons with matplotlib's point-in-polygon (even-odd per slice): each structure
must come back with Dice >= 0.999 (measured 1.0) at the same world position (centroids < 0.1 mm
apart), for five orientations."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from matplotlib.path import Path as MplPath
from monai.data import MetaTensor

from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import abdomen_ct
from medseg.errors import GeometryError
from medseg.io import load
from medseg.io.dicom_rtstruct import RTSTRUCT_SOP_CLASS, RtstructNotWritable, label_contours, write_rtstruct
from medseg.labels import get_label

PATIENT_NAME, PATIENT_ID = "RTSTEST^PERSON", "RTSPID4242"
NAMES = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "lesion"}


def _rot(angle: float, axis: int) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def _oblique_reversed() -> np.ndarray:
    return _rot(0.35, 2) @ _rot(0.2, 0) @ np.diag([1.0, 1.0, -1.0])  # k against row x col


# (orientation, shape, spacing mm, file order): square pixels and matrices where rt-utils reads too
ORIENTATIONS = {
    "LPS-axial": ("LPS", (64, 64, 12), (4.0, 4.0, 6.0), "sorted"),
    "RAS-axial-reversed": ("RAS", (64, 64, 12), (4.0, 4.0, 6.0), "reversed"),
    "PIR-sagittal": ("PIR", (64, 64, 14), (4.0, 4.0, 5.0), "shuffled"),
    "LIP-coronal": ("LIP", (64, 64, 14), (4.0, 4.0, 5.0), "sorted"),
    "oblique-flipped-nonsquare": (_oblique_reversed(), (60, 48, 12), (4.5, 3.5, 6.0), "shuffled"),
}


def _ring_and_islands(labels: np.ndarray) -> None:
    """Label 5 on two slices: a ring (a hole) with an island inside the hole, and a second island."""
    ni, nj, _ = labels.shape
    ii, jj = np.meshgrid(np.arange(ni), np.arange(nj), indexing="ij")
    r = np.hypot(ii - ni * 0.5, jj - nj * 0.3)
    for k in (4, 5):
        sl = labels[:, :, k]
        sl[(r >= 4) & (r <= 8)] = 5
        sl[r <= 1.5] = 5  # island inside the hole
        sl[int(ni * 0.15):int(ni * 0.15) + 4, int(nj * 0.8):int(nj * 0.8) + 3] = 5


def _case(tmp_path: Path, name: str):
    orientation, shape, spacing, order = ORIENTATIONS[name]
    ph = abdomen_ct(shape=shape, spacing=spacing, orientation=orientation, seed=11)
    labels = ph.label.astype(np.uint8)
    _ring_and_islands(labels)
    write_dicom_series(ph.image, ph.affine, tmp_path / "ct", order=order, seed=3,
                       patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    image = load(tmp_path / "ct")
    aff = image.affine.numpy()
    if np.allclose(aff, ph.affine, atol=1e-4):
        lab = labels
    else:  # the reader runs k along row x col: the writer's k was the other way
        flipped = ph.affine.copy()
        flipped[:3, 3] += flipped[:3, 2] * (shape[2] - 1)
        flipped[:3, 2] *= -1
        assert np.allclose(aff, flipped, atol=1e-4)
        lab = labels[:, :, ::-1]
    lab_t = MetaTensor(torch.from_numpy(np.ascontiguousarray(lab))[None], affine=image.affine.clone(),
                       meta={"kind": "label"})
    return image, lab_t


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def _rasterise_with_sitk(series_dir: Path, rtstruct: Path, roi_number: int) -> tuple[np.ndarray, sitk.Image]:
    """Mask (sitk index order x, y, z) of one ROI: points placed with SimpleITK's geometry."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    img = reader.Execute()
    nx, ny, nz = img.GetSize()
    mask = np.zeros((nx, ny, nz), dtype=bool)
    xs, ys = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    centres = np.column_stack([xs.ravel(), ys.ravel()])
    ds = pydicom.dcmread(rtstruct)
    roi = next(r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == roi_number)
    for c in roi.get("ContourSequence") or []:
        assert c.ContourGeometricType == "CLOSED_PLANAR"
        pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
        idx = np.array([img.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in pts])
        z = np.round(idx[:, 2])
        assert np.allclose(idx[:, 2], z, atol=1e-3), "a contour is not on a source slice"
        assert len(set(z.tolist())) == 1
        inside = MplPath(idx[:, :2]).contains_points(centres).reshape(nx, ny)
        mask[:, :, int(z[0])] ^= inside  # even-odd: holes and islands in holes
    return mask, img


def _to_sitk_grid(lab: np.ndarray, affine_ras: np.ndarray, img: sitk.Image) -> np.ndarray:
    """``lab`` (medseg grid) moved onto the SimpleITK grid through world coordinates."""
    ijk = np.argwhere(np.ones(lab.shape, dtype=bool))
    world = np.c_[ijk, np.ones(len(ijk))] @ affine_ras.T
    lps = world[:, :3] * np.array([-1.0, -1.0, 1.0])
    direction = np.array(img.GetDirection()).reshape(3, 3)
    idx = np.linalg.solve(direction * np.array(img.GetSpacing()), (lps - np.array(img.GetOrigin())).T).T
    rounded = np.round(idx).astype(int)
    assert np.allclose(idx, rounded, atol=1e-3)  # the same grid, up to axis flips
    out = np.zeros(img.GetSize(), dtype=lab.dtype)
    out[tuple(rounded.T)] = lab[tuple(ijk.T)]
    return out


def _world_centroid_lps(mask_xyz: np.ndarray, img: sitk.Image) -> np.ndarray:
    c = np.argwhere(mask_xyz).mean(0)
    return np.array(img.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in c)))


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_structures_come_back_in_place_through_simpleitk_geometry(tmp_path, name):
    image, labels = _case(tmp_path, name)
    out = write_rtstruct(labels, image, tmp_path / "rt" / "rtstruct.dcm", label_names=NAMES)
    assert [p.name for p in out.parent.iterdir()] == ["rtstruct.dcm"]  # no temporary left behind
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == RTSTRUCT_SOP_CLASS and ds.Modality == "RTSTRUCT"
    first = pydicom.dcmread(image.meta["dicom_files"][0], stop_before_pixels=True)
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == first.FrameOfReferenceUID
    series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} <= set(image.meta["sop_instance_uids"])
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    # one ROI per label: names and colours from medseg.labels
    by_number = {int(r.ROINumber): r for r in ds.StructureSetROISequence}
    colours = {int(r.ReferencedROINumber): [int(v) for v in r.ROIDisplayColor] for r in ds.ROIContourSequence}
    assert [by_number[n].ROIName for n in sorted(by_number)] == [get_label(NAMES[v]).display for v in sorted(NAMES)]
    assert [colours[n] for n in sorted(colours)] == [list(get_label(NAMES[v]).colour_rgb) for v in sorted(NAMES)]

    lab = labels[0].numpy()
    for number, value in enumerate(sorted(NAMES), start=1):
        mask, img = _rasterise_with_sitk(tmp_path / "ct", out, number)
        truth = _to_sitk_grid((lab == value).astype(np.uint8), image.affine.numpy(), img).astype(bool)
        assert truth.any()
        # contours half way between pixel centres: a point-in-polygon fill gives the map back
        # (measured Dice 1.0 for every structure and orientation; the issue asks >= 0.95)
        assert _dice(mask, truth) >= 0.999, (name, NAMES[value], _dice(mask, truth))
        gap = np.linalg.norm(_world_centroid_lps(mask, img) - _world_centroid_lps(truth, img))
        assert gap < 0.1, (name, NAMES[value], gap)
    # liver on the patient's right: LPS x < 0 relative to the spleen's
    liver, img = _rasterise_with_sitk(tmp_path / "ct", out, 1)
    spleen, _ = _rasterise_with_sitk(tmp_path / "ct", out, 2)
    assert _world_centroid_lps(liver, img)[0] < _world_centroid_lps(spleen, img)[0]


@pytest.mark.parametrize("name", [n for n in sorted(ORIENTATIONS) if not n.startswith("oblique")])
def test_rt_utils_reads_each_structure_back(tmp_path, name):
    """rt-utils (an independent RTSTRUCT reader: its own slice sorting, pixel<->patient matrix and
    OpenCV fill) puts every ROI back in place: no voxel of a structure is missed, and what it adds
    lies on the one-pixel in-plane rim outside it (OpenCV rounds vertices to whole pixels and fills
    the polygon's edge pixels: rt-utils' own writer traces contours through boundary-pixel centres
    to match, a half-pixel shrink medseg does not copy). Measured Dice 0.93-0.95 for the liver,
    0.85-0.9 for the small kidneys and the ring (the rim is a larger share of a small structure). Fed square pixels and matrices only: rt-utils swaps
    PixelSpacing's order and sizes masks (Columns, Rows) (see medseg.io.dicom_rtstruct)."""
    from scipy import ndimage

    rt_utils = pytest.importorskip("rt_utils")
    image, labels = _case(tmp_path, name)
    out = write_rtstruct(labels, image, tmp_path / "rtstruct.dcm", label_names=NAMES)
    rt = rt_utils.RTStructBuilder.create_from(str(tmp_path / "ct"), str(out))
    assert rt.get_roi_names() == [get_label(NAMES[v]).display for v in sorted(NAMES)]
    lab = labels[0].numpy()
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 2)
    for value in sorted(NAMES):
        mask = np.transpose(rt.get_roi_mask_by_name(get_label(NAMES[value]).display), (1, 0, 2))  # (row, col)
        assert mask.shape == lab.shape  # rt-utils sorts slices along row x col, as medseg's reader
        truth = lab == value
        assert not (truth & ~mask).any(), (name, NAMES[value], "voxels missed")
        rim = ndimage.binary_dilation(truth, in_plane) & ~truth
        assert not (mask & ~truth & ~rim).any(), (name, NAMES[value], "voxels beyond the rim")
        assert _dice(mask, truth) >= 0.8, (name, NAMES[value], _dice(mask, truth))


def _dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize("name", ["LPS-axial", "oblique-flipped-nonsquare"])
def test_dciodvfy_reports_no_errors(tmp_path, name):
    image, labels = _case(tmp_path, name)
    out = write_rtstruct(labels, image, tmp_path / "rtstruct.dcm", label_names=NAMES)
    errors, warns = _dciodvfy(out)
    for w in warns:
        print("dciodvfy:", w)
    assert errors == []
    # an empty result is still a valid structure set (one empty ROI per named label)
    empty = MetaTensor(torch.zeros_like(labels), affine=labels.affine.clone())
    out2 = write_rtstruct(empty, image, tmp_path / "empty.dcm", label_names={1: "lung_nodule"})
    assert _dciodvfy(out2)[0] == []
    assert pydicom.dcmread(out2).StructureSetROISequence[0].ROIName == "Lung nodule"


def test_contours_of_holes_and_islands_give_the_mask_back_exactly():
    rng = np.random.default_rng(0)
    mask = np.zeros((30, 25), dtype=bool)
    mask[3:20, 4:22] = True
    mask[7:15, 8:18] = False  # hole
    mask[10:12, 11:13] = True  # island in the hole
    mask[24:28, 2:5] = True  # second island
    mask[rng.integers(0, 30, 12), rng.integers(0, 25, 12)] ^= True  # ragged edges, single pixels
    polys = label_contours(mask)
    assert len(polys) >= 4
    ii, jj = np.meshgrid(np.arange(30), np.arange(25), indexing="ij")
    back = np.zeros_like(mask)
    for p in polys:
        back ^= MplPath(p).contains_points(np.c_[ii.ravel(), jj.ravel()]).reshape(mask.shape)
    np.testing.assert_array_equal(back, mask)


def test_refusals_write_nothing(tmp_path):
    image, labels = _case(tmp_path, "LPS-axial")
    shifted = MetaTensor(labels.clone(), affine=labels.affine.clone())
    shifted.affine[0, 3] += 10.0
    with pytest.raises(GeometryError, match="resample"):
        write_rtstruct(shifted, image, tmp_path / "a.dcm", label_names=NAMES)
    anon = MetaTensor(image.clone(), affine=image.affine.clone(), meta=dict(image.meta))
    files = []
    for i, f in enumerate(image.meta["dicom_files"]):
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = ""
        files.append(tmp_path / f"anon{i}.dcm")
        ds.save_as(files[-1])
    anon.meta["dicom_files"] = [str(f) for f in files]
    with pytest.raises(RtstructNotWritable, match="FrameOfReferenceUID"):
        write_rtstruct(labels, anon, tmp_path / "b.dcm", label_names=NAMES)
    assert all(p.name.startswith("anon") for p in tmp_path.glob("*.dcm*"))


def test_identity_is_not_logged(tmp_path, caplog):
    image, labels = _case(tmp_path, "LPS-axial")
    with caplog.at_level("DEBUG"):
        out = write_rtstruct(labels, image, tmp_path / "rtstruct.dcm", label_names=NAMES)
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text
    ds = pydicom.dcmread(out)
    assert str(ds.PatientName) == PATIENT_NAME and ds.PatientID == PATIENT_ID  # the IOD's patient module
    assert ds.ApprovalStatus == "UNAPPROVED"


def test_enhanced_multiframe_source_references_frames(tmp_path):
    """A real enhanced (multi-frame) CT: each contour names the frame it lies on, and placed with
    that frame's own PlanePosition/Orientation and PixelSpacing (pydicom, not medseg's affine) it
    fills back exactly the labels of that frame."""
    from medseg.data import sample

    path = sample("enhanced_ct")
    image = load(path)
    n_i, n_j, n_k = image.shape[1:]
    lab = np.zeros((n_i, n_j, n_k), np.uint8)
    lab[100:180, 300:340, 0] = 1
    lab[120:150, 310:330, 0] = 0  # a hole
    lab[40:60, 50:90, n_k - 1] = 2
    labels = MetaTensor(torch.from_numpy(lab)[None], affine=image.affine.clone())
    out = write_rtstruct(labels, image, tmp_path / "rs.dcm", label_names={1: "lesion", 2: "lung_nodule"})
    src = pydicom.dcmread(path, stop_before_pixels=True)
    shared = src.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    ps = np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, float)  # (row spacing, column spacing)
    normal = np.cross(iop[:3], iop[3:])
    ds = pydicom.dcmread(out)
    ii, jj = np.meshgrid(np.arange(n_i), np.arange(n_j), indexing="ij")
    for number, value in ((1, 1), (2, 2)):
        roi = next(r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == number)
        filled: dict[int, np.ndarray] = {}
        for c in roi.ContourSequence:
            ref = c.ContourImageSequence[0]
            assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
            frame = int(ref.ReferencedFrameNumber)
            ipp = np.asarray(src.PerFrameFunctionalGroupsSequence[frame - 1].PlanePositionSequence[0]
                             .ImagePositionPatient, float)
            pts = np.asarray(c.ContourData, float).reshape(-1, 3) - ipp
            assert np.abs(pts @ normal).max() < 1e-3  # on the referenced frame's plane
            col, row = pts @ iop[:3] / ps[1], pts @ iop[3:] / ps[0]
            inside = MplPath(np.c_[col, row]).contains_points(np.c_[ii.ravel(), jj.ravel()]).reshape(n_i, n_j)
            filled[frame] = filled.get(frame, np.zeros((n_i, n_j), bool)) ^ inside
        (frame,) = filled
        uid_k = [k for k in range(n_k) if np.any(lab[:, :, k] == value)]
        assert len(uid_k) == 1
        np.testing.assert_array_equal(filled[frame], lab[:, :, uid_k[0]] == value)
    if shutil.which("dciodvfy"):
        assert _dciodvfy(out)[0] == []


@pytest.mark.parametrize("name", ["LPS-axial", "oblique-flipped-nonsquare"])
def test_read_back_on_the_source_grid_is_exact(tmp_path, name):
    from medseg.io.dicom_rtstruct import read_rtstruct

    image, labels = _case(tmp_path, name)
    lab = labels[0].numpy().copy()
    lab[lab == 2] = 9  # a gap in the values: ROINumber keeps the label value
    labels = MetaTensor(torch.from_numpy(lab)[None], affine=labels.affine.clone())
    names = {1: "liver", 9: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "lesion"}
    out = write_rtstruct(labels, image, tmp_path / "rs.dcm", label_names=names)
    back = read_rtstruct(out, image)
    np.testing.assert_array_equal(back.array[0], lab)
    assert back.meta["labels"][9] == "Spleen"
    # by name: the values of another numbering
    renamed = read_rtstruct(out, image, label_names={2: "spleen", 1: "Liver"})
    np.testing.assert_array_equal(renamed.array[0], np.select([lab == 1, lab == 9], [1, 2], 0))


def test_reads_an_rtstruct_written_by_rt_utils(tmp_path):
    """An independent writer (rt-utils, square pixels: the case it handles): its contours run
    through boundary-pixel centres, so the fill is the structure less (part of) its rim."""
    rt_utils = pytest.importorskip("rt_utils")
    from medseg.io.dicom_rtstruct import read_rtstruct

    image, labels = _case(tmp_path, "LPS-axial")
    lab = labels[0].numpy()
    rs = rt_utils.RTStructBuilder.create_new(str(tmp_path / "ct"))
    rs.add_roi(mask=np.transpose(lab == 1, (1, 0, 2)), name="Liver")
    rs.save(str(tmp_path / "rtu.dcm"))
    back = read_rtstruct(tmp_path / "rtu.dcm", image, label_names={1: "liver"}).array[0]
    truth = lab == 1
    assert not (back.astype(bool) & ~truth).any()  # nothing outside the structure
    assert _dice(back == 1, truth) >= 0.85


def test_evaluate_against_an_rtstruct_reference(tmp_path):
    from medseg import cli
    from medseg.io.write import save_labels

    image, labels = _case(tmp_path, "oblique-flipped-nonsquare")
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    save_labels(labels, image, tmp_path / "pred" / "case1.nii.gz")
    write_rtstruct(labels, image, tmp_path / "ref" / "case1.dcm", label_names=NAMES)
    out = tmp_path / "ev"
    assert cli.main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out), "--no-plots",
                     "--ref-image", str(tmp_path / "ct")]) == 0
    import csv

    rows = list(csv.DictReader(open(out / "metrics.csv", newline="")))
    assert sorted(int(r["label"]) for r in rows) == sorted(NAMES)
    assert all(float(r["dice"]) == 1.0 for r in rows)
    # without the series it contours, that case fails with the reason
    assert cli.main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(tmp_path / "ev2"),
                     "--no-plots"]) == 2


def test_rtstruct_written_after_the_source_files_are_deleted_equals_the_one_written_from_them(tmp_path):
    """The writer references the headers ``load`` kept (``meta['dicom_source']``): with the series
    folder gone it writes, element for element, the structure set written from the files' own
    headers (a MetaTensor carrying only ``meta['dicom_files']`` has them re-read)."""
    image, labels = _case(tmp_path, "PIR-sagittal")
    keep = ("dicom_files", "sop_instance_uids", "missing_slices", "format")
    from_files = MetaTensor(image.as_tensor().clone(), affine=image.affine.clone(),
                            meta={k: image.meta[k] for k in keep})
    uids = {"series_instance_uid": "1.2.826.0.1.3680043.10.1234.3", "sop_instance_uid": "1.2.826.0.1.3680043.10.1234.4"}
    before = write_rtstruct(labels, from_files, tmp_path / "before.dcm", label_names=NAMES, **uids)
    shutil.rmtree(tmp_path / "ct")
    after = write_rtstruct(labels, image, tmp_path / "after.dcm", label_names=NAMES, **uids)
    stamps = {"InstanceCreationDate", "InstanceCreationTime", "StructureSetDate", "StructureSetTime", "SeriesDate",
              "SeriesTime"}
    a, b = pydicom.dcmread(before), pydicom.dcmread(after)
    for ds in (a, b):
        for kw in stamps:
            delattr(ds, kw)
    assert a == b and str(b.PatientName) == PATIENT_NAME
    if shutil.which("dciodvfy"):
        proc = subprocess.run(["dciodvfy", str(after)], capture_output=True, text=True, timeout=120)
        assert not [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("Error")]
