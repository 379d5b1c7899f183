"""Domain-randomised head MR images (any contrast) from the anatomy of medseg's head phantoms.

SynthSeg's idea applied to brain extraction: the network should find the brain by its shape and
its place in the head, not by T1 contrast. :func:`tissue_map` turns a phantom's clean tissue
signals (:func:`medseg.data.phantoms.brain_mr` with ``clean=True``) into an integer tissue map (one
value per tissue: CSF, grey and white matter, deep grey, fat, muscle, skull tables and diploe,
eyes, and in clinical heads skin, galea, temporalis, face, enhancing dura and vessels; air is
``outside``). :func:`brain_case` draws an image from that map with
:func:`medseg.data.synth.synthesize`: every tissue gets a random mean in ``MR_RANGE`` (so CSF may
be darker or brighter than white matter, fat may be dark: T1, T2, PD and FLAIR-like contrasts
and contrasts no scanner makes), its own texture, blur, thicker slices along the last axis and
noise; air stays dark, as it is in every MR image. The brain label is the phantom's, exactly
(nothing moves the anatomy here: the training augmentation deforms image and label together).

Seeded: the same ``seed`` and options give the same image, bit for bit.
"""

from __future__ import annotations

import numpy as np

from medseg.data.phantoms._core import Orientation
from medseg.data.synth import SynthConfig, synthesize

__all__ = ["MR_RANGE", "brain_case", "mr_config", "tissue_map"]

#: range of a tissue's mean signal (arbitrary MR units) in a randomised image; air: 0-10
MR_RANGE = (0.0, 1000.0)


def tissue_map(clean: np.ndarray, *, min_fraction: float = 0.0005) -> tuple[np.ndarray, dict[int, str]]:
    """An integer tissue map from a phantom's clean signals: every signal value held by at least
    ``min_fraction`` of the voxels is a tissue; the other voxels (the cerebellar folia and brainstem
    mixtures, partial tissues) join the tissue of the nearest signal. Signal 0 is ``"outside"``
    (air around the head and in the sinuses), the others ``"tissue_<signal>"``."""
    v = np.rint(np.asarray(clean, dtype=np.float64)).astype(np.int64)
    values, counts = np.unique(v, return_counts=True)
    major = values[counts >= min_fraction * v.size]
    if 0 not in major:
        major = np.sort(np.append(major, 0))
    # nearest major value per voxel, by binary search between sorted neighbours
    pos = np.clip(np.searchsorted(major, v), 1, major.size - 1)
    lower, upper = major[pos - 1], major[pos]
    idx = np.where(np.abs(v - lower) <= np.abs(upper - v), pos - 1, pos).astype(np.int32)
    names = {int(i): ("outside" if major[i] == 0 else f"tissue_{int(major[i])}") for i in range(major.size)}
    return idx, names


def mr_config() -> SynthConfig:
    """What :func:`brain_case` varies: any mean in :data:`MR_RANGE` per tissue (air 0-10), texture,
    blur, thick slices, noise; no bias field (the training chain adds an MR one) and no
    deformation (the label is the phantom's)."""
    return SynthConfig(ct_probability=1.0, ct_ranges=(("^outside$", (0.0, 10.0)), (".", MR_RANGE)),
                       texture_std=(2.0, 30.0), bias_std=0.0, blur_sigma=(0.0, 1.0),
                       thick_slice_probability=0.3, noise_std=(2.0, 25.0), gas_probability=0.0,
                       deform_probability=0.0, clip=(0.0, 4095.0))


def brain_case(seed: int, *, orientation: Orientation = "RAS", clinical: bool = False,
               strip_margin_mm: float | None = None, shape: tuple[int, int, int] = (80, 96, 80),
               spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)):
    """One randomised-contrast head: ``(image float32, label uint8 {1: brain}, affine)``. The
    anatomy is ``brain_mr(seed, ...)``'s (so seeds shared with plain phantoms share the head); the
    contrast is drawn from ``seed + 50_000``."""
    from medseg.data.phantoms import brain_mr

    ph = brain_mr(shape=shape, spacing=spacing, orientation=orientation, seed=seed, clinical=clinical,
                  strip_margin_mm=strip_margin_mm, clean=True)
    tissue, names = tissue_map(ph.image)
    image, _ = synthesize(tissue, names, seed=seed + 50_000, config=mr_config())
    return image, ph.label.copy(), ph.affine
