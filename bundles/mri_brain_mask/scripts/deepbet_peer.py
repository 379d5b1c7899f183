"""deepbet (the published T1 brain-extraction model of the deepbet 1.0.2 wheel, MIT) as a PEER to
compare ``mri_brain_mask`` with: its TorchScript weights (``medseg.data.sample("deepbet_model")``,
``"deepbet_bbox_model"``) run with deepbet's two-stage inference re-implemented here; deepbet
itself is not installed and its weights are not redistributed."""

from __future__ import annotations

import numpy as np


def _largest(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    comp, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return comp == (np.argmax(np.bincount(comp.ravel())[1:]) + 1)


def deepbet_mask(t1) -> np.ndarray:
    """deepbet's published two-stage inference, re-implemented from its description: the volume
    (RAS voxel order, as nibabel's as_closest_canonical gives) is resized (nearest) to 128^3 for
    the bounding-box model, 0.5-99.5 percentile scaling and z-scoring to mean 0.449 / std 0.226;
    the box (10 % margin) is resized to 256^3 for the main model; threshold 0.5, largest
    component, holes filled. Returns a bool mask on the input grid."""
    import torch
    import torch.nn.functional as F
    from monai.transforms import Orientation
    from scipy import ndimage

    from medseg.data import sample

    model = torch.jit.load(str(sample("deepbet_model")), map_location="cpu").eval()
    bbox_model = torch.jit.load(str(sample("deepbet_bbox_model")), map_location="cpu").eval()
    ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    t1r = ras(t1)
    x = torch.nan_to_num(t1r[0].as_tensor().float())

    def norm(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        v = ((v - lo) / (hi - lo)).clamp(0, 1)
        return 0.226 * (v - v.mean()) / v.std() + 0.449

    small = F.interpolate(x[None, None], (128, 128, 128), mode="nearest-exact")[0, 0]
    lo, hi = torch.quantile(small, 0.005), torch.quantile(small, 0.995)
    with torch.no_grad():
        p_small = bbox_model(norm(small, lo, hi)[None, None])[0, 1].numpy()
    m_small = _largest(p_small > 0.5)
    idx = [np.flatnonzero(m_small.mean(axis=tuple(a for a in range(3) if a != d)) > 0.02) for d in range(3)]
    scale = np.array(x.shape) / 128.0
    box = []
    for d in range(3):
        c = (idx[d].max() + 1 + idx[d].min()) / 2 * scale[d]
        s = (idx[d].max() + 1 - idx[d].min()) * scale[d] * 1.2
        box.append(slice(max(0, int(round(c) - round(s) / 2)), min(x.shape[d], int(round(c) + round(s) / 2))))
    box = tuple(box)
    crop = F.interpolate(x[box][None, None], (256, 256, 256), mode="nearest-exact")[0, 0]
    with torch.no_grad():
        p = model(norm(crop, lo, hi)[None, None])[0, 1]
    full = torch.zeros_like(x)
    full[box] = F.interpolate(p[None, None], tuple(x[box].shape), mode="nearest-exact")[0, 0]
    mask = _largest(full.numpy() > 0.5)
    mask = ndimage.binary_fill_holes(mask)
    # back to the input voxel order
    from monai.data import MetaTensor

    back = Orientation(axcodes="".join(_axcodes(np.asarray(t1.affine))),
                       labels=(("L", "R"), ("P", "A"), ("I", "S")))
    m = back(MetaTensor(torch.from_numpy(mask.astype(np.float32))[None], affine=t1r.affine))
    return m[0].numpy() > 0.5


def _axcodes(affine: np.ndarray) -> tuple[str, ...]:
    import nibabel as nib

    return nib.aff2axcodes(affine)
