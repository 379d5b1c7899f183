"""Plausible organ volumes (mL) for ADULT patients, used to flag implausible segmentations.

Only labels named here are checked (by their registry name, see :mod:`medseg.labels`); anything
else is never flagged. The ranges are deliberately wide (they catch gross failures, not disease):
they bracket the adult volumes reported in CT/MR volumetry studies, with room for enlargement.
Phantoms and children are smaller: a phantom case flagged here is expected, not a bug.
"""

from __future__ import annotations

#: label name -> (low, high) in mL, adults, whole organ (3D images only).
PLAUSIBLE_ML: dict[str, tuple[float, float]] = {
    "liver": (600.0, 3500.0),
    "spleen": (40.0, 1500.0),
    "kidney_left": (60.0, 400.0),
    "kidney_right": (60.0, 400.0),
    "lung_left": (500.0, 5000.0),
    "lung_right": (500.0, 5500.0),
    "brain": (800.0, 2000.0),
}

NOTE = ("Plausible volumes are ADULT ranges (whole organ, 3D images only); phantoms and children "
        "are smaller, so a flag on them is expected.")


def plausible_range(label_name: str) -> tuple[float, float] | None:
    """The adult (low, high) volume range in mL for ``label_name``, or None when it is not known."""
    return PLAUSIBLE_ML.get(label_name.strip().lower())
