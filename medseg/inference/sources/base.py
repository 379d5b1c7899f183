"""The model-source interface: what every kind of trained model offers to ``segment_file``.

A *model source* is a trained model in the layout its authors publish it in (a medseg training
run folder, a medseg bundle, an nnU-Net v2 trained-model folder, ...). medseg does not convert it
into its own schema: each kind gets one small class that

* ``load(path, trust=..., **options)`` reads it (checksums, safe weights loading),
* ``describe()`` says what it segments (:class:`ModelInfo`: classes, input channels and their
  modality, the spacing it works at), and
* ``infer(image, ...)`` returns a :class:`~medseg.inference.result.Prediction`: the label map on
  exactly the source grid of ``image`` (a :class:`monai.data.MetaTensor` as :func:`medseg.io.load`
  returns it; meta as :func:`~medseg.inference.result.label_meta`: ``spacing``, ``labels``,
  ``task``) and the :class:`~medseg.inference.result.InferenceRecord` of how it was computed
  (device, TTA, timings); ``predict(image, ...)`` is its label map alone (:class:`InfersLabels`).

Everything around the model (reading DICOM, the case folder, NIfTI / DICOM SEG / overlay,
provenance, batch jobs) stays in :mod:`medseg.inference.pipeline` and :mod:`medseg.batch`.
:func:`detect_kind` recognises a folder by its content, never by its name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

KINDS = ("nnunet_v2", "run_dir", "bundle")


@dataclass(frozen=True)
class ModelInfo:
    """What a model segments and what it expects (JSON-able; recorded in ``provenance.json``).

    Attributes:
        kind: ``"nnunet_v2"``, ``"run_dir"``, ``"bundle"``, ``"object"`` or ``"combined"``.
        name: a short name (folder or bundle name).
        labels: class index -> name, foreground only.
        channels: input channels, in order.
        modality: the modality (or channel name) of each input channel.
        spacing_mm: the spacing the network runs at, in the model's own axis order (nnU-Net: the
            plans' ``spacing`` after ``transpose_forward``); None when the model keeps the input's.
        spatial_dims: 2 or 3 (the network's).
        details: kind-specific settings that decide the result (configuration, folds, checkpoint,
            mirroring, step size, preset, ...).
    """

    kind: str
    name: str
    labels: dict[int, str]
    channels: int
    modality: tuple[str, ...]
    spacing_mm: tuple[float, ...] | None
    spatial_dims: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["labels"] = {str(k): v for k, v in sorted(self.labels.items())}
        out["modality"] = list(self.modality)
        out["spacing_mm"] = list(self.spacing_mm) if self.spacing_mm is not None else None
        return out


@runtime_checkable
class ModelSource(Protocol):
    """A loaded model that segments one image at a time (see the module docstring)."""

    name: str
    labels: dict[int, str]
    task: str
    weights_sha256: str | None

    @classmethod
    def load(cls, path: Any, *, trust: bool = False, **options: Any) -> ModelSource: ...

    def describe(self) -> ModelInfo: ...

    def infer(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Any: ...

    def predict(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Any: ...


class InfersLabels:
    """Base of the model sources: ``predict`` is the label map of the source's ``infer``."""

    def predict(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Any:
        """The label map of :meth:`infer` (a MetaTensor on ``image``'s grid)."""
        return self.infer(image, device=device, progress=progress, amp=amp).labels


def detect_kind(path: str | Path) -> str | None:
    """``"nnunet_v2"`` (``plans.json`` + ``dataset.json`` + ``fold_*``), ``"run_dir"``
    (``model_spec.json``), ``"bundle"`` (``configs/``), or None for a folder that is none of
    them (or a name that is not a folder: a bundle name for the bundle loader)."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / "plans.json").is_file() and (p / "dataset.json").is_file() and any(
            c.is_dir() for c in p.glob("fold_*")):
        return "nnunet_v2"
    if (p / "model_spec.json").is_file():
        return "run_dir"
    if (p / "configs").is_dir():
        return "bundle"
    return None
