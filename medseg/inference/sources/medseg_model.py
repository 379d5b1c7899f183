"""medseg's own models (training run folders, medseg bundles, ``SegmentationModel`` objects) as
model sources: :func:`medseg.inference.segment` behind the :class:`ModelSource` interface."""

from __future__ import annotations

from typing import Any

from medseg.inference.model import SegmentationModel
from medseg.inference.sources.base import InfersLabels, ModelInfo

_MODALITY = {"ct": "CT", "mr": "MR", "xray": "DX", "fluo": "microscopy"}  # preset name prefix


class MedsegModelSource(InfersLabels):
    """Wraps a :class:`SegmentationModel` (used where several models run as one, see
    :class:`medseg.inference.sources.combined.CombinedSource`)."""

    def __init__(self, model: SegmentationModel, kind: str = "object", *, tta: bool = False) -> None:
        self.model = model
        self.kind = kind
        self.tta = tta
        self.name = model.name
        self.labels = dict(model.labels)
        self.task = model.task
        self.weights_sha256 = model.weights_sha256

    @classmethod
    def load(cls, path: Any, *, trust: bool = False, model_loader: Any = None, tta: bool = False) -> MedsegModelSource:
        """A training run folder (``model_spec.json``), else a bundle through ``model_loader``
        (:func:`medseg.bundle.load_bundle`; the inference layer does not import the bundle layer)."""
        from pathlib import Path

        from medseg.errors import ConfigError

        if (Path(path) / "model_spec.json").is_file():
            return cls(SegmentationModel.from_run_dir(path), "run_dir", tta=tta)
        if model_loader is None:
            raise ConfigError(f"{Path(path).name}: not a training run folder and no bundle loader is available")
        return cls(model_loader(path, trust=trust), "bundle", tta=tta)

    def describe(self) -> ModelInfo:
        from medseg.transforms.presets import get_preset

        m = self.model
        preset = get_preset(m.preset, **dict(m.preset_overrides))
        spacing = getattr(preset, "target_spacing", None)
        return ModelInfo(
            kind=self.kind, name=m.name, labels=dict(m.labels), channels=int(m.network_spec.get("in_channels", 1)),
            modality=(_MODALITY.get(m.preset.split("_")[0], "unknown"),) * int(m.network_spec.get("in_channels", 1)),
            spacing_mm=tuple(float(s) for s in spacing) if spacing else None, spatial_dims=m.spatial_dims,
            details={"preset": m.preset, "network": m.network_spec, "roi_size": list(m.roi_size),
                     "overlap": m.overlap, "tta": self.tta, "postprocess": m.postprocess})

    def infer(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Any:
        from medseg.inference.segmentation import infer

        return infer(image, self.model, device=device, tta=self.tta, progress=progress, amp=amp)
