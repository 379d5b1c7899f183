"""Phantom generators: patient sides in WORLD coordinates for any grid orientation, determinism,
tissue values, and the files they write (checked with nibabel, SimpleITK and pydicom)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.data import phantoms as P
from medseg.errors import ConfigError

# shapes / spacings covering the SAME field of view (R-L 144 mm, A-P 144 mm, S-I 160 mm)
GRIDS = {
    "LPS": ((96, 96, 64), (1.5, 1.5, 2.5)),
    "RAS": ((96, 96, 64), (1.5, 1.5, 2.5)),
    "LAS": ((96, 96, 64), (1.5, 1.5, 2.5)),
    "RAI": ((96, 96, 64), (1.5, 1.5, 2.5)),
    "PIR": ((96, 64, 96), (1.5, 2.5, 1.5)),
}


def _rot(axis: str, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


OBLIQUE = _rot("z", 20) @ _rot("x", 12) @ np.diag([-1.0, -1.0, 1.0])  # a tilted LPS grid


def _world_centroids(label: np.ndarray, affine: np.ndarray, values) -> dict[int, np.ndarray]:
    """Centroid of each label in RAS mm, through nibabel's apply_affine."""
    out = {}
    for v in values:
        ijk = np.argwhere(label == v).mean(axis=0)
        ijk = np.r_[ijk, np.zeros(3 - ijk.size)]  # 2D: k = 0
        out[v] = nib.affines.apply_affine(affine, ijk)
    return out


def test_axis_codes_match_nibabel():
    for codes in ("LPS", "RAS", "LAS", "PIR", "ASL", "RAI"):
        aff = P.grid_affine((8, 9, 10), (1.0, 2.0, 3.0), codes)
        assert "".join(nib.aff2axcodes(aff)) == codes
        np.testing.assert_allclose(nib.affines.voxel_sizes(aff), (1.0, 2.0, 3.0))
        # centred on the world origin
        np.testing.assert_allclose(nib.affines.apply_affine(aff, (np.array((8, 9, 10)) - 1) / 2), 0, atol=1e-9)
    # the convention itself: LPS axes are RAS -x, -y, +z
    np.testing.assert_array_equal(P.direction_matrix("LPS"), np.diag([-1.0, -1.0, 1.0]))


@pytest.mark.parametrize("bad", ["LLS", "XYZ", "LP", np.ones((3, 3)), np.zeros((3, 3))])
def test_bad_orientation_is_config_error(bad):
    with pytest.raises(ConfigError):
        P.direction_matrix(bad)


def test_abdomen_sides_in_world_for_every_orientation():
    ref = None
    for name, (shape, spacing) in [*GRIDS.items(), ("oblique", ((96, 96, 64), (1.5, 1.5, 2.5)))]:
        orientation = OBLIQUE if name == "oblique" else name
        ph = P.abdomen_ct(shape, spacing, orientation, seed=1)
        assert ph.labels == {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}
        c = _world_centroids(ph.label, ph.affine, (1, 2, 3, 4))
        # RAS: +x is the patient's RIGHT. Liver and right kidney on the right, spleen and left kidney left.
        assert c[1][0] > 10 and c[2][0] < -10, name
        assert c[3][0] > 10 and c[4][0] < -10, name
        assert c[1][0] > c[2][0]
        # kidneys are posterior (RAS -y) of the liver centre
        assert c[3][1] < c[1][1] and c[4][1] < c[1][1]
        if ref is None:
            ref = c
        else:
            for v in (1, 2, 3, 4):
                assert np.linalg.norm(c[v] - ref[v]) < 2.5, (name, v, c[v], ref[v])  # within one voxel


def test_abdomen_sides_through_simpleitk_lps(tmp_path):
    """Independent reader: SimpleITK reports LPS; the liver must have NEGATIVE LPS x (patient's right)."""
    import SimpleITK as sitk

    ph = P.abdomen_ct((64, 64, 40), (2.25, 2.25, 4.0), "PIR", seed=3)
    out = P.save_phantom(ph, tmp_path / "case")
    lab = sitk.ReadImage(str(out / "label.nii.gz"))
    arr = sitk.GetArrayFromImage(lab)  # (k, j, i)
    for value, sign in ((1, -1), (3, -1), (2, 1), (4, 1)):
        kji = np.argwhere(arr == value).mean(axis=0)
        lps = lab.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in kji[::-1]))
        assert np.sign(lps[0]) == sign, (value, lps)


# Literature ranges (adult abdominal CT, HU), written here independently of the generator's table:
# portal-venous phase (~70 s) and native (no contrast). Organ cores are eroded by 2 voxels so
# the partial-volume blur at the borders does not count.
_PHASE_RANGES = {
    "portal_venous": {"liver": (100, 120), "spleen": (110, 130), "kidney": (130, 200), "muscle": (50, 65)},
    "native": {"liver": (55, 65), "spleen": (40, 50), "kidney": (25, 40), "muscle": (40, 60)},
}


def _organ_and_muscle_medians(ph: P.Phantom) -> dict[str, float]:
    """Median HU inside each organ's core and in a shell 2-4 voxels around the spleen outside
    every organ (the abdominal wall / paraspinal muscle the spleen borders)."""
    img, lab = ph.image, ph.label
    core = {name: float(np.median(img[ndimage.binary_erosion(lab == v, iterations=2)]))
            for v, name in ph.labels.items()}
    spleen = lab == 2
    shell = ndimage.binary_dilation(spleen, iterations=4) & ~ndimage.binary_dilation(spleen, iterations=2) & (lab == 0)
    assert shell.sum() > 500
    core["muscle"] = float(np.median(img[shell]))
    return core


@pytest.mark.parametrize("phase", ["portal_venous", "native"])
def test_abdomen_hu_values(phase):
    ph = P.abdomen_ct(seed=2, phase=phase)
    assert ph.meta["phase"] == phase
    med = _organ_and_muscle_medians(ph)
    lit = _PHASE_RANGES[phase]
    for organ in ("liver", "spleen", "muscle"):
        lo, hi = lit[organ]
        assert lo <= med[organ] <= hi, (phase, organ, med[organ])
    for side in ("kidney_right", "kidney_left"):
        lo, hi = lit["kidney"]
        assert lo <= med[side] <= hi, (phase, side, med[side])
    corner = ph.image[:4, :4, :]
    assert corner.max() < -900  # air outside the body
    assert 400 <= np.percentile(ph.image, 99.9) <= 1100  # bone
    # subcutaneous fat: a thin ring at the body surface, around -100 HU
    body = ph.image > -500
    ring = body & ~ndimage.binary_erosion(body, iterations=4) & ndimage.binary_erosion(body, iterations=1)
    assert -160 <= np.median(ph.image[ring]) <= -40
    assert ph.image.dtype == np.float32 and ph.label.dtype == np.uint8
    assert np.all(np.round(ph.image) == ph.image)  # integer HU like a real CT


def test_abdomen_spleen_muscle_contrast_by_phase():
    """Portal-venous: the spleen enhances well above the muscle it borders (> 3 noise SD, so its
    boundary is visible) and above the liver; native: spleen ~ muscle (within one noise SD) and
    below the liver, as on real unenhanced CT."""
    noise = 12.0
    pv = _organ_and_muscle_medians(P.abdomen_ct(seed=4, phase="portal_venous", noise_hu=noise))
    nat = _organ_and_muscle_medians(P.abdomen_ct(seed=4, phase="native", noise_hu=noise))
    assert pv["spleen"] - pv["muscle"] >= 3 * noise, pv
    assert pv["spleen"] > pv["liver"], pv
    assert abs(nat["spleen"] - nat["muscle"]) <= noise, nat
    assert nat["liver"] > nat["spleen"], nat
    # kidneys: enhanced (cortex brighter than medulla) only with contrast
    assert pv["kidney_right"] > pv["liver"] + 30 and nat["kidney_right"] < nat["liver"] - 15, (pv, nat)


def test_abdomen_kidney_cortex_brighter_than_medulla_portal_venous():
    ph = P.abdomen_ct(seed=6, phase="portal_venous")
    for v in (3, 4):
        depth = ndimage.distance_transform_edt(ph.label == v)
        deep, outer = ph.image[depth >= np.percentile(depth[depth > 0], 95)], ph.image[(depth >= 2) & (depth <= 3)]
        assert np.median(outer) - np.median(deep) >= 20, (v, np.median(outer), np.median(deep))


def test_abdomen_phase_changes_intensities_only():
    """Labels, geometry and the random stream (noise) are the same for every phase: far from the
    body (beyond the partial-volume blur) the two images agree voxel for voxel."""
    kw = {"shape": (48, 44, 28), "spacing": (3.0, 3.0, 4.5), "orientation": "RAS", "seed": 8}
    pv, nat = P.abdomen_ct(**kw), P.abdomen_ct(**kw, phase="native")
    assert pv.meta["phase"] == "portal_venous"  # the default
    np.testing.assert_array_equal(pv.label, nat.label)
    np.testing.assert_array_equal(pv.affine, nat.affine)
    far = ~ndimage.binary_dilation(pv.image > -500, structure=np.ones((3, 3, 3), bool), iterations=4)
    assert far.sum() > 1000
    np.testing.assert_array_equal(pv.image[far], nat.image[far])
    organs = pv.label > 0
    assert np.median(pv.image[organs] - nat.image[organs]) > 30  # contrast enhancement


@pytest.mark.parametrize("bad", ["arterial", "PORTAL_VENOUS", ""])
def test_abdomen_unknown_phase_is_config_error(bad):
    with pytest.raises(ConfigError, match="phase"):
        P.abdomen_ct((24, 24, 16), (3.0, 3.0, 5.0), seed=0, phase=bad)


@pytest.mark.parametrize("gen,kw", [
    (P.abdomen_ct, {"shape": (40, 40, 24)}),
    (P.lung_ct, {"shape": (40, 40, 24)}),
    (P.spine_ct, {"shape": (32, 32, 48)}),
    (P.brain_mr, {"shape": (40, 48, 40)}),
    (P.chest_xray, {"shape": (96, 96)}),
    (P.nuclei_2d, {"shape": (96, 96), "n": 12}),
])
def test_same_seed_same_arrays(gen, kw):
    a, b, c = gen(seed=5, **kw), gen(seed=5, **kw), gen(seed=6, **kw)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.float32 and a.label.shape == a.image.shape
    assert set(np.unique(a.label)) - {0} <= set(a.labels)


def test_lung_nodules_inside_one_lung_and_sided():
    for seed in range(3):
        ph = P.lung_ct(seed=seed)
        lungs = P.lung_ct(seed=seed, lung_labels=True)
        assert ph.labels == {1: "lung_nodule"} and lungs.labels == {1: "lung_right", 2: "lung_left"}
        nodules = ph.meta["nodules"]
        assert 1 <= len(nodules) <= 3
        comps, n = ndimage.label(ph.label == 1)
        assert n == len(nodules)
        # every nodule voxel lies in a lung of the lung-labelled twin, on the lung of its side
        for q in nodules:
            side = 1 if q["lung"] == "right" else 2
            assert (q["centre_ras_mm"][0] > 0) == (q["lung"] == "right")
            ijk = np.round(nib.affines.apply_affine(np.linalg.inv(ph.affine), q["centre_ras_mm"])).astype(int)
            comp = comps[tuple(ijk)]
            assert comp > 0
            assert np.all(lungs.label[comps == comp] == side)
        c = _world_centroids(lungs.label, lungs.affine, (1, 2))
        assert c[1][0] > 20 and c[2][0] < -20  # right lung at RAS +x
        assert (lungs.label == 1).sum() > (lungs.label == 2).sum()  # the heart takes room on the left
        assert -900 <= np.median(lungs.image[lungs.label > 0]) <= -700


def test_lung_sides_oblique():
    ph = P.lung_ct(orientation=OBLIQUE, seed=0, lung_labels=True)
    c = _world_centroids(ph.label, ph.affine, (1, 2))
    assert c[1][0] > 20 and c[2][0] < -20


def test_spine_levels_in_order_along_superior_axis():
    for seed, orientation in ((0, "LPS"), (1, "RAI"), (2, "PIR"), (7, "LPS")):
        shape, spacing = ((64, 96, 64), (1.25, 1.5, 1.25)) if orientation == "PIR" else \
            ((64, 64, 96), (1.25, 1.25, 1.5))
        ph = P.spine_ct(shape, spacing, orientation, seed=seed)
        levels = ph.meta["levels"]
        assert 3 <= len(levels) <= 6 and levels == [lv for lv in P.SPINE_LEVELS if lv in levels]
        assert ph.labels == {i + 1: f"vertebra_{lv}" for i, lv in enumerate(P.SPINE_LEVELS)}
        present = [int(v) for v in np.unique(ph.label) if v]
        assert present == [P.SPINE_LEVELS.index(lv) + 1 for lv in levels]
        c = _world_centroids(ph.label, ph.affine, present)
        zs = [c[v][2] for v in present]
        assert all(z1 > z2 for z1, z2 in zip(zs[:-1], zs[1:], strict=True)), zs  # T12 above L1 above ... (RAS +z superior)
        # each vertebra is one connected bone and its voxels are bone HU
        for v in present:
            assert ndimage.label(ph.label == v)[1] == 1
            assert np.median(ph.image[ph.label == v]) >= 400
        # the spinous process points posterior: label mass extends further to -y than +y
        ys = nib.affines.apply_affine(ph.affine, np.argwhere(ph.label > 0))[:, 1]
        yc = np.median(ys)
        assert yc - ys.min() > ys.max() - yc


def test_brain_mr_world_consistent_and_plausible():
    a = P.brain_mr(seed=0)
    b = P.brain_mr((80, 80, 96), (2.0, 2.0, 2.0), "LIP", seed=0)  # i->L (80), j->I (80), k->P (96)
    ca = _world_centroids(a.label, a.affine, (1,))[1]
    cb = _world_centroids(b.label, b.affine, (1,))[1]
    assert np.linalg.norm(ca - cb) < 2.0
    vol_ml = (a.label == 1).sum() * np.prod(a.spacing) / 1000
    assert 300 < vol_ml < 1600
    inside = a.image[a.label == 1]
    assert 400 <= np.median(inside) <= 750  # GM/WM, brighter than CSF
    assert np.median(a.image[(a.label == 0) & (a.image > 0)]) < np.median(inside)
    assert a.image.min() >= 0 and np.all(np.round(a.image) == a.image)


def test_chest_xray_lungs_on_documented_sides(tmp_path):
    import pydicom

    ph = P.chest_xray(seed=3)
    assert ph.labels == {1: "lung_right", 2: "lung_left"} and ph.modality == "DX"
    ii_r = np.argwhere(ph.label == 1)[:, 0].mean()
    ii_l = np.argwhere(ph.label == 2)[:, 0].mean()
    assert ii_r < ph.image.shape[0] / 2 < ii_l  # patient's right lung on the viewer's left
    c = _world_centroids(ph.label, ph.affine, (1, 2))
    assert c[1][0] > 0 > c[2][0]  # RAS x: right lung at +x
    assert nib.aff2axcodes(ph.affine)[:2] == ("L", "I")
    # lungs are darker (less attenuation) than the mediastinum between them
    mid = ph.image[ph.image.shape[0] // 2 - 3: ph.image.shape[0] // 2 + 3, 80:150]
    assert np.median(ph.image[ph.label > 0]) < np.median(mid)
    # as a DX file: pixel columns run along i, PatientOrientation says row direction = patient's Left
    out = P.save_phantom(ph, tmp_path / "cxr", format="dicom")
    ds = pydicom.dcmread(out / "image.dcm")
    assert list(ds.PatientOrientation) == ["L", "F"]
    np.testing.assert_array_equal(ds.pixel_array, ph.image.T.astype(np.uint16))
    assert float(ds.PixelSpacing[0]) == pytest.approx(1.4)


def test_nuclei_instances():
    ph = P.nuclei_2d(seed=4)
    inst = ph.instances
    assert inst is not None and inst.dtype == np.uint16
    ids = np.unique(inst[inst > 0])
    assert len(ids) == ph.meta["n_instances"] and np.array_equal(ids, np.arange(1, len(ids) + 1))
    assert 30 <= len(ids) <= 40
    np.testing.assert_array_equal(ph.label, (inst > 0).astype(np.uint8))
    # touching nuclei: neighbouring pixels with two different ids
    a, b = inst[1:, :], inst[:-1, :]
    touching = (a > 0) & (b > 0) & (a != b)
    assert touching.sum() > 20
    # each instance one connected region
    for i in ids:
        assert ndimage.label(inst == i)[1] == 1
    fg, bg = ph.image[inst > 0], ph.image[inst == 0]
    assert np.median(fg) > 5 * np.median(bg)


def test_save_phantom_nifti_round_trip(tmp_path):
    import SimpleITK as sitk

    ph = P.abdomen_ct((40, 36, 24), (3.0, 3.5, 5.0), "LAS", seed=0)
    out = P.save_phantom(ph, tmp_path / "case")
    img, lab = nib.load(out / "image.nii.gz"), nib.load(out / "label.nii.gz")
    np.testing.assert_allclose(img.affine, ph.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(lab.dataobj), ph.label)
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), ph.image)
    assert lab.get_data_dtype() == np.uint8
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["labels"] == {"1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left"}
    # SimpleITK's LPS geometry equals the RAS affine with x, y negated
    s = sitk.ReadImage(str(out / "image.nii.gz"))
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(s.GetOrigin(), lps @ ph.affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.array(s.GetDirection()).reshape(3, 3) * s.GetSpacing(),
                               lps @ ph.affine[:3, :3], atol=1e-4)


def test_save_phantom_dicom_series_read_by_simpleitk(tmp_path):
    import SimpleITK as sitk

    ph = P.abdomen_ct((40, 32, 12), (3.0, 3.0, 5.0), "LPS", seed=1)
    out = P.save_phantom(ph, tmp_path / "dcm", format="dicom")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out / "image")))
    vol = reader.Execute()
    arr = sitk.GetArrayFromImage(vol).transpose(2, 1, 0)  # -> (i, j, k)
    np.testing.assert_array_equal(arr, ph.image)  # integer HU, exact
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(vol.GetOrigin(), lps @ ph.affine[:3, 3], atol=1e-3)
    lab = nib.load(out / "label.nii.gz")
    np.testing.assert_array_equal(np.asarray(lab.dataobj), ph.label)


def test_decathlon_layout(tmp_path):
    root = P.write_decathlon_dataset(tmp_path / "msd", "abdomen", n_train=2, n_test=1, shape=(32, 32, 16), seed=3)
    ds = json.loads((root / "dataset.json").read_text())
    assert ds["labels"] == {"0": "background", "1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left"}
    assert ds["modality"] == {"0": "CT"} and ds["numTraining"] == 2 and ds["numTest"] == 1
    assert len(ds["training"]) == 2 and len(ds["test"]) == 1
    for case in ds["training"]:
        img, lab = nib.load(root / case["image"]), nib.load(root / case["label"])
        assert img.shape == lab.shape == (32, 32, 16)
        np.testing.assert_allclose(img.affine, lab.affine)
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2, 3, 4}
    assert (root / ds["test"][0]).is_file()
    # reproducible: case n uses seed*1000+n
    ref = P.abdomen_ct((32, 32, 16), (1.5, 1.5, 2.5), "LPS", seed=3001)
    np.testing.assert_array_equal(np.asarray(nib.load(root / ds["training"][1]["label"]).dataobj), ref.label)


def test_nnunet_layout_and_2d_tasks(tmp_path):
    root = P.write_decathlon_dataset(tmp_path / "nn", "xray", n_train=2, n_test=1, layout="nnunet", shape=(64, 64))
    ds = json.loads((root / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "DX"} and ds["file_ending"] == ".nii.gz"
    assert ds["labels"] == {"background": 0, "lung_right": 1, "lung_left": 2}
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["xray_000_0000.nii.gz", "xray_001_0000.nii.gz"]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["xray_000.nii.gz", "xray_001.nii.gz"]
    assert [p.name for p in (root / "imagesTs").iterdir()] == ["xray_002_0000.nii.gz"]
    assert nib.load(root / "labelsTr" / "xray_000.nii.gz").shape == (64, 64)
    nuc = P.write_decathlon_dataset(tmp_path / "nuc", "nuclei", n_train=1, n_test=0, shape=(64, 64))
    entry = json.loads((nuc / "dataset.json").read_text())["training"][0]
    inst = np.asarray(nib.load(nuc / entry["instances"]).dataobj)
    sem = np.asarray(nib.load(nuc / entry["label"]).dataobj)
    np.testing.assert_array_equal(sem, (inst > 0).astype(np.uint8))
    with pytest.raises(ConfigError, match="task 'liver' is unknown"):
        P.write_decathlon_dataset(tmp_path / "x", "liver")


def test_as_metatensors_contract():
    ph = P.abdomen_ct((24, 24, 16), (3.0, 3.0, 5.0), "LPS", seed=0)
    img, lab = P.as_metatensors(ph)
    assert tuple(img.shape) == (1, 24, 24, 16) and tuple(lab.shape) == (1, 24, 24, 16)
    np.testing.assert_allclose(img.affine.numpy(), ph.affine)
    assert img.meta["space"] == "RAS" and lab.meta["kind"] == "label" and img.meta["modality"] == "CT"
    assert img.meta["spacing"] == pytest.approx((3.0, 3.0, 5.0))


def test_bad_shapes_are_config_errors():
    with pytest.raises(ConfigError):
        P.abdomen_ct(shape=(2, 40, 40))
    with pytest.raises(ConfigError):
        P.abdomen_ct(spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ConfigError):
        P.chest_xray(shape=(8, 8, 8))


def test_thick_slices_average_thin_ones_at_the_same_world_position():
    thin = P.brain_mr((40, 48, 50), spacing=(4.0, 4.0, 1.2), seed=3, orientation="ASR")
    thick = P.thick_slices(thin, 5, axis=2)
    assert thick.image.shape == (40, 48, 10) and thick.meta["thick_slices"] == {"k": 5, "axis": 2}
    np.testing.assert_allclose(thick.spacing, (4.0, 4.0, 6.0))
    # a thick voxel is the mean of its five thin ones (rounded), and sits at their mean world position
    np.testing.assert_allclose(thick.image[7, 9, 3], np.round(thin.image[7, 9, 15:20].mean()))
    centre = nib.affines.apply_affine(thin.affine, [[7, 9, 15 + k] for k in range(5)]).mean(axis=0)
    np.testing.assert_allclose(nib.affines.apply_affine(thick.affine, [7, 9, 3]), centre, atol=1e-6)
    # the label is the majority: its world centroid and volume stay put (within a quarter slice)
    def world_centroid(p):
        return nib.affines.apply_affine(p.affine, np.argwhere(p.label > 0)).mean(axis=0)

    assert np.linalg.norm(world_centroid(thick) - world_centroid(thin)) < 0.25 * 6.0
    vol = [(p.label > 0).sum() * np.prod(p.spacing) for p in (thin, thick)]
    assert abs(vol[1] / vol[0] - 1) < 0.03
    assert P.thick_slices(thin, 1).image.tolist() == thin.image.tolist()
    with pytest.raises(ConfigError):
        P.thick_slices(thin, 0)
