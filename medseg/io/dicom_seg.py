"""DICOM Segmentation (SEG) objects: write a label map as a SEG (highdicom), read a SEG back.

Geometry follows the in-memory contract of :mod:`medseg.io`: label maps are integer
``MetaTensor`` s of shape ``(1, i, j, k)`` whose affine maps voxel indices to RAS+ millimetres;
``i`` runs along the DICOM row direction (pixel column index), ``j`` along the column direction
(pixel row index), ``k`` along the slice normal. DICOM positions are LPS; the conversion negates x
and y. Frames are matched to source instances **by position in space**, never by their order.

Public API::

    write_dicom_seg(labels, source, out_path, *, label_names, ...) -> Path
    seg_source_problem(source) -> str   # why no valid SEG can reference this source ("" if one can)
    read_dicom_seg(path, reference=None, *, label_names=None) -> MetaTensor
    read_seg_volume(path, reference=None, *, label_names=None) -> Volume   # the same, numpy only

A SEG is never written invalid: the source must carry every identifier a SEG references
(StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID, SOPClassUID and SOPInstanceUID of each
image; anonymisers often leave them empty), else :class:`SegNotWritable` is raised before
anything is built; the SEG built is checked (required attributes and UIDs, strict VR rules) and
read back with highdicom before it is renamed into place.

The source is the :class:`~medseg.io.dicom.source.DicomSource` an image read from DICOM carries
(``meta["dicom_source"]``): the writer references the headers scanned when the series was read
and never reopens the source files, which may be gone by then.

Where the code lives (this module is the public face):
:mod:`medseg.io.seg.write` (the writer), :mod:`medseg.io.seg.read` (the reader),
:mod:`medseg.io.seg.checks` (validation before the rename), :mod:`medseg.io.dicom.planes`
(planes matched by position, shared with the RT Structure Set writer) and
:mod:`medseg.io.dicom.source` (the source instances).
"""

from __future__ import annotations

from typing import Any

from medseg.io.dicom.source import source_of
from medseg.io.seg.checks import SegNotWritable, seg_problems
from medseg.io.seg.read import read_dicom_seg, read_seg_volume
from medseg.io.seg.write import write_dicom_seg

_seg_problems = seg_problems  # the name the validation tests use

__all__ = ["SegNotWritable", "read_dicom_seg", "read_seg_volume", "seg_source_problem", "write_dicom_seg"]


def seg_source_problem(source: Any) -> str:
    """Why no valid DICOM SEG can reference ``source`` (the image medseg read from a DICOM
    series), "" when one can. Uses the headers it carries (reads ``meta['dicom_files']`` only for
    a MetaTensor built without them; InputError when those are gone)."""
    return source_of(source).problem()
