"""What one segmentation produced: ``Provenance`` (the schema of ``provenance.json``, its one
reader and writer) and ``SegmentationResult`` (what :func:`medseg.inference.segment_file`
returns: the case folder, the label map's grid, timings, domain flags, the files written and the
UIDs of the DICOM objects), so batch jobs, the CLI and reports use the result instead of reading
back what was just written.

One step down, a model gives a :class:`Prediction`: the label map, whose ``meta`` holds its
grid and what its values mean (:func:`label_meta`), and an :class:`InferenceRecord` of how it
was computed (device, TTA, stitching, timings), which provenance records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.schema import check_version

# source meta copied onto a label map (what names the source; never patient identifiers)
KEEP_META = ("space", "format", "filename_or_obj", "series_instance_uid", "study_instance_uid",
             "frame_of_reference_uid", "series_description", "sop_instance_uids", "dicom_files")


def label_meta(image: Any, *, labels: Mapping[int, str], task: str, spacing: Any) -> dict[str, Any]:
    """The ``meta`` of a label map on ``image``'s grid (the affine travels on the tensor): the
    source's identifying keys (:data:`KEEP_META`), ``space`` RAS, ``kind`` label, ``modality``
    SEG, ``source_modality``, ``spacing`` (mm per voxel axis), ``labels`` (index -> name), ``task``."""
    import copy

    meta: dict[str, Any] = {k: copy.deepcopy(image.meta[k]) for k in KEEP_META if k in image.meta}
    meta.update({"space": "RAS", "kind": "label", "modality": "SEG",
                 "source_modality": image.meta.get("modality", "unknown"),
                 "spacing": tuple(float(s) for s in spacing), "labels": dict(labels), "task": task})
    return meta


@dataclass
class InferenceRecord:
    """How one label map was computed (the ``device``/``tta``/``stitching``/``timings_s`` of
    ``provenance.json``). ``tta_disagreement``: fraction of voxels whose label the flips changed
    (medseg's stitcher with TTA), else None. ``stitching``: :class:`StitchStats` as a dict for
    medseg's stitcher, None for a model source with its own. ``details``: source-specific
    settings kept in memory (e.g. a classical method's parameters); not written."""

    device: str
    tta: bool = False
    tta_disagreement: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    stitching: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    """A label map (``MetaTensor (1, *spatial)`` on the source grid, meta as :func:`label_meta`)
    and its :class:`InferenceRecord`."""

    labels: Any
    record: InferenceRecord


#: ``provenance.json`` carries no version key yet: a file without ``schema_version`` is version 1;
#: a later medseg that changes the schema writes the key, and this reader refuses what it does not know.
PROVENANCE_VERSION = 1
_SECTIONS = ("model", "input", "output")


@dataclass
class Provenance:
    """The provenance record of one segmentation (no patient identifiers).

    ``model``: name, source, weights sha256, preset, task, network, labels, ...; ``input``: sha256
    and what was hashed, format, modality, series UID, shape, spacing_mm; ``output``: files,
    skipped (format -> why not written), labels_present, dtype. Keys of the JSON file, in order."""

    medseg_version: str
    created_utc: str
    model: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]
    device: str
    tta: bool
    tta_disagreement: float | None
    stitching: dict[str, Any] | None
    timings_s: dict[str, float]
    versions: dict[str, str]
    domain_flags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in _SECTIONS:
            if not isinstance(getattr(self, name), Mapping):
                raise InputError(f"provenance '{name}' must be an object")
        if not isinstance(self.output.get("files", []), list):
            raise InputError("provenance output.files must be a list of file names")
        try:
            self.timings_s = {str(k): round(float(v), 4) for k, v in dict(self.timings_s).items()}
            self.domain_flags = [str(f) for f in self.domain_flags or []]
        except (TypeError, ValueError) as exc:
            raise InputError(f"provenance timings_s must map stage names to seconds ({exc})") from None
        self.tta = bool(self.tta)

    @property
    def model_name(self) -> str:
        return str(self.model.get("name", ""))

    @property
    def task(self) -> str:
        """``"semantic"`` or ``"instance"`` (the model's)."""
        return str(self.model.get("task", "semantic"))

    @property
    def label_names(self) -> dict[int, str]:
        """The model's labels, index -> name (entries that are not a number -> text are skipped)."""
        labels = self.model.get("labels") or {}
        return {int(k): v for k, v in labels.items() if str(k).isdigit() and isinstance(v, str)}

    @property
    def files(self) -> list[str]:
        """Names of the files written into the case folder (provenance.json excluded)."""
        return [str(f) for f in self.output.get("files", [])]

    @property
    def skipped(self) -> dict[str, str]:
        """Output format -> why it was not written (e.g. ``dicom-seg`` for an anonymised source)."""
        return {str(k): str(v) for k, v in (self.output.get("skipped") or {}).items()}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, where: str = "provenance.json") -> Provenance:
        """Read a parsed ``provenance.json`` (InputError naming ``where`` for a bad one)."""
        check_version(obj, PROVENANCE_VERSION, where)
        names = [f.name for f in cls.__dataclass_fields__.values()]
        missing = [n for n in names if n not in obj and n != "domain_flags"]
        if missing:
            raise InputError(f"{where} lacks {', '.join(missing)}")
        try:
            return cls(**{n: obj[n] for n in names if n in obj})
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Provenance:
        """Read ``path`` (a case folder's ``provenance.json``)."""
        from medseg.schema import read_record

        return read_record(cls, path)

    def dumps(self) -> str:
        """The text of ``provenance.json``."""
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"


@dataclass(frozen=True)
class SegmentationResult:
    """What :func:`medseg.inference.segment_file` wrote for one study.

    Attributes:
        path: the case folder ``OUTPUT/<case>/``.
        provenance: its ``provenance.json`` (timings, domain flags, files, skipped outputs).
        geometry: the grid of the label map (= the source grid: affine voxel -> RAS mm, shape).
        labels: the label map itself (``MetaTensor (1, *spatial)``), kept in memory.
        study_instance_uid: the source's StudyInstanceUID (what a SEG / RT structure set carries),
            or None for a non-DICOM input.
        seg_uids / rtstruct_uids: (SeriesInstanceUID, SOPInstanceUID) of ``seg.dcm`` /
            ``rtstruct.dcm`` when written, else None.
        records: file name -> what an ``extra_writers`` entry wrote into it, as its typed
            record (``"statistics.json"``: a
            :class:`~medseg.evaluation.statistics.StructureStatistics` with ``--statistics``).
    """

    path: Path
    provenance: Provenance
    geometry: Geometry
    labels: Any = None
    study_instance_uid: str | None = None
    seg_uids: tuple[str, str] | None = None
    rtstruct_uids: tuple[str, str] | None = None
    records: dict[str, Any] = field(default_factory=dict)

    @property
    def case(self) -> str:
        """The case folder's name."""
        return self.path.name

    @property
    def files(self) -> dict[str, Path]:
        """Every file written into the case folder, by name (``provenance.json`` included)."""
        return {name: self.path / name for name in [*self.provenance.files, "provenance.json"]}

    @property
    def labels_path(self) -> Path | None:
        """``seg.nii.gz`` when the NIfTI label map was written."""
        return self.path / "seg.nii.gz" if "seg.nii.gz" in self.provenance.files else None

    @property
    def timings_s(self) -> dict[str, float]:
        return dict(self.provenance.timings_s)

    @property
    def domain_flags(self) -> list[str]:
        return list(self.provenance.domain_flags)

    @property
    def skipped(self) -> dict[str, str]:
        return self.provenance.skipped

    def moved_to(self, path: str | os.PathLike[str]) -> SegmentationResult:
        """The same result after its case folder was moved (renamed) to ``path``."""
        return replace(self, path=Path(path))
