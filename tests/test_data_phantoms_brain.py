"""The T1 head phantom's anatomy (medseg.data.phantoms.brain_mr): checked in world coordinates
with nibabel / SimpleITK, not with the generator's own helpers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from medseg.data.phantoms import brain_mr
from medseg.errors import ConfigError


@pytest.fixture(scope="module")
def ph():
    return brain_mr(seed=11)


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, ijk)


def test_same_anatomy_in_every_orientation(ph):
    # LPI voxel order: nibabel's reorientation to RAS must give the RAS phantom back
    other = brain_mr(seed=11, orientation="LPI")
    assert nib.aff2axcodes(other.affine) == ("L", "P", "I")
    img = nib.as_closest_canonical(nib.Nifti1Image(other.label, other.affine))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(img.affine, ph.affine, atol=1e-6)
    a, b = ph.label > 0, np.asarray(img.dataobj) > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99


def test_cord_reaches_the_bottom_of_the_field_of_view():
    # the brainstem continues as the cord through the foramen magnum: the lowest labelled voxel
    # is in the lowest plane of the volume, whatever the voxel order
    for orient in ("RAS", "SPL"):
        p = brain_mr((80, 96, 80), seed=2, orientation=orient)
        z_lab = _world(p.affine, np.argwhere(p.label > 0))[:, 2]
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in p.label.shape])).reshape(3, -1).T
        z_fov = _world(p.affine, corners)[:, 2]
        assert z_lab.min() - z_fov.min() < 1.5 * max(p.spacing)
        # and it is thin there (a cord, not the whole brain cut off): < 3 cm^2 in the lowest 1 cm
        low = z_lab < z_fov.min() + 10
        area_cm2 = low.sum() * np.prod(p.spacing) / 10 / 100
        assert 0 < area_cm2 < 3


def test_extra_axial_csf_is_dark_and_not_brain(ph):
    lab = ph.label > 0
    d = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        sitk.GetImageFromArray(lab.astype(np.uint8).transpose(2, 1, 0)), insideIsPositive=False,
        squaredDistance=False, useImageSpacing=False)).transpose(2, 1, 0) * 2.0  # 2 mm voxels
    csf_mm = ph.meta["csf_mm"]
    ring = (d > 0.5) & (d < csf_mm - 0.5)
    inside = d < -4
    if ring.sum() < 50:  # a very thin layer at this seed: take the first voxel outside
        ring = (d > 0) & (d <= 2.0)
    assert np.median(ph.image[ring]) < 0.7 * np.median(ph.image[inside])
    assert 1.5 <= csf_mm <= 5.0


def test_sulci_are_open_csf_clefts(ph):
    lab = ph.label > 0
    # holes are filled (reference convention), so every sulcus is open to the surface
    np.testing.assert_array_equal(ndimage.binary_fill_holes(lab), lab)
    # clefts: background voxels that a 6 mm closing of the brain fills
    clefts = ndimage.binary_closing(lab, structure=np.ones((3, 3, 3)), iterations=3) & ~lab
    ml = clefts.sum() * np.prod(ph.spacing) / 1000
    assert ml > 10
    assert np.median(ph.image[clefts]) < np.median(ph.image[lab])


def test_cortex_darker_than_white_matter(ph):
    lab = ph.label > 0
    deep = ndimage.binary_erosion(lab, iterations=5)
    ribbon = lab & ~ndimage.binary_erosion(lab, iterations=1)
    assert np.median(ph.image[deep]) > 1.1 * np.median(ph.image[ribbon])
    v = ph.meta["t1_values"]
    assert v["csf"] < v["gm"] < v["wm"]


def test_posterior_fossa_holds_cerebellum():
    p = brain_mr(seed=4)
    xyz = _world(p.affine, np.argwhere(p.label > 0))
    c = xyz.mean(axis=0)
    span = xyz.max(axis=0) - xyz.min(axis=0)
    post_inf = (xyz[:, 1] < c[1] - 0.2 * span[1]) & (xyz[:, 2] < c[2] - 0.15 * span[2])
    # a cerebellum: a wide mass behind and below the centre, on both sides of the midline
    ml = post_inf.sum() * np.prod(p.spacing) / 1000
    assert ml > 20
    assert (xyz[post_inf, 0] > c[0] + 15).sum() > 100 and (xyz[post_inf, 0] < c[0] - 15).sum() > 100


@pytest.mark.parametrize("margin", [0.0, 6.0])
def test_strip_margin_zeroes_beyond_the_margin(margin):
    p = brain_mr(seed=7, orientation="LPS", strip_margin_mm=margin)
    full = brain_mr(seed=7, orientation="LPS")
    np.testing.assert_array_equal(p.label, full.label)
    lab_img = sitk.GetImageFromArray(p.label.transpose(2, 1, 0).astype(np.uint8))
    lab_img.SetSpacing(p.spacing)
    d = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        lab_img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)).transpose(2, 1, 0)
    assert np.all(p.image[d > margin + 0.01] == 0)
    kept = d <= margin - 0.01
    np.testing.assert_array_equal(p.image[kept], full.image[kept])
    assert p.meta["strip_margin_mm"] == margin
    assert (p.image == 0).mean() > 0.5  # mostly zero, like the masked MNI template


def test_strip_margin_must_be_non_negative():
    with pytest.raises(ConfigError, match="strip_margin_mm"):
        brain_mr((40, 48, 40), strip_margin_mm=-1.0)


def test_clinical_head_adds_tissue_around_the_brain_but_no_brain():
    plain = brain_mr(seed=11, orientation="LPS")
    clin = brain_mr(seed=11, orientation="LPS", clinical=True)
    assert not plain.meta["clinical"] and clin.meta["clinical"]
    np.testing.assert_array_equal(clin.label, plain.label)  # scalp, muscle, face, vessels: none is brain
    xyz = _world(clin.affine, np.argwhere(np.ones(clin.image.shape, bool))).reshape(*clin.image.shape, 3)
    lab = clin.label > 0
    brain_x, brain_z = xyz[..., 0][lab], xyz[..., 2][lab]
    # temporalis: 10-16 mm outside the brain, lateral, at temporal levels, tissue of muscle signal
    # (between 0.2 and 0.55 of white matter) where the plain phantom has bright scalp fat
    dist = ndimage.distance_transform_edt(~lab, sampling=clin.spacing)
    centre, half = (brain_x.max() + brain_x.min()) / 2, np.ptp(brain_x) / 2
    shell = ((dist > 10) & (dist < 16) & (np.abs(xyz[..., 0] - centre) > 0.8 * half)
             & (xyz[..., 2] > np.percentile(brain_z, 10)) & (xyz[..., 2] < np.percentile(brain_z, 60)))

    def muscle_share(p):
        wm, v = np.percentile(p.image[lab], 80), p.image[shell]
        return ((v > 0.2 * wm) & (v < 0.55 * wm)).mean()

    assert muscle_share(clin) > muscle_share(plain) + 0.05
    # the face holds air (nasal cavity / sinuses): dark voxels enclosed by the head, anterior and
    # inferior, none of them labelled; far more of them than in the plain head (bone, eyes)
    front_low = (xyz[..., 1] > np.mean(xyz[..., 1][lab])) & (xyz[..., 2] < np.median(brain_z))

    def dark_ml(p):
        head = ndimage.binary_fill_holes(ndimage.binary_closing(p.image > 150, iterations=2))
        air = head & front_low & (p.image < 60)
        assert not (air & lab).any()
        return air.sum() * np.prod(p.spacing) / 1000

    assert dark_ml(clin) > dark_ml(plain) + 2.0
