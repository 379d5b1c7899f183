"""Reading and writing medical images with exact geometry.

The one in-memory form
======================
Every reader returns a :class:`monai.data.MetaTensor`:

* shape ``(C, *spatial)``, channel first; spatial is 3D ``(i, j, k)`` or 2D ``(i, j)``.
* ``.affine``: 4x4 float64, maps a voxel index ``(i, j, k, 1)`` to **RAS+ world millimetres**
  (the NIfTI / nibabel / MONAI-reader convention). DICOM's LPS is converted by negating x and y.
  2D images carry a 4x4 affine too (the k column is the unit normal).
* For a DICOM series: ``i`` runs along the row direction (ImageOrientationPatient[0:3], i.e. the
  column index of the pixel array), ``j`` along the column direction (IOP[3:6], the row index of
  the pixel array), ``k`` along the slice normal ``row x col`` in increasing position.
  So ``MetaTensor[0, i, j, k] == dataset_k.pixel_array[j, i] * slope + intercept``.
* Images are float32 (CT in HU after RescaleSlope/Intercept). Label maps are an integer dtype.
* ``.meta`` (never a patient name, ID or birth date)::

    "space": "RAS"
    "kind": "image" | "label"
    "format": "dicom" | "dicom-seg" | "nifti" | "nrrd" | "mha" | "tiff" | "png"
    "modality": "CT" | "MR" | "CR" | "DX" | "MG" | "SEG" | "microscopy" | "unknown"
    "spacing": tuple[float, ...]          # mm per spatial axis, same order as spatial dims
    "filename_or_obj": str                # source path (what MONAI's writers expect)
    # DICOM only:
    "series_instance_uid", "study_instance_uid", "frame_of_reference_uid", "series_description",
    "series_number": int | None
    "sop_instance_uids": list[str]        # one per k (per frame for enhanced multi-frame)
    "dicom_files": list[str]              # source file per k (repeated for multi-frame)
    "dicom_source": DicomSource           # the scanned headers a SEG/RTSTRUCT references (no reopening)

The typed view
==============
``to_image(x)`` wraps any of these as an :class:`~medseg.io.image.Image` or, when ``meta["kind"]``
is ``"label"``, a :class:`~medseg.io.image.LabelMap` (resampled with nearest neighbour only):
``.tensor`` (the MetaTensor), ``.geometry`` (:class:`medseg.geometry.Geometry`), ``.meta`` and
``.dicom`` (the :class:`~medseg.io.dicom.source.DicomSource`, for an image read from DICOM).

Readers
=======
One registry (:mod:`medseg.io.readers`): the path's format comes from the one suffix table
(:mod:`medseg.io.formats`), the first registered reader that accepts it reads it, and every
reader takes the same options (``kind``, ``allow_nonfinite``, ``series``,
``allow_missing_slices``), honouring each or refusing it with
:class:`~medseg.errors.UnsupportedOptionError`. Every output becomes a MetaTensor in one place
(:func:`medseg.io.image.to_metatensor`).

Public API (lazy: importing :mod:`medseg.io` loads nothing heavy)::

    load(path, *, series=None, allow_missing_slices=False, kind=None) -> MetaTensor   # any input
    to_image(x) -> Image | LabelMap  # typed view of a MetaTensor / Volume
    read_grid(path) -> Geometry      # header only where the format allows
    reader_for(path) -> Reader       # the registered reader of a path
    read_volume(path, ...) -> Volume # the same without torch/MONAI: numpy voxels, affine, meta
    save(tensor, path)               # NIfTI/NRRD/MHA by suffix, atomic
    save_labels(labels, reference, path)   # label map on exactly the reference grid
    convert(source, output, *, series=None) # any input -> NIfTI/NRRD/MHA, geometry preserved
    detect_format(path) -> str
    describe(path, *, series=None) -> dict                                 # for `medseg info`
    atomic_path(final)               # context manager for atomic writes
"""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "load": "medseg.io.read",
    "read_volume": "medseg.io.read",
    "Volume": "medseg.io.volume",
    "Image": "medseg.io.image",
    "LabelMap": "medseg.io.image",
    "to_image": "medseg.io.image",
    "read_grid": "medseg.io.readers",
    "reader_for": "medseg.io.readers",
    "DicomSource": "medseg.io.dicom.source",
    "describe": "medseg.io.read",
    "save": "medseg.io.write",
    "save_labels": "medseg.io.write",
    "convert": "medseg.io.write",
    "detect_format": "medseg.io.read",
    "atomic_path": "medseg.io.atomic",
    "atomic_write_bytes": "medseg.io.atomic",
    "atomic_write_text": "medseg.io.atomic",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
