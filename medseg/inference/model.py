"""``SegmentationModel``: a network plus everything needed to run it on a study.

A training run folder (``RUN/``) holds::

    model_spec.json   {"network": spec, "preset": name, "labels": {"1": "liver", ...},
                       "inference": {"roi_size": [...], "overlap": 0.5, "sw_batch_size": 4,
                                     "postprocess": {...}, "slice_by_slice": false,
                                     "preset_overrides": {...}},
                       "task": "semantic" | "instance", "name": "..."}
    checkpoints/best.pt, last.pt   {"state_dict": ..., "epoch": ..., ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg._hashing import sha256_file
from medseg.errors import ConfigError, ModelError
from medseg.io.jsonfile import read_json_object

TASKS = ("semantic", "instance")




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
        from medseg.transforms.postprocess import validate_postprocess
        from medseg.transforms.presets import get_preset

        if self.task not in TASKS:
            raise ConfigError(f"model task must be one of {TASKS}, got {self.task!r}")
        get_preset(self.preset, **dict(self.preset_overrides))
        try:
            self.labels = {int(k): str(v) for k, v in dict(self.labels).items()}
            self.roi_size = tuple(int(r) for r in self.roi_size)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model labels must map integers to names and roi_size be integers: {exc}") from exc
        if 0 in self.labels:
            self.labels.pop(0)
        if any(k < 0 for k in self.labels):
            raise ConfigError("model labels must be positive class indices")
        if not 0 <= float(self.overlap) < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if int(self.sw_batch_size) < 1:
            raise ConfigError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        dims = int(self.network_spec.get("spatial_dims", len(self.roi_size)))
        if len(self.roi_size) != dims:
            raise ConfigError(f"roi_size {self.roi_size} needs {dims} values for a {dims}D network")
        self.postprocess = validate_postprocess(self.postprocess)
        from medseg.inference.domain import validate_domain

        self.domain = validate_domain(self.domain)

    @property
    def spatial_dims(self) -> int:
        """Spatial dimensions of the network (2 or 3)."""
        return int(self.network_spec.get("spatial_dims", len(self.roi_size)))

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *, state_dict: dict[str, Any] | None = None,
                  weights_sha256: str | None = None, name: str | None = None) -> SegmentationModel:
        """Build from a ``model_spec.json`` dict (and optional weights)."""
        from medseg.models import build_network

        for key in ("network", "preset", "labels", "inference"):
            if key not in spec:
                raise ConfigError(f"model spec is missing {key!r}")
        inf = dict(spec["inference"])
        if "roi_size" not in inf:
            raise ConfigError("model spec: inference.roi_size is missing")
        network = build_network(spec["network"])
        if state_dict is not None:
            try:
                network.load_state_dict(state_dict)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise ModelError(f"the weights do not fit the network spec ({first})") from exc
        network.eval()
        return cls(network=network, network_spec=dict(spec["network"]), preset=str(spec["preset"]),
                   labels=spec["labels"], roi_size=tuple(inf["roi_size"]), overlap=float(inf.get("overlap", 0.5)),
                   sw_batch_size=int(inf.get("sw_batch_size", 4)), postprocess=dict(inf.get("postprocess") or {}),
                   task=str(spec.get("task", "semantic")), weights_sha256=weights_sha256,
                   name=str(name or spec.get("name") or "model"),
                   preset_overrides=dict(inf.get("preset_overrides") or {}),
                   slice_by_slice=bool(inf.get("slice_by_slice", False)),
                   domain=dict(spec.get("domain") or {}))

    @classmethod
    def from_run_dir(cls, path: str | Path, *, checkpoint: str = "best") -> SegmentationModel:
        """Load ``RUN/model_spec.json`` and ``RUN/checkpoints/<checkpoint>.pt`` (best, else last).

        Weights are read with ``torch.load(weights_only=True)``: no pickled code is executed.
        """
        import torch

        run = Path(path)
        spec_path = run / "model_spec.json"
        if not spec_path.is_file():
            raise ConfigError(f"{run.name}: not a training run folder (no model_spec.json)")
        spec = read_json_object(spec_path, error=ConfigError, name=f"{spec_path.name} in {run.name}")
        ckpt = run / "checkpoints" / f"{checkpoint}.pt"
        if not ckpt.is_file() and checkpoint == "best":
            ckpt = run / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise ModelError(f"{run.name}: no checkpoints/{checkpoint}.pt (nor last.pt); train first")
        try:
            data = torch.load(ckpt, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise ModelError(f"{ckpt.name} in {run.name} cannot be read as safe torch weights") from exc
        state = data.get("state_dict", data) if isinstance(data, dict) else None
        if not isinstance(state, dict):
            raise ModelError(f"{ckpt.name} holds no state_dict")
        return cls.from_spec(spec, state_dict=state, weights_sha256=sha256_file(ckpt),
                             name=spec.get("name") or run.name)

    def to_spec(self) -> dict[str, Any]:
        """The ``model_spec.json`` dict describing this model (weights excluded)."""
        return {"name": self.name, "network": self.network_spec, "preset": self.preset,
                "labels": {str(k): v for k, v in sorted(self.labels.items())}, "task": self.task,
                "inference": {"roi_size": list(self.roi_size), "overlap": self.overlap,
                              "sw_batch_size": self.sw_batch_size, "postprocess": self.postprocess,
                              "preset_overrides": self.preset_overrides, "slice_by_slice": self.slice_by_slice},
                **({"domain": self.domain} if self.domain else {})}
