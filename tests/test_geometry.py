"""medseg.geometry: one Geometry value (spacing, orientation, shape as properties) and the array
helpers every package shares, checked against nibabel's own affine helpers and SimpleITK."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry, affine_of, as_numpy, spatial


def _random_affine(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    aff = np.eye(4)
    aff[:3, :3] = q @ np.diag(rng.uniform(0.3, 5.0, 3)) * rng.choice([-1, 1], 3)
    aff[:3, 3] = rng.uniform(-200, 200, 3)
    return aff


def test_spacing_and_orientation_agree_with_nibabel():
    rng = np.random.default_rng(0)
    for _ in range(50):
        aff = _random_affine(rng)
        g = Geometry(aff, (4, 5, 6))
        np.testing.assert_allclose(g.spacing, nib.affines.voxel_sizes(aff), rtol=1e-12)
        assert g.orientation == "".join(nib.orientations.aff2axcodes(aff))
    lps = Geometry(np.diag([-0.7, -0.7, 2.5, 1.0]), (3, 3, 3))
    assert lps.orientation == "LPS" and lps.spacing == (0.7, 0.7, 2.5) and lps.ndim == 3


def test_geometry_of_a_metatensor_matches_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from medseg.io import load

    img = sitk.Image(7, 6, 5, sitk.sitkFloat32)
    img.SetSpacing((0.8, 1.1, 3.0))
    img.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    sitk.WriteImage(img, str(tmp_path / "x.nii.gz"))
    g = Geometry.of(load(tmp_path / "x.nii.gz"))
    assert g.shape == (7, 6, 5)
    np.testing.assert_allclose(g.spacing, img.GetSpacing(), rtol=1e-6)
    # SimpleITK's direction is LPS; the first voxel axis points to -y in LPS = +y (A) in RAS
    assert g.orientation[0] == "A" and g.to_json()["orientation"] == g.orientation


def test_helpers_refuse_clearly():
    t = torch.zeros(1, 3, 3, 3)
    assert as_numpy(t).shape == (1, 3, 3, 3)
    with pytest.raises(GeometryError, match="the labels has no affine"):
        affine_of(t, "the labels")
    with pytest.raises(GeometryError, match="invertible"):
        affine_of(None, "x", affine=np.zeros((4, 4)), invertible=True)
    assert spatial(np.zeros((1, 4, 5, 6)), "labels").shape == (4, 5, 6)
    assert spatial(np.zeros((1, 4, 5)), "image").shape == (4, 5)
    assert spatial(np.zeros((2, 4, 5, 6)), "image", multi_channel=True).shape == (4, 5, 6)
    with pytest.raises(InputError, match="2 channels"):
        spatial(np.zeros((2, 4, 5, 6)), "labels")
    with pytest.raises(InputError, match=r"must have shape \(1, i, j, k\) or \(i, j, k\)"):
        spatial(np.zeros((4, 5)), "labels", ndims=(3,))
    with pytest.raises(GeometryError, match="2 or 3 spatial axes"):
        Geometry(np.eye(4), (3,))
