"""``SegmentationModel``: a network plus everything needed to run it on a study.

A training run folder (``RUN/``) holds::

    model_spec.json   a :class:`~medseg.inference.model_spec.ModelSpec` (schema and parser there)
    checkpoints/best.pt, last.pt   {"state_dict": ..., "epoch": ..., ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg._hashing import sha256_file
from medseg.errors import ConfigError, ModelError
from medseg.inference.model_spec import TASKS, ModelSpec
from medseg.io.jsonfile import read_json_object

__all__ = ["TASKS", "ModelSpec", "SegmentationModel", "sha256_file"]


@dataclass
class SegmentationModel:
    """A ready-to-run segmentation model.

    Attributes:
        network: the ``torch.nn.Module`` (put in eval mode by :func:`medseg.inference.segment`).
        network_spec: the spec it was built from (:func:`medseg.models.build_network`).
        preset: preprocessing preset name (:data:`medseg.transforms.presets.PRESETS`).
        labels: class index -> name, foreground only (0 is background).
        roi_size: sliding-window size in voxels of the preprocessed grid.
        overlap: window overlap fraction (0..1).
        sw_batch_size: windows per network call.
        postprocess: see :mod:`medseg.transforms.postprocess`.
        task: ``"semantic"`` or ``"instance"``.
        weights_sha256: sha256 of the weights file the network was loaded from.
        name: a short model name (for provenance).
        preset_overrides: replacements for preset parameters (e.g. ``target_spacing``).
        slice_by_slice: run a 2D network on each slice of a 3D volume along the last axis (k).
        domain: what the model was made for (:mod:`medseg.inference.domain`); inputs and results
            outside it are flagged. Empty: nothing declared, nothing checked.
    """

    network: Any
    network_spec: dict[str, Any]
    preset: str
    labels: dict[int, str]
    roi_size: tuple[int, ...]
    overlap: float = 0.5
    sw_batch_size: int = 4
    postprocess: dict[str, Any] = field(default_factory=dict)
    task: str = "semantic"
    weights_sha256: str | None = None
    name: str = "model"
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    slice_by_slice: bool = False
    domain: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # one validation, the schema's: the model's settings are a ModelSpec plus a network
        spec = self.spec
        self.labels, self.roi_size, self.postprocess, self.domain = spec.labels, spec.roi_size, spec.postprocess, \
            spec.domain
        self.overlap, self.sw_batch_size = spec.overlap, spec.sw_batch_size
        self.network_spec, self.preset_overrides = spec.network, spec.preset_overrides

    @property
    def spec(self) -> ModelSpec:
        """This model's settings as a validated :class:`ModelSpec` (weights excluded)."""
        return ModelSpec(network=self.network_spec, preset=self.preset, labels=self.labels, roi_size=self.roi_size,
                         overlap=self.overlap, sw_batch_size=self.sw_batch_size, postprocess=self.postprocess,
                         task=self.task, name=self.name, preset_overrides=self.preset_overrides,
                         slice_by_slice=self.slice_by_slice, domain=self.domain)

    @property
    def spatial_dims(self) -> int:
        """Spatial dimensions of the network (2 or 3)."""
        return int(self.network_spec.get("spatial_dims", len(self.roi_size)))

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | ModelSpec, *, state_dict: dict[str, Any] | None = None,
                  weights_sha256: str | None = None, name: str | None = None,
                  network: Any = None) -> SegmentationModel:
        """Build from a ``model_spec.json`` dict or a :class:`ModelSpec` (and optional weights).

        ``network``: an already built network (a bundle's ``network_def``) instead of one built
        from the spec by :func:`medseg.models.build_network`."""
        ms = spec if isinstance(spec, ModelSpec) else ModelSpec.from_json(spec)
        if network is None:
            from medseg.models import build_network

            network = build_network(ms.network)
        if state_dict is not None:
            from medseg.models.weights import load_into

            load_into(network, state_dict, error=ModelError, what="the weights do not fit the network spec")
        network.eval()
        return cls(network=network, **ms.model_kwargs(), weights_sha256=weights_sha256,
                   name=str(name or ms.name or "model"))

    @classmethod
    def from_run_dir(cls, path: str | Path, *, checkpoint: str = "best") -> SegmentationModel:
        """Load ``RUN/model_spec.json`` and ``RUN/checkpoints/<checkpoint>.pt`` (best, else last).

        Weights are read with ``torch.load(weights_only=True)``: no pickled code is executed.
        """
        from medseg.models.weights import read_state_dict

        run = Path(path)
        spec_path = run / "model_spec.json"
        if not spec_path.is_file():
            raise ConfigError(f"{run.name}: not a training run folder (no model_spec.json)")
        spec = ModelSpec.from_json(read_json_object(spec_path, error=ConfigError, name=f"{spec_path.name} in {run.name}"),
                                   where=f"{spec_path.name} in {run.name}")
        ckpt = run / "checkpoints" / f"{checkpoint}.pt"
        if not ckpt.is_file() and checkpoint == "best":
            ckpt = run / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise ModelError(f"{run.name}: no checkpoints/{checkpoint}.pt (nor last.pt); train first")
        state = read_state_dict(ckpt, error=ModelError, what=f"{ckpt.name} in {run.name}")
        return cls.from_spec(spec, state_dict=state, weights_sha256=sha256_file(ckpt), name=spec.name or run.name)

    def to_spec(self) -> dict[str, Any]:
        """The ``model_spec.json`` dict describing this model (weights excluded)."""
        return self.spec.to_json()
