"""Pairing prediction and reference files into cases, and reading them as label maps."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import EvaluationError
from medseg.io.read import suffixes

#: 2D picture formats (microscopy, X-ray exports) read through :func:`medseg.io.load`.
PICTURE_SUFFIXES = (".ome.tiff", ".ome.tif", *suffixes("tiff", "png"))

#: File suffixes a case may have; the case name is the file name without it (the first suffix
#: that matches, so ``cell1.ome.tif`` is case ``cell1``).
CASE_SUFFIXES = (*suffixes("nifti", "nrrd", "mha"), ".dcm", *PICTURE_SUFFIXES)  # .dcm: a DICOM SEG


def case_name(path: str | os.PathLike[str]) -> str | None:
    """The case name of a file (its name without a known suffix), or None if not a label file."""
    name = Path(path).name
    low = name.lower()
    for suffix in CASE_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def is_picture(path: str | os.PathLike[str]) -> bool:
    """True for a 2D picture file (TIFF / PNG, see :data:`PICTURE_SUFFIXES`)."""
    return Path(path).name.lower().endswith(PICTURE_SUFFIXES)


def _index_folder(folder: Path, what: str, ignored: list[str]) -> dict[str, Path]:
    """Case name -> file. A picture next to a label volume of the same case (``case1.nii.gz``
    and its ``case1.png`` overlay) is left out and its name appended to ``ignored``; any other
    two files for one case raise EvaluationError."""
    by_case: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        name = case_name(entry)
        if name is not None:
            by_case.setdefault(name, []).append(entry)
    found: dict[str, Path] = {}
    for name, files in by_case.items():
        volumes = [f for f in files if not is_picture(f)]
        keep = volumes if volumes else files
        if len(keep) > 1:
            raise EvaluationError(
                f"{what} folder holds two files for case {name!r} ({keep[0].name}, {keep[1].name}): keep one"
            )
        found[name] = keep[0]
        ignored.extend(f"{what}/{f.name}" for f in files if f not in keep)
    return found


@dataclass
class CaseMatch:
    """Cases found in both inputs, and those found in only one (listed, never dropped silently)."""

    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    pred_only: list[str] = field(default_factory=list)
    ref_only: list[str] = field(default_factory=list)
    #: pictures left out because a label volume of the same case sits next to them
    ignored: list[str] = field(default_factory=list)


def match_cases(pred: str | os.PathLike[str], ref: str | os.PathLike[str]) -> CaseMatch:
    """Pair files of two folders by case name (file name without suffix), or two single files.

    Suffixes: :data:`CASE_SUFFIXES` (NIfTI, NRRD, MetaImage, DICOM SEG ``.dcm``, TIFF / OME-TIFF
    and PNG label pictures); names starting with ``.`` are ignored. When a case has a label
    volume and a picture (an overlay), the volume is used and the picture listed in ``ignored``. Raises EvaluationError for missing inputs or a folder
    compared with a file.
    """
    p, r = Path(pred), Path(ref)
    for path, what in ((p, "prediction"), (r, "reference")):
        if not path.exists():
            raise EvaluationError(f"{what} {path.name!r} does not exist")
    if p.is_dir() != r.is_dir():
        raise EvaluationError("give two folders or two files: prediction and reference differ in kind")
    if p.is_file():
        name = case_name(p) or p.name
        return CaseMatch(pairs=[(name, p, r)])
    ignored: list[str] = []
    pi, ri = _index_folder(p, "prediction", ignored), _index_folder(r, "reference", ignored)
    if not pi and not ri:
        raise EvaluationError(f"no label files ({', '.join(CASE_SUFFIXES)}) in {p.name!r} or {r.name!r}")
    common = sorted(set(pi) & set(ri))
    return CaseMatch(
        pairs=[(c, pi[c], ri[c]) for c in common],
        pred_only=sorted(set(pi) - set(ri)),
        ref_only=sorted(set(ri) - set(pi)),
        ignored=ignored,
    )


def _sop_class(path: Path) -> str:
    if path.suffix.lower() != ".dcm":
        return ""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return ""
    return str(ds.get("SOPClassUID", ""))


def _is_seg(path: Path) -> bool:
    from medseg.io.read import SEG_SOP_CLASS

    return _sop_class(path) == SEG_SOP_CLASS


@functools.lru_cache(maxsize=4)
def _load_reference_image(path: str) -> Any:
    from medseg.io import load

    return load(path)


def reference_image_for(ref_image: str | os.PathLike[str] | None, case: str) -> Path | None:
    """The source image of ``case`` for DICOM SEG inputs.

    ``ref_image`` is either one image / DICOM series used for every case, or a folder holding
    one entry (file or series folder) per case, named like the case.
    """
    if ref_image is None:
        return None
    base = Path(ref_image)
    if base.is_dir():
        for entry in sorted(base.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.name == case or case_name(entry) == case:
                return entry
    return base


def read_label_map(path: str | os.PathLike[str], reference_image: str | os.PathLike[str] | None = None) -> Any:
    """Read a label map as an integer ``(1, i, j, k)`` array with a RAS affine (mm).

    NIfTI / NRRD / MetaImage / TIFF / PNG through :func:`medseg.io.read_volume` (``kind="label"``,
    a numpy :class:`~medseg.io.volume.Volume`; a
    picture comes back ``(1, rows, columns)`` with its pixel spacing in mm, or 1.0 flagged as a
    default). A DICOM SEG is
    placed on the grid of ``reference_image`` (its source series) when given, else on its own
    geometry (only the frames it stores). An RT Structure Set needs ``reference_image`` (contours
    have no grid of their own): its ROIs are filled on that grid, valued by ROINumber (medseg
    writes the label value there).
    """
    p = Path(path)
    if _sop_class(p) == "1.2.840.10008.5.1.4.1.1.481.3":  # RT Structure Set Storage
        if reference_image is None:
            raise EvaluationError(f"{p.name} is an RT structure set: give the series it contours with --ref-image")
        from medseg.io.dicom_rtstruct import read_rtstruct

        return read_rtstruct(p, _load_reference_image(str(reference_image)))
    if _is_seg(p):
        from medseg.io.dicom_seg import read_dicom_seg

        reference = _load_reference_image(str(reference_image)) if reference_image is not None else None
        return read_dicom_seg(p, reference)
    from medseg.io.read import read_volume  # numpy: scoring files needs neither torch nor MONAI

    return read_volume(p, kind="label")


def parse_labels(labels: Mapping[int, str] | Sequence[int | str] | None) -> dict[int, str] | None:
    """Labels to score: ``{1: "liver"}``, ``[1, 2]``, or tokens ``"1"``, ``"2=spleen"``, ``"1,2"``."""
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        items = [(k, str(v)) for k, v in labels.items()]
    else:
        items = []
        for token in labels:
            for part in str(token).split(","):
                part = part.strip()
                if not part:
                    continue
                key, _, name = part.partition("=")
                items.append((key.strip(), name.strip()))
    out: dict[int, str] = {}
    for key, name in items:
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise EvaluationError(f"label {key!r} is not an integer: write labels as 1 or 1=liver") from None
        if value <= 0:
            raise EvaluationError(f"label {value} is invalid: labels are positive integers (0 is background)")
        out[value] = name or str(value)
    if not out:
        raise EvaluationError("no labels given: write labels as 1 2 3 or 1=liver 2=spleen")
    return out
