"""Enhanced multi-frame CT built by highdicom (an independent writer of functional groups) from
a phantom series: read_dicom must give the same volume and world geometry as the classic
series, whatever the frame order inside the object."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medseg.data.dicom_writer import write_dicom_series
from medseg.errors import GeometryError
from medseg.io.dicom import read_dicom


def _oblique_affine() -> np.ndarray:
    c, s = np.cos(np.radians(22)), np.sin(np.radians(22))
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([-1.0, -1.0, 1.0])
    a = np.eye(4)
    a[:3, :3] = rot * [0.7, 0.9, 1.5]
    a[:3, 3] = [30.0, -12.0, 80.0]
    return a


def _enhanced(tmp_path, perm_seed: int | None):
    affine = _oblique_affine()
    rng = np.random.default_rng(5)
    vol = rng.integers(-300, 900, (12, 10, 7)).astype(np.float32)
    vol[9, 2, 5] = 2500  # marker
    files = write_dicom_series(vol, affine, tmp_path / "classic", order="shuffled", seed=2)
    ds = hd.legacy.LegacyConvertedEnhancedCTImage([pydicom.dcmread(f) for f in files],
                                                  hd.UID(), 1, hd.UID(), 1)
    if perm_seed is not None:  # shuffle frames: pixel data and per-frame groups together
        frames = ds.pixel_array
        perm = np.random.default_rng(perm_seed).permutation(frames.shape[0])
        ds.PixelData = np.ascontiguousarray(frames[perm]).astype(frames.dtype).tobytes()
        per = list(ds.PerFrameFunctionalGroupsSequence)
        ds.PerFrameFunctionalGroupsSequence = [per[i] for i in perm]
        if "DimensionIndexSequence" in ds:
            for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
                if "FrameContentSequence" in item:
                    item.FrameContentSequence[0].InStackPositionNumber = i + 1
    out = tmp_path / "enhanced.dcm"
    ds.save_as(out, enforce_file_format=True)
    return vol, affine, out, tmp_path / "classic"


@pytest.mark.parametrize("perm_seed", [None, 11])
def test_enhanced_ct_matches_classic_series_and_truth(tmp_path, perm_seed):
    vol, affine, enhanced, classic = _enhanced(tmp_path, perm_seed)
    img = read_dicom(enhanced, progress=False)
    ref = read_dicom(classic, progress=False)
    np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(img.numpy(), ref.numpy())
    # Marker at its true RAS position.
    found = np.unravel_index(int(np.argmax(img[0].numpy())), img.shape[1:])
    np.testing.assert_allclose((img.affine.numpy() @ [*found, 1])[:3], (affine @ [9, 2, 5, 1])[:3], atol=1e-3)
    # Each k's position equals the PlanePositionSequence of the frame recorded for it.
    ds = pydicom.dcmread(enhanced)
    for k, f in enumerate(img.meta["frame_numbers"]):
        ipp = [float(v) for v in
               ds.PerFrameFunctionalGroupsSequence[f - 1].PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose((img.affine.numpy() @ [0, 0, k, 1])[:3] * [-1, -1, 1], ipp, atol=1e-4)
    assert img.meta["modality"] == "CT" and img.meta["dicom_files"] == [str(enhanced)] * 7


def test_enhanced_with_duplicate_frame_position_refused(tmp_path):
    _, _, enhanced, _ = _enhanced(tmp_path, None)
    ds = pydicom.dcmread(enhanced)
    per = ds.PerFrameFunctionalGroupsSequence
    per[3].PlanePositionSequence[0].ImagePositionPatient = per[2].PlanePositionSequence[0].ImagePositionPatient
    ds.save_as(enhanced)
    with pytest.raises(GeometryError, match="duplicate"):
        read_dicom(enhanced, progress=False)
