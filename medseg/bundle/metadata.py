"""What a built bundle says about itself: ``configs/metadata.json`` (MONAI Bundle Specification,
model-zoo conventions) and ``docs/README.md``, from the release facts a person gives
(:class:`BundleRelease`) and the facts of the trained model (:class:`ModelFacts`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.bundle.configs import SCHEMA_URL


@dataclass(frozen=True)
class BundleRelease:
    """The words and numbers of a release (``medseg bundle build`` options); none is checked
    against the model, all go to ``metadata.json`` / the README as given."""

    name: str
    version: str = "0.1.0"
    description: str = ""
    authors: str = "medseg"
    data_source: str = ""
    data_license_text: str = ""
    data_type: str = "nifti"
    intended_use: str = "Research use only: not for diagnostic or treatment decisions."
    references: list[str] = field(default_factory=list)
    changelog: dict[str, str] | None = None
    copyright: str | None = None
    task_description: str | None = None


@dataclass(frozen=True)
class ModelFacts:
    """What the trained model is: labels (str index -> name, foreground), network spec, preset,
    its modality and input format, channels in/out, window size, measured metrics (flat)."""

    labels: dict[str, str]
    network: dict[str, Any]
    preset: str
    modality: str
    fmt: str
    n_in: int
    n_out: int
    roi: list[int]
    metrics: dict[str, float]

    def channel_def(self) -> dict[str, str]:
        """Output channel -> name (background first for several channels, else the one class)."""
        if self.n_out <= 1:
            return {"0": next(iter(self.labels.values()), "foreground")}
        return {"0": "background", **{k: v for k, v in self.labels.items() if int(k) < self.n_out}}


def metadata_json(release: BundleRelease, facts: ModelFacts) -> dict[str, Any]:
    """``configs/metadata.json`` without ``weights_sha256`` (added once the weights are written)."""
    names = ", ".join(facts.labels.values())
    modality, fmt, preset, roi = facts.modality, facts.fmt, facts.preset, facts.roi
    return {
        "schema": SCHEMA_URL,
        "version": release.version,
        "changelog": dict(release.changelog or {release.version: "built by medseg from a training run"}),
        **_versions(),
        "name": release.name,
        "task": release.task_description or f"{modality} segmentation of {names}",
        "description": release.description or f"medseg {facts.network.get('arch')} for {names} "
                                              f"on {modality} (preset {preset}).",
        "authors": release.authors,
        "copyright": release.copyright or f"Copyright (c) {release.authors}",
        "data_source": release.data_source or "not stated",
        "data_type": release.data_type,
        "image_classes": f"single channel {modality} image ({fmt}), preprocessed by preset {preset}",
        "label_classes": "single channel label map: " + ", ".join(f"{k} is {v}" for k, v in facts.labels.items())
                         + ", 0 is background",
        "pred_classes": f"{facts.n_out} channel scores; argmax gives the label map",
        "eval_metrics": facts.metrics,
        "intended_use": release.intended_use,
        "references": list(release.references or []),
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": fmt, "modality": modality, "num_channels": facts.n_in,
                "spatial_shape": roi, "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": {str(i): "image" for i in range(facts.n_in)},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "labels" if facts.n_out > 1 else "classes", "modality": "n/a",
                "num_channels": facts.n_out, "spatial_shape": roi, "dtype": "float32", "value_range": [],
                "is_patch_data": True, "channel_def": facts.channel_def(),
            }},
        },
    }


def readme(name: str, meta: dict, medseg_cfg: dict, metrics: dict[str, float], extra: dict) -> str:
    """``docs/README.md`` of the bundle (model, data, training, measured accuracy, use, limits)."""
    labels = ", ".join(f"{k} = {v}" for k, v in medseg_cfg["labels"].items())
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())) or "| (none recorded) | |"
    return f"""# {name} {meta['version']}

{meta['description']}

## Model
- Task: {meta['task']} ({medseg_cfg['task']}); labels: {labels} (0 = background).
- Network: `{json.dumps(medseg_cfg['network'])}`; preprocessing preset `{medseg_cfg['preset']}`;
  sliding window {medseg_cfg['roi_size']} voxels, overlap {medseg_cfg['overlap']}.
- Input: one channel, {meta['network_data_format']['inputs']['image']['modality']}; any orientation
  (reoriented and resampled by the preset); output label map on the SOURCE grid.
- Weights sha256 (models/model.pt): `{meta['weights_sha256']['models/model.pt']}`.

## Data
{extra['data_source']}

Data licence: see `docs/data_license.txt`.

## Training
Trained with medseg (run folder converted by `medseg bundle build`); `configs/train.json`
retrains it with MONAI alone on an MSD-layout folder (`imagesTr/`, `labelsTr/`).

## Measured accuracy (from the run's metrics.json)
| metric | value |
|---|---|
{rows}

## Use
```
medseg segment INPUT --bundle {name}
python -m monai.bundle run --config_file configs/inference.json --bundle_root BUNDLE \\
    --dataset_dir IN --output_dir OUT
medseg bundle verify BUNDLE
```

## Postprocessing
medseg applies `{json.dumps(medseg_cfg['postprocess'])}`. The MONAI path (`python -m monai.bundle run`)
applies the same except: {', '.join(medseg_cfg['monai_path_skips_postprocess']) or 'nothing (identical)'}.

## Intended use
{meta['intended_use']}

## Limits
- Research use only; not a medical device; not validated for clinical decisions.
- Accuracy above is what the training run measured on its own validation data; it does not
  transfer to other scanners, protocols or populations without checking.
- Inputs must be {meta['network_data_format']['inputs']['image']['modality']} images the preset
  `{medseg_cfg['preset']}` was designed for.

## Authors
{meta['authors']} - {meta['copyright']}
"""


def _versions() -> dict[str, str]:
    from importlib import metadata

    import monai
    import torch

    def v(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "0"

    return {
        "monai_version": monai.__version__.split("+")[0],
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"nibabel": v("nibabel")},
        "optional_packages_version": {"medseg": v("medseg"), "scipy": v("scipy")},
    }


