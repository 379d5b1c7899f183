"""``medseg.pipeline("segmentation", model=...)``: a callable returning ``[{"label", "mask", "score"}]``.

The convention of the best-known image-segmentation pipeline API, on medical images:

* ``model``: a bundle name or folder, a training run folder, an nnU-Net v2 model folder, a
  :class:`~medseg.inference.model.SegmentationModel`, or a classical method (``"otsu"``,
  ``"watershed"``, ``"preset:bone"``, ``"kmeans:3"``, ... or with the prefix ``"method:"``).
* ``subtask``: ``"semantic"`` (one entry per class present), ``"instance"`` (one entry per
  object: the instance ids of an instance model such as the nuclei bundle, else the connected
  components of each class, full connectivity: lesions), ``"panoptic"`` (both: the class entries,
  then the objects; each entry then also has ``"kind"``: ``"class"`` or ``"object"``). Default:
  ``"instance"`` for instance models and the watershed, else ``"semantic"``.
* Calling it on an image (a path or a MetaTensor from :func:`medseg.io.load`) returns a list of
  dicts: ``label`` (the class name), ``mask`` (a boolean numpy array on exactly the image's grid,
  spatial axes only) and ``score``.

**score**: for medseg models, the mean softmax probability of the entry's class over the voxels
of its mask (for an instance model's objects: the mean foreground probability, 1 - P(background)).
The probabilities are the network's on its own grid (MONAI ``sliding_window_inference``, Gaussian
blending, float32), brought back to the image grid by MONAI's ``Invertd`` with linear
interpolation; the masks are those of :func:`medseg.inference.segment` (postprocessing included).
It is a confidence, not a calibrated probability of correctness (no calibration was fitted on
these weights). For a Gaussian mixture (``gmm:K``) the score is the mean posterior of the class
over its voxels; other classical methods and nnU-Net folders have no probabilities here:
``score`` is None.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from medseg.errors import ConfigError

TASKS = ("segmentation", "image-segmentation")
SUBTASKS = ("semantic", "instance", "panoptic")


def pipeline(task: str = "segmentation", model: Any = None, *, subtask: str | None = None, device: str = "cpu",
             trust: bool = False) -> SegmentationPipeline:
    """Build a segmentation pipeline (see the module docstring)."""
    if task not in TASKS:
        raise ConfigError(f"unknown pipeline task {task!r}; medseg has {', '.join(TASKS)}")
    if model is None:
        raise ConfigError("pipeline() needs model=: a bundle name/folder, a model folder or a classical method")
    if subtask is not None and subtask not in SUBTASKS:
        raise ConfigError(f"subtask must be one of {', '.join(SUBTASKS)}")
    return SegmentationPipeline(model, subtask=subtask, device=device, trust=trust)


def _classical(model: Any):
    if not isinstance(model, str):
        return None
    from medseg.classical.methods import METHODS, parse_method

    text = model[len("method:"):] if model.startswith("method:") else model
    if text.split(":", 1)[0].strip().lower() not in METHODS:
        return None
    from medseg.classical.source import ClassicalSource

    return ClassicalSource(parse_method(text))


class SegmentationPipeline:
    def __init__(self, model: Any, *, subtask: str | None = None, device: str = "cpu", trust: bool = False) -> None:
        self.device = device
        self.classical = _classical(model)
        if self.classical is None:
            from medseg.bundle import load_bundle
            from medseg.inference.pipeline import resolve_model

            self.model, self.kind = resolve_model(model, trust=trust, model_loader=load_bundle)
        else:
            self.model, self.kind = self.classical, "classical"
        task = getattr(self.model, "task", "semantic")
        self.subtask = subtask or ("instance" if task == "instance" or
                                   (self.classical is not None and self.classical.spec.name == "watershed")
                                   else "semantic")

    def __call__(self, image: Any) -> list[dict[str, Any]]:
        from medseg.inference.model import SegmentationModel

        if not hasattr(image, "affine"):
            from medseg.io.read import load

            image = load(image)
        probs = None
        if self.classical is not None:
            res = self.classical.run(image)
            labels, names, task = np.asarray(res.labels), dict(res.names), res.task
            class_scores = res.scores or {}
        else:
            if isinstance(self.model, SegmentationModel):
                from medseg.inference.segmentation import segment

                out = segment(image, self.model, device=self.device, progress=False)
                probs = class_probabilities(image, self.model, device=self.device)
            else:
                out = self.model.predict(image, device=self.device, progress=False)
            labels, names, task = out.numpy()[0], dict(self.model.labels), self.model.task
            class_scores = {}
        return entries(labels, names, task, self.subtask, probs=probs, class_scores=class_scores)


def entries(labels: np.ndarray, names: dict[int, str], task: str, subtask: str, *, probs: np.ndarray | None = None,
            class_scores: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """The list of ``{"label", "mask", "score"}`` of one label map (see the module docstring)."""
    from scipy import ndimage

    out: list[dict[str, Any]] = []

    def score(mask: np.ndarray, cls: int | None) -> float | None:
        if probs is None:
            return None if cls is None or class_scores is None or cls not in class_scores else float(class_scores[cls])
        p = (1.0 - probs[0]) if cls is None else probs[cls]
        return float(p[mask].mean()) if mask.any() else None

    def add(kind: str, label: str, mask: np.ndarray, cls: int | None) -> None:
        e: dict[str, Any] = {"label": label, "mask": mask, "score": score(mask, cls)}
        if subtask == "panoptic":
            e["kind"] = kind
        out.append(e)

    if task == "instance":  # an instance model: ids are objects of its (first) class
        name = next(iter(names.values()), "object")
        if subtask in ("semantic", "panoptic") and (labels > 0).any():
            add("class", name, labels > 0, None)
        if subtask in ("instance", "panoptic"):
            for i in (int(v) for v in np.unique(labels) if v):
                add("object", name, labels == i, None)
        return out
    present = [int(v) for v in np.unique(labels) if v]
    if subtask in ("semantic", "panoptic"):
        for c in present:
            add("class", names.get(c, str(c)), labels == c, c)
    if subtask in ("instance", "panoptic"):
        structure = np.ones((3,) * labels.ndim, dtype=bool)
        for c in present:
            cc, n = ndimage.label(labels == c, structure=structure)
            for i in range(1, n + 1):
                add("object", names.get(c, str(c)), cc == i, c)
    return out


def class_probabilities(image: Any, model: Any, *, device: str = "cpu") -> np.ndarray | None:
    """Softmax probabilities ``(C, *spatial)`` of a medseg model on ``image``'s grid (None when
    MONAI cannot bring them back onto exactly that grid)."""
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Invertd

    from medseg.inference.segmentation import _SliceWise, resolve_device
    from medseg.transforms.presets import preprocessing

    dev = resolve_device(device)
    pre = preprocessing(model.preset, keys=("image",), **dict(model.preset_overrides))
    src = MetaTensor(image.as_tensor().to(torch.float32), affine=torch.as_tensor(image.affine).clone(),
                     meta={k: v for k, v in image.meta.items() if k in ("filename_or_obj", "space")})
    src.applied_operations = []
    x = pre({"image": src})["image"]
    net = model.network.eval().to(dev)
    slice_mode = model.spatial_dims == 2 and x.ndim - 1 == 3
    predictor = _SliceWise(net) if slice_mode else net
    roi = (*model.roi_size, 1) if slice_mode else tuple(model.roi_size)
    with torch.no_grad():
        logits = sliding_window_inference(x.as_tensor()[None].to(dev), roi, model.sw_batch_size, predictor,
                                          overlap=model.overlap, mode="gaussian")
    logits = logits[0] if not isinstance(logits, (list, tuple)) else logits[0][0]
    if logits.shape[0] == 1:
        p1 = torch.sigmoid(logits.float())
        prob = torch.cat([1 - p1, p1], 0)
    else:
        prob = torch.softmax(logits.float(), 0)
    pm = MetaTensor(prob.cpu(), affine=x.affine.clone(), meta={k: copy.deepcopy(v) for k, v in x.meta.items()
                                                               if k != "affine"})
    pm.applied_operations = copy.deepcopy(x.applied_operations)
    inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False,
                  to_tensor=True)({"image": x, "pred": pm})["pred"]
    if tuple(inv.shape[1:]) != tuple(image.shape[1:]):
        return None
    return np.asarray(inv.detach().cpu().numpy(), dtype=np.float32)
