"""``ModelSpec``: the one schema of what a segmentation model is, apart from its weights.

It is stored in two layouts, both read and written only here:

- ``RUN/model_spec.json`` (training run folders): inference settings nested under ``inference``::

      {"name": "...", "network": spec, "preset": name, "labels": {"1": "liver"}, "task": "semantic",
       "inference": {"roi_size": [...], "overlap": 0.5, "sw_batch_size": 4, "postprocess": {...},
                     "preset_overrides": {...}, "slice_by_slice": false},
       "domain": {...}}

- ``BUNDLE/configs/medseg.json`` (bundles): the same settings flat, plus what the bundle
  builder records about the bundle (``spatial_dims``, ``modality``,
  ``monai_path_skips_postprocess``).

The constructor validates every field (ConfigError naming the bad one), so a ``ModelSpec`` that
exists is a usable one. Files carry no version key yet: a file without ``schema_version`` is
version :data:`SCHEMA_VERSION`; a later medseg that changes the schema writes the key, and this
reader refuses a version it does not know instead of misreading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from medseg.errors import ConfigError
from medseg.schema import check_version

SCHEMA_VERSION = 1
TASKS = ("semantic", "instance")
_REQUIRED = ("network", "preset", "labels")
#: inference-time settings: nested under ``inference`` in model_spec.json, flat in medseg.json
_INFERENCE_KEYS = ("roi_size", "overlap", "sw_batch_size", "postprocess", "preset_overrides", "slice_by_slice")


@dataclass
class ModelSpec:
    """A model's architecture, preprocessing, labels and inference settings (no weights).

    Attributes:
        network: spec for :func:`medseg.models.build_network` (``arch``, ``spatial_dims``, ...).
        preset: preprocessing preset name (:data:`medseg.transforms.presets.PRESETS`).
        labels: class index -> name, foreground only (0 is background and dropped).
        roi_size: sliding-window size in voxels of the preprocessed grid.
        overlap: window overlap fraction in [0, 1).
        sw_batch_size: windows per network call (>= 1).
        postprocess: see :mod:`medseg.transforms.postprocess`.
        task: ``"semantic"`` or ``"instance"``.
        name: a short model name, or None (the loader names it after its folder).
        preset_overrides: replacements for preset parameters (e.g. ``target_spacing`` in mm).
        slice_by_slice: run a 2D network on each slice of a 3D volume along the last axis (k).
        domain: what the model was made for (:mod:`medseg.inference.domain`).
    """

    network: dict[str, Any]
    preset: str
    labels: dict[int, str]
    roi_size: tuple[int, ...]
    overlap: float = 0.5
    sw_batch_size: int = 4
    postprocess: dict[str, Any] = field(default_factory=dict)
    task: str = "semantic"
    name: str | None = None
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    slice_by_slice: bool = False
    domain: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from medseg.inference.domain import validate_domain
        from medseg.transforms.postprocess import validate_postprocess
        from medseg.transforms.presets import get_preset

        if not isinstance(self.network, Mapping) or "arch" not in self.network:
            raise ConfigError("model network must be an object with an 'arch' key")
        self.network = dict(self.network)
        if self.task not in TASKS:
            raise ConfigError(f"model task must be one of {TASKS}, got {self.task!r}")
        self.preset = str(self.preset)
        self.preset_overrides = dict(self.preset_overrides or {})
        get_preset(self.preset, **self.preset_overrides)
        try:
            labels = {int(k): str(v) for k, v in dict(self.labels).items()}
            self.roi_size = tuple(int(r) for r in self.roi_size)
            self.overlap = float(self.overlap)
            self.sw_batch_size = int(self.sw_batch_size)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model labels must map integers to names and roi_size be integers: {exc}") from exc
        labels.pop(0, None)
        if any(k < 0 for k in labels):
            raise ConfigError("model labels must be positive class indices")
        self.labels = labels
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            raise ConfigError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if len(self.roi_size) != self.spatial_dims:
            raise ConfigError(f"roi_size {self.roi_size} needs {self.spatial_dims} values for a "
                              f"{self.spatial_dims}D network")
        self.postprocess = validate_postprocess(dict(self.postprocess or {}))
        self.domain = validate_domain(self.domain or {})
        self.slice_by_slice = bool(self.slice_by_slice)
        self.name = None if self.name is None else str(self.name)

    @property
    def spatial_dims(self) -> int:
        """Spatial dimensions of the network (2 or 3)."""
        return int(self.network.get("spatial_dims", len(self.roi_size)))

    # ------------------------------------------------------------------------- reading

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, error: type[Exception] = ConfigError,
                  where: str = "model spec") -> ModelSpec:
        """Read either layout (``inference`` nested: model_spec.json; flat: medseg.json).

        ``error`` is raised (message starting with ``where``) for a missing key, an unknown
        ``schema_version`` or a field the constructor refuses."""
        check_version(obj, SCHEMA_VERSION, where, error=error)
        nested = "inference" in obj
        for key in (*_REQUIRED, "inference") if nested else (*_REQUIRED, "roi_size"):
            if key not in obj:
                raise error(f"{where} lacks '{key}'")
        settings = obj["inference"] if nested else obj
        if not isinstance(settings, Mapping):
            raise error(f"{where}: 'inference' must be an object")
        if "roi_size" not in settings:
            raise error(f"{where}: inference.roi_size is missing")
        try:
            return cls(network=obj["network"], preset=obj["preset"], labels=obj["labels"],
                       roi_size=settings["roi_size"], overlap=settings.get("overlap", 0.5),
                       sw_batch_size=settings.get("sw_batch_size", 4),
                       postprocess=settings.get("postprocess") or {}, task=str(obj.get("task", "semantic")),
                       name=obj.get("name") or None, preset_overrides=settings.get("preset_overrides") or {},
                       slice_by_slice=bool(settings.get("slice_by_slice", False)),
                       domain=obj.get("domain") or {})
        except ConfigError as exc:
            if error is ConfigError and where == "model spec":
                raise
            raise error(f"{where}: {exc}") from exc

    # ------------------------------------------------------------------------- writing

    def to_json(self) -> dict[str, Any]:
        """The ``model_spec.json`` object (nested layout); ``name``/``domain`` only when set."""
        return {**({"name": self.name} if self.name is not None else {}),
                "network": self.network, "preset": self.preset,
                "labels": {str(k): v for k, v in sorted(self.labels.items())}, "task": self.task,
                "inference": {"roi_size": list(self.roi_size), "overlap": self.overlap,
                              "sw_batch_size": self.sw_batch_size, "postprocess": self.postprocess,
                              "preset_overrides": self.preset_overrides, "slice_by_slice": self.slice_by_slice},
                **({"domain": self.domain} if self.domain else {})}

    def to_bundle_json(self, *, modality: str, name: str,
                       monai_path_skips_postprocess: list[str] | None = None) -> dict[str, Any]:
        """The ``configs/medseg.json`` object (flat layout) of a bundle called ``name``."""
        out: dict[str, Any] = {
            "network": self.network, "preset": self.preset,
            "labels": {str(k): v for k, v in sorted(self.labels.items())}, "roi_size": list(self.roi_size),
            "overlap": self.overlap, "sw_batch_size": self.sw_batch_size, "postprocess": self.postprocess,
            "task": self.task, "spatial_dims": self.spatial_dims, "modality": modality,
            "preset_overrides": self.preset_overrides, "name": self.name or name,
            "monai_path_skips_postprocess": list(monai_path_skips_postprocess or []),
        }
        if self.slice_by_slice:
            out["slice_by_slice"] = True
        if self.domain:
            out["domain"] = self.domain
        return out

    def updated(self, **changes: Any) -> ModelSpec:
        """A copy with ``changes`` (field names) applied and validated again."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ConfigError(f"model spec has no field {', '.join(bad)}")
        return replace(self, **changes)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`medseg.inference.SegmentationModel` (all but the network,
        its weights' sha256 and the name)."""
        return {"network_spec": self.network, "preset": self.preset, "labels": self.labels,
                "roi_size": self.roi_size, "overlap": self.overlap, "sw_batch_size": self.sw_batch_size,
                "postprocess": self.postprocess, "task": self.task, "preset_overrides": self.preset_overrides,
                "slice_by_slice": self.slice_by_slice, "domain": self.domain}
