"""medseg.prompt: prompts in world millimetres land on the right object, on flipped/permuted grids.

The reference for where a world point lies is independent of medseg's own conversion: nibabel's
``apply_affine`` (RAS) and SimpleITK's ``TransformPhysicalPointToIndex`` on the NIfTI file (LPS).
The two objects are mirror images across the patient's midline (x = 0), so a left/right error sends
a click to the other object.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from medseg import cli
from medseg.errors import PromptError
from medseg.prompt import segment
from medseg.prompt import simulate as S

# voxel (i, j, k) -> RAS mm: i runs to the patient's LEFT (-x), j runs inferior (-z), k anterior (+y)
AFFINE = np.array([[-0.8, 0.0, 0.0, 40.0],
                   [0.0, 0.0, 1.5, -30.0],
                   [0.0, -2.0, 0.0, 60.0],
                   [0.0, 0.0, 0.0, 1.0]])
SHAPE = (100, 40, 40)


def _sphere_at_world(centre_mm, radius_mm) -> np.ndarray:
    idx = np.indices(SHAPE).reshape(3, -1).T.astype(np.float64)
    world = nib.affines.apply_affine(AFFINE, idx)
    return (np.linalg.norm(world - np.asarray(centre_mm), axis=1) <= radius_mm).reshape(SHAPE)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    right = _sphere_at_world((20.0, 0.0, 20.0), 9.0)    # patient's right (+x)
    left = _sphere_at_world((-20.0, 0.0, 20.0), 9.0)    # its mirror image, patient's left
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 8, SHAPE).astype(np.float32)
    arr[right] += 200
    arr[left] += 120
    path = tmp_path_factory.mktemp("prompt") / "phantom.nii.gz"
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))
    img = MetaTensor(torch.from_numpy(arr)[None], affine=torch.from_numpy(AFFINE))
    return {"img": img, "right": right, "left": left, "path": path}


def _sitk_lps_of(path, centre_ras):
    """The LPS mm SimpleITK assigns to the voxel nibabel puts at ``centre_ras``."""
    im = sitk.ReadImage(str(path))
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(AFFINE), centre_ras)).astype(int)
    return im.TransformIndexToPhysicalPoint([int(v) for v in ijk])


@pytest.mark.parametrize("method", ["region-growing", "random-walker", "auto"])
def test_click_in_ras_mm_lands_on_the_patients_right(phantom, method):
    m = segment(phantom["img"], points=[(20.0, 0.0, 20.0)], method=method).numpy()[0] > 0
    assert S.dice(m, phantom["right"]) > 0.8
    assert not (m & phantom["left"]).any()


def test_click_in_lps_mm_from_simpleitk(phantom):
    lps = _sitk_lps_of(phantom["path"], (-20.0, 0.0, 20.0))  # the patient's left object
    assert lps[0] > 0  # LPS: +x is the patient's left
    m = segment(phantom["img"], points=[lps], space="LPS", method="region-growing").numpy()[0] > 0
    assert S.dice(m, phantom["left"]) > 0.8
    assert not (m & phantom["right"]).any()


def test_box_in_mm_corners_in_any_order(phantom):
    box = (-29.0, 9.0, 29.0, -11.0, -9.0, 11.0)  # around the left object, corners not sorted
    m = segment(phantom["img"], box=box, method="grabcut").numpy()[0] > 0
    assert S.dice(m, phantom["left"]) > 0.8
    vox = segment(phantom["img"], box=S.box_of(phantom["left"]), voxel=True, method="grabcut").numpy()[0] > 0
    assert S.dice(vox, m) > 0.95


def test_extreme_points_in_mm(phantom):
    ext = [nib.affines.apply_affine(AFFINE, p) for p in S.extreme_points(phantom["right"])]
    m = segment(phantom["img"], extreme_points=ext, method="auto").numpy()[0] > 0
    assert S.dice(m, phantom["right"]) > 0.8


def test_previous_mask_refined_by_a_negative_click(phantom):
    both = phantom["left"] | phantom["right"]
    m = segment(phantom["img"], points=[(20.0, 0.0, 20.0), (-20.0, 0.0, 20.0)], labels=[1, 0], method="auto",
                previous=both.astype(np.uint8)).numpy()[0] > 0
    assert S.dice(m, phantom["right"]) > 0.8
    assert (m & phantom["left"]).sum() < 0.05 * phantom["left"].sum()


def test_2d_click_on_flipped_grid():
    aff = np.array([[-0.5, 0, 0, 10.0], [0, -0.5, 0, 20.0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    arr = np.zeros((80, 60), np.float32)
    arr[10:25, 10:25] = 100  # voxel centre (17, 17) -> RAS (1.5, 11.5)
    arr[50:70, 30:50] = 100
    img = MetaTensor(torch.from_numpy(arr)[None], affine=torch.from_numpy(aff))
    x, y = aff[:2, :2] @ np.array([17.0, 17.0]) + aff[:2, 3]
    m = segment(img, points=[(x, y)]).numpy()[0] > 0
    assert m[17, 17] and m.sum() == 225 and not m[60, 40]


def test_prompt_errors(phantom):
    with pytest.raises(PromptError, match="outside"):
        segment(phantom["img"], points=[(500.0, 0.0, 0.0)])
    with pytest.raises(PromptError, match="3 coordinates"):
        segment(phantom["img"], points=[(1.0, 2.0)])
    with pytest.raises(PromptError, match="no prompt"):
        segment(phantom["img"])
    with pytest.raises(PromptError, match="unknown prompt method"):
        segment(phantom["img"], points=[(20.0, 0.0, 20.0)], method="sam")


def test_cli_prompt_writes_the_segment_outputs(phantom, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["prompt", str(phantom["path"]), "--point", "20", "0", "20", "--output", str(out),
                   "--format", "nifti", "--method", "auto"])
    assert rc == 0
    seg = nib.load(str(out / "phantom" / "seg.nii.gz"))
    assert np.allclose(seg.affine, AFFINE)
    assert S.dice(np.asarray(seg.dataobj) > 0, phantom["right"]) > 0.8
    rc = cli.main(["prompt", str(phantom["path"]), "--point", "900", "0", "0", "--output", str(tmp_path / "o2")])
    assert rc == 2
    assert "outside the image" in capsys.readouterr().err


def test_real_lesion_box_lung1():
    """Measured 0.874 (grabcut, exact box) on the real pyradiomics lung1 nodule."""
    import medseg.io
    from medseg.data import sample

    im = medseg.io.load(sample("lung1_image"))
    ref = medseg.io.load(sample("lung1_label"), kind="label").numpy()[0] > 0
    m = segment(im, box=S.box_of(ref), voxel=True, method="grabcut").numpy()[0] > 0
    assert S.dice(m, ref) > 0.8


def test_click_simulator_on_known_masks():
    ref = np.zeros((30, 30), bool)
    ref[5:20, 5:20] = True
    assert S.first_click(ref, (1.0, 1.0)) in {(12, 12)}
    pred = ref.copy()
    pred[5:20, 5:10] = False  # a 15x5 miss: a positive click inside it
    v, lab = S.corrective_click(pred, ref, (1.0, 1.0))
    assert lab == 1 and 5 <= v[1] < 10
    assert S.box_of(ref) == [5, 5, 19, 19]
    assert S.noc([0.5, 0.86, 0.91], 0.85) == 2 and S.noc([0.5], 0.9, cap=20) == 20
