"""``TrainConfig`` (every option of a training run) and the helpers that turn options into a
network spec, a class selection, a worker count and a learning-rate factor."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.io.jsonfile import read_json_object
from medseg.schema import check_version, read_record

ARCHS = ("unet", "dynunet", "segresnet")
#: how the validation Dice that chooses best.pt is computed (see :mod:`medseg.training.validation`)
VALIDATIONS = ("network", "deployment")
#: files without ``schema_version`` are version 1 (see :mod:`medseg.schema`)
TRAIN_CONFIG_VERSION = 1

@dataclass
class TrainConfig:
    """Everything a training run needs. Sizes are voxels; ``lr`` is AdamW's peak learning rate.

    ``batch_size`` volumes per step, each giving ``num_samples`` patches (foreground-balanced by
    ``pos:neg``), so a step sees ``batch_size * num_samples`` patches. ``patch_size`` None picks
    (96, 96, 64) for 3D networks and (256, 256) for 2D ones. ``num_workers`` None picks 0 on a
    machine with <= 2 cores, else min(4, cores // 2). ``max_minutes`` stops after the epoch in
    which the budget ran out (resume later with ``resume=True``). ``classes`` trains on a subset
    of the dataset's label names (renumbered 1..n in the given order; the others become background).
    ``preset_overrides`` replace parameters of the preset (e.g. ``{"target_spacing": [2.5, 2.5,
    2.5]}`` mm) for training and, through ``model_spec.json`` ``inference.preset_overrides``, for
    inference. ``validation`` picks the Dice that chooses ``best.pt``: ``"network"`` (MONAI's sliding
    window on the preprocessed grid, with a validation loss) or ``"deployment"`` (what ``medseg
    segment`` runs: medseg's stitcher, postprocessing and the inverse to the source grid; see
    :mod:`medseg.training.validation`).

    Validated when built (ConfigError); ``RUN/train_config.json`` is :meth:`to_json` (plus the
    run's ``flip_plan``) and :meth:`from_json` / :meth:`read` read it back.
    """

    dataset: str | Path
    output: str | Path
    preset: str
    network: dict[str, Any] | str = "unet"
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    format: str = "auto"
    labels: dict[int, str] | None = None
    classes: list[str] | None = None
    epochs: int = 100
    patch_size: tuple[int, ...] | None = None
    batch_size: int = 2
    num_samples: int = 2
    pos: float = 1.0
    neg: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 1e-5
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    val_every: int = 1
    val_fraction: float = 0.2
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    amp: bool = True
    max_minutes: float | None = None
    num_workers: int | None = None
    cache_rate: float = 1.0
    augmentation: Any = None
    overlap: float = 0.5
    sw_batch_size: int = 4
    postprocess: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = True
    progress: bool = True
    validation: str = "network"
    init_weights: str | Path | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch_size and val_every must be >= 1 and lr > 0")
        if self.validation not in VALIDATIONS:
            raise ConfigError(f"validation {self.validation!r} unknown; use one of {', '.join(VALIDATIONS)}")

    def to_json(self) -> dict[str, Any]:
        """The options as JSON (paths as strings, label keys as strings)."""
        from dataclasses import asdict

        d = asdict(self)
        d["dataset"], d["output"] = str(self.dataset), str(self.output)
        d["init_weights"] = str(self.init_weights) if self.init_weights is not None else None
        d["augmentation"] = asdict(self.augmentation) if self.augmentation is not None else None
        if d.get("labels"):
            d["labels"] = {str(k): v for k, v in d["labels"].items()}
        return d

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "train_config.json") -> TrainConfig:
        """Options from :meth:`to_json` output (a run's ``train_config.json``; keys that are not
        options, such as ``flip_plan``, are left out). ConfigError naming ``where`` otherwise."""
        from dataclasses import fields

        check_version(obj, TRAIN_CONFIG_VERSION, where, error=ConfigError)
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in obj.items() if k in names}
        if d.get("labels"):
            d["labels"] = {int(k): str(v) for k, v in d["labels"].items()}
        if d.get("patch_size") is not None:
            d["patch_size"] = tuple(int(p) for p in d["patch_size"])
        if isinstance(d.get("augmentation"), dict):
            from medseg.transforms.augment import AugmentationConfig

            aug = dict(d["augmentation"])
            if isinstance(aug.get("flip_axes"), list):
                aug["flip_axes"] = tuple(aug["flip_axes"])
            if isinstance(aug.get("gamma"), list):
                aug["gamma"] = tuple(aug["gamma"])
            d["augmentation"] = AugmentationConfig(**aug)
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """``path``: a run folder or its ``train_config.json``."""
        p = Path(path)
        return read_record(cls, p / "train_config.json" if p.is_dir() else p, error=ConfigError)


# --------------------------------------------------------------------------------- helpers


def resolve_network_spec(network: dict[str, Any] | str, *, spatial_dims: int, in_channels: int,
                         out_channels: int) -> dict[str, Any]:
    """Network spec from a dict, a JSON string, a JSON file path or an arch name (unet, dynunet,
    segresnet); fills ``spatial_dims``/``in_channels``/``out_channels`` and checks given ones."""
    if isinstance(network, dict):
        spec = dict(network)
    elif isinstance(network, str) and network.strip().startswith("{"):
        try:
            spec = json.loads(network)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"network spec is not valid JSON ({exc.msg} at char {exc.pos})") from exc
    elif isinstance(network, str) and network.lower().endswith(".json"):
        p = Path(network)
        if not p.is_file():
            raise ConfigError(f"network spec file '{p.name}' not found")
        spec = read_json_object(p, error=ConfigError, name=f"network spec file '{p.name}'")
        spec = spec.get("network", spec)
    elif isinstance(network, str) and network.lower() in ARCHS:
        spec = {"arch": network.lower()}
    else:
        raise ConfigError(f"network '{network}' is neither JSON, a .json file nor one of {ARCHS}")
    if not isinstance(spec, dict) or "arch" not in spec:
        raise ConfigError("network spec must be a JSON object with an 'arch' key")
    for key, value in (("spatial_dims", spatial_dims), ("in_channels", in_channels),
                       ("out_channels", out_channels)):
        if key in spec and int(spec[key]) != value:
            raise ConfigError(f"network spec says {key}={spec[key]} but the data needs {value}")
        spec[key] = value
    return spec


def select_classes(labels: dict[int, str], classes: list[str] | None
                   ) -> tuple[dict[int, str], dict[int, int] | None]:
    """Keep the label ``classes`` (names) of ``labels``, renumbered 1..n in the given order.
    Returns (new labels, remap old value -> new value), or ``(labels, None)`` for all classes."""
    if not classes:
        return labels, None
    by_name = {v: k for k, v in labels.items()}
    missing = [c for c in classes if c not in by_name]
    if missing:
        raise ConfigError(f"class '{missing[0]}' is not a label of the dataset; "
                          f"choose from {', '.join(labels.values())}")
    if len(set(classes)) != len(classes):
        raise ConfigError("a class is listed twice in classes")
    new = {i + 1: name for i, name in enumerate(classes)}
    return new, {by_name[name]: i for i, name in new.items()}


def _default_workers() -> int:
    n = os.cpu_count() or 1
    return 0 if n <= 2 else min(4, n // 2)


def _lr_factor(kind: str, epoch: int, epochs: int, warmup: int) -> float:
    """LR multiplier for (0-based) ``epoch``: linear warm-up, then cosine to 0 or poly (0.9)."""
    if warmup > 0 and epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    span = max(1, epochs - warmup)
    t = min(1.0, (epoch - warmup) / span)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if kind == "poly":
        return (1.0 - t) ** 0.9
    raise ConfigError(f"scheduler '{kind}' unknown; use cosine or poly")
