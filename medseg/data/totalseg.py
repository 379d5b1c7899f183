"""TotalSegmentator's class maps and tissue maps built from its real test segmentations.

The real CT / MR samples of :mod:`medseg.data` (``ts_ct_sm`` with ``ts_ct_sm_seg``, ``ts_mr_sm``
with ``ts_mr_sm_seg``) carry TotalSegmentator's own label maps in its v2 class maps ("total" for
CT, 117 classes; "total_mr" for MR, 50 classes). This module names those values and turns the
label maps into *tissue maps* for :func:`medseg.data.synth.synthesize`: every voxel gets a
structure, including the air outside the body and the unlabelled soft tissue inside it.

Only label maps are read for the CT tissue map (never the CT image), so a model trained on
images synthesised from it has not seen that CT. The MR tissue map uses the MR image for the body
outline and to split the unlabelled tissue in two (bright / dark): use it for CT models, not to
then report on that MR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["TOTAL_V2", "TOTAL_MR_V2", "ct_sm_tissue", "mr_sm_tissue", "remap"]

_VERTEBRAE = ["S1", "L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)] + \
    [f"C{i}" for i in range(7, 0, -1)]
_RIBS = [f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13)]

#: TotalSegmentator v2 "total" (CT) class map: value -> name.
TOTAL_V2: dict[int, str] = dict(enumerate(
    ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
     "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
     "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus",
     "trachea", "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate",
     "kidney_cyst_left", "kidney_cyst_right", "sacrum"]
    + [f"vertebrae_{v}" for v in _VERTEBRAE]
    + ["heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right",
       "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
       "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left",
       "superior_vena_cava", "inferior_vena_cava", "portal_vein_and_splenic_vein",
       "iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right",
       "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left",
       "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord",
       "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left",
       "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left",
       "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull"]
    + _RIBS + ["sternum", "costal_cartilages"], start=1))

#: TotalSegmentator v2 "total_mr" class map: value -> name.
TOTAL_MR_V2: dict[int, str] = dict(enumerate(
    ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
     "adrenal_gland_right", "adrenal_gland_left", "lung_left", "lung_right", "esophagus",
     "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "sacrum", "vertebrae",
     "intervertebral_discs", "spinal_cord", "heart", "aorta", "inferior_vena_cava",
     "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right", "iliac_vena_left",
     "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right",
     "clavicula_left", "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right",
     "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right",
     "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left", "autochthon_right",
     "iliopsoas_left", "iliopsoas_right", "brain"], start=1))

OUTSIDE, SOFT_TISSUE, TISSUE_A, TISSUE_B = 0, 1000, 1001, 1002
_EXTRA_CT = {"subcutaneous_fat": 1003, "torso_fat": 1004, "skeletal_muscle": 1005}


def remap(labels: np.ndarray, names: dict[int, str], wanted: dict[str, int]) -> np.ndarray:
    """``labels`` (values named by ``names``) as the label values of ``wanted`` {name: value};
    every other value becomes 0."""
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.uint8)
    for v, n in names.items():
        if n in wanted and v < lut.size:
            lut[v] = wanted[n]
    return lut[labels]


def _body_from(mask: np.ndarray) -> np.ndarray:
    """Fill the outline of ``mask`` slice by slice (axial = last axis) and close small gaps."""
    body = ndimage.binary_closing(mask, np.ones((5, 5, 1), bool), iterations=2)
    return np.stack([ndimage.binary_fill_holes(body[..., k]) for k in range(body.shape[-1])], -1)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def ct_sm_tissue() -> tuple[np.ndarray, dict[int, str], np.ndarray]:
    """Tissue map of the real CT ``ts_ct_sm`` from label maps only (``ts_ct_sm_seg`` and the tissue
    types in ``ts_ct_sm_tissue``): ``(tissue int32, {value: name}, affine RAS mm)``. Body outline
    = filled union of every label; unlabelled voxels inside it are ``soft_tissue``."""
    from medseg.data import sample

    seg, affine = _load(sample("ts_ct_sm_seg"))
    tissue = seg.astype(np.int32)
    names = {v: TOTAL_V2[v] for v in np.unique(seg).tolist() if v}
    folder = sample("ts_ct_sm_tissue")
    for name, value in _EXTRA_CT.items():
        m, _ = _load(folder / f"{name}.nii.gz")
        tissue[(m > 0) & (tissue == 0)] = value
        names[value] = name
    body = _body_from(tissue > 0)
    tissue[body & (tissue == 0)] = SOFT_TISSUE
    names[SOFT_TISSUE] = "soft_tissue"
    names[OUTSIDE] = "outside"
    return tissue, names, affine


def mr_sm_tissue() -> tuple[np.ndarray, dict[int, str], np.ndarray]:
    """Tissue map of the real MR ``ts_mr_sm``: its label map (``ts_mr_sm_seg``), the body outline
    from the MR image (above a quarter of its 99th percentile, filled) and the unlabelled tissue
    inside split at its median intensity into two classes (bright: drawn from the CT fat range,
    dark: from the muscle range)."""
    from medseg.data import sample

    seg, affine = _load(sample("ts_mr_sm_seg"))
    img, _ = _load(sample("ts_mr_sm"))
    img = img.astype(np.float32)
    tissue = seg.astype(np.int32)
    names = {v: TOTAL_MR_V2[v] for v in np.unique(seg).tolist() if v}
    body = _body_from((img > 0.25 * np.percentile(img, 99)) | (seg > 0))
    free = body & (tissue == 0)
    med = float(np.median(img[free])) if free.any() else 0.0
    tissue[free & (img >= med)] = TISSUE_A
    tissue[free & (img < med)] = TISSUE_B
    names.update({OUTSIDE: "outside", TISSUE_A: "fat_like_bright", TISSUE_B: "muscle_like_dark"})
    return tissue, names, affine
