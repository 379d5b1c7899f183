"""Anatomy phantoms with exact labels: CT abdomen / lung / spine, brain MR, chest X-ray, nuclei.

Coordinate convention (the one bug that must never happen is a swapped left/right)
-------------------------------------------------------------------------------
DICOM's patient system LPS has +x towards the patient's **Left**, +y **Posterior**, +z
**Superior** (PS3.3 C.7.6.2.1.1). medseg works in **RAS+**: LPS with x and y negated, so +x
points towards the patient's **Right**, +y **Anterior**, +z **Superior**. Hence the liver (the
patient's right) has a LARGER RAS x than the spleen (the patient's left).

Every 3D phantom is built as shapes in these world coordinates (mm) and then sampled at the
voxel centres given by the affine, so any grid orientation (axis codes such as ``"LPS"``,
``"RAS"``, ``"PIR"``, or a 3x3 direction matrix for an oblique grid) shows the same anatomy in
the world. Axis codes name where each voxel axis points: ``"LPS"`` means i increases towards
the patient's Left, j towards Posterior, k towards Superior (the usual axial DICOM stack). A
3x3 ``orientation`` matrix holds the unit direction of the i, j, k axes as its COLUMNS, in RAS.
The grid is centred on the world origin. Anatomy is scaled to the field of view: along each
patient axis (R-L, A-P, S-I) the size is that of the voxel axis most aligned with it, so two
grids covering the same field of view hold the same anatomy, whatever their orientation.

Arrays follow the medseg axis convention (see :mod:`medseg.io`): ``image[i, j, k]``, with the
4x4 affine mapping ``(i, j, k, 1)`` to RAS millimetres. Everything is numpy (+ scipy.ndimage)
and deterministic for a given seed.
"""

from medseg.data.phantoms._core import (
    HU,
    SPINE_LEVELS,
    Orientation,
    Phantom,
    direction_matrix,
    grid_affine,
    thick_slices,
)
from medseg.data.phantoms.abdomen import abdomen_ct
from medseg.data.phantoms.brain import brain_mr
from medseg.data.phantoms.chest_ct import lung_ct
from medseg.data.phantoms.nuclei import nuclei_2d
from medseg.data.phantoms.spine import spine_ct
from medseg.data.phantoms.writers import as_metatensors, save_phantom, write_decathlon_dataset
from medseg.data.phantoms.xray import chest_xray, xray_affine

__all__ = [
    "HU", "SPINE_LEVELS", "Orientation", "Phantom", "abdomen_ct", "as_metatensors", "brain_mr", "chest_xray",
    "direction_matrix", "grid_affine", "lung_ct", "nuclei_2d", "save_phantom", "spine_ct", "thick_slices",
    "write_decathlon_dataset", "xray_affine",
]
