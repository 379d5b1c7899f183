"""The configs of a MONAI bundle, written from a medseg model: ``network_def`` (MONAI's own
network class when it reproduces the state dict, else medseg's factory), the preset's
preprocessing as MONAI transforms (checked on a probe image, else medseg's preset), the label-map
postprocessing of the MONAI path (voxel-identical to medseg's), and ``inference.json``,
``train.json`` and ``evaluate.json`` in the MONAI model-zoo conventions.

Pure functions from specs to JSON-able dicts; :mod:`medseg.bundle.build` writes them to disk.
Size (~400 lines): one concern, the five configs, which share the network/preprocessing entries
and the postprocessing plan they are built from; split further they would import each other.
"""

from __future__ import annotations

import enum
import inspect
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
_ARCH_TARGETS = {"unet": "monai.networks.nets.UNet", "dynunet": "monai.networks.nets.DynUNet",
                 "segresnet": "monai.networks.nets.SegResNet"}
_PARAM_ALIASES = {"spatial_dims": ("dimensions", "spatial_dims")}
_PRESET_MODALITY = {"ct": ("CT", "hounsfield"), "mr": ("MR", "magnitude"), "xray": ("CR", "magnitude"),
                    "fluo": ("microscopy", "magnitude")}
_SKIP_IN_CONFIG = {"LoadImaged", "EnsureChannelFirstd"}


def preset_modality(preset: str) -> tuple[str, str]:
    """(modality, image format) a preset is for, as the bundle metadata names them."""
    return _PRESET_MODALITY.get(preset.split("_", 1)[0], ("n/a", "magnitude"))


class _NotSerializable(Exception):
    pass


def _jsonable(value: Any) -> Any:
    """A JSON value MONAI's ConfigParser turns back into ``value`` (or _NotSerializable)."""
    import torch

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            raise _NotSerializable("non-finite float")
        return v
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and np.all(np.isnan(value)):
            return None
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, torch.dtype):
        name = str(value).replace("torch.", "")
        if name not in {"float16", "float32", "float64", "int64", "uint8"}:
            raise _NotSerializable(f"dtype {value}")
        return f"$torch.{name}"
    if isinstance(value, type) and issubclass(value, np.generic):
        return np.dtype(value).name
    if isinstance(value, np.dtype):
        return value.name
    raise _NotSerializable(type(value).__name__)


def _find_attr(obj: Any, name: str) -> Any:
    import monai.transforms as mt

    for cand in _PARAM_ALIASES.get(name, (name,)) + (f"_{name}",):
        if hasattr(obj, cand):
            return getattr(obj, cand)
    for v in vars(obj).values():
        if isinstance(v, mt.Transform) and not isinstance(v, type):
            for cand in (name, f"_{name}"):
                if hasattr(v, cand):
                    return getattr(v, cand)
    return inspect.Parameter.empty


def _as_config(obj: Any, target: str) -> dict[str, Any]:
    """``{"_target_": target, **non-default constructor arguments}`` recovered from ``obj``."""
    entry: dict[str, Any] = {"_target_": target}
    for name, prm in inspect.signature(type(obj).__init__).parameters.items():
        if name == "self" or prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
            continue
        value = _find_attr(obj, name)
        if value is inspect.Parameter.empty:
            if prm.default is inspect.Parameter.empty:
                raise _NotSerializable(f"{target}: argument {name} not recoverable")
            continue
        conv = _jsonable(value)
        if prm.default is not inspect.Parameter.empty:
            try:
                default = _jsonable(prm.default)
            except _NotSerializable:
                default = object()
            if conv == default or (isinstance(conv, list) and len(conv) == 1 and conv[0] == default):
                continue
        entry[name] = conv
    return entry


def _parse(config: Any, key: str = "x") -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser({key: config})
    return parser.get_parsed_content(key)


def network_def(spec: Mapping[str, Any], state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The ``network_def`` entry for ``spec``: MONAI's class and arguments, proven equal.

    The MONAI entry is instantiated, loaded with ``state_dict`` and compared on a random input
    with the network medseg builds from ``spec``; if anything differs, the entry falls back to
    ``{"_target_": "medseg.models.build_network", "spec": spec}``.
    """
    import torch

    from medseg.models import build_network

    ours = build_network(dict(spec))
    ours.load_state_dict(state_dict, strict=True)
    fallback = {"_target_": "medseg.models.build_network", "spec": json.loads(json.dumps(dict(spec)))}
    target = _ARCH_TARGETS.get(str(spec.get("arch", "")).lower())
    if target is None or f"{type(ours).__module__.split('.')[0]}.networks.nets.{type(ours).__name__}" != target:
        return fallback
    try:
        entry = _as_config(ours, target)
        theirs = _parse(entry)
        theirs.load_state_dict(state_dict, strict=True)
    except (_NotSerializable, RuntimeError, TypeError, ValueError, KeyError):
        return fallback
    dims = int(spec.get("spatial_dims", 3))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, int(spec.get("in_channels", 1))) + (32,) * dims, generator=gen)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    a = a[0] if isinstance(a, (list, tuple)) else a
    b = b[0] if isinstance(b, (list, tuple)) else b
    if a.shape != b.shape or not torch.allclose(a, b, atol=1e-6):
        return fallback
    return entry


def _probe_image(dims: int, modality: str):
    """A small deterministic MetaTensor with an LPS-like (flipped, anisotropic) affine."""
    import torch
    from monai.data import MetaTensor

    rng = np.random.default_rng(0)
    shape = (24, 20, 12) if dims == 3 else (40, 32)
    arr = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
    if modality == "CT":
        arr = arr * 300.0 - 200.0
    else:
        arr = np.abs(arr) * 500.0
    affine = np.eye(4)
    if dims == 3:
        affine[:3, :3] = np.diag([-0.8, -0.9, 2.5])
        affine[:3, 3] = [40.0, 30.0, -10.0]
    else:
        affine[:2, :2] = np.diag([0.7, 0.7])
    return MetaTensor(torch.from_numpy(arr)[None], affine=torch.from_numpy(affine),
                      meta={"space": "RAS", "filename_or_obj": "probe.nii.gz"})


def preprocessing_config(preset: str, dims: int, modality: str,
                         overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The preset's transforms as MONAI ``_target_`` entries (without the loader).

    Proven equal to :func:`medseg.transforms.presets.preprocessing` on a probe image (values and
    affine); else a single ``medseg.transforms.presets.preprocessing`` entry.
    """
    import monai.transforms as mt
    import torch

    from medseg.transforms.presets import preprocessing

    overrides = json.loads(json.dumps(dict(overrides or {})))
    compose = preprocessing(preset, keys=("image",), **overrides)
    fallback = [{"_target_": "medseg.transforms.presets.preprocessing", "name": preset, "keys": ["image"],
                 **overrides}]
    entries = []
    try:
        for t in compose.transforms:
            name = type(t).__name__
            if name in _SKIP_IN_CONFIG:
                continue
            if getattr(mt, name, None) is not type(t):
                return fallback
            entries.append(_as_config(t, name))
        rebuilt = _parse({"_target_": "Compose", "transforms": entries})
    except (_NotSerializable, RuntimeError, TypeError, ValueError, KeyError):
        return fallback
    probe = _probe_image(dims, modality)
    a = compose({"image": probe.clone()})["image"]
    b = rebuilt({"image": probe.clone()})["image"]
    if a.shape != b.shape or not torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=1e-5) or not \
            torch.allclose(torch.as_tensor(a.affine), torch.as_tensor(b.affine), atol=1e-6):
        return fallback
    return entries


MEDSEG_POSTPROCESS_TARGET = "medseg.transforms.monai_postprocess.MedsegPostprocessd"


def monai_postprocess_plan(postprocess: Mapping[str, Any], *, task: str = "semantic",
                           labels: Mapping[str, Any] | None = None, n_out: int = 2) -> list[dict[str, Any]]:
    """The label-map steps of the MONAI path (between ``AsDiscreted`` and ``Invertd``): the same
    operations as medseg's postprocessing, none left out.

    ``keep_largest_component`` alone is MONAI's ``KeepLargestConnectedComponentd`` (face
    connectivity, one component per class: the same voxels as medseg's). Any other operation
    (``min_component_mm3``, ``fill_holes``, ``instance``, ...) has no voxel-identical MONAI
    transform (MONAI's ``FillHolesd`` also overwrites other classes inside a hole and its
    ``RemoveSmallObjectsd`` counts all pieces of a label as one object), so the whole dict runs
    through medseg's own ``MedsegPostprocessd`` in medseg's order (a ``_target_`` the bundle trust
    policy, :mod:`medseg.bundle.trust`, accepts, so medseg loads the bundle without
    ``--trust-bundle``). ``task="instance"``
    labels instances even without an ``instance`` entry (medseg's defaults), as medseg does. The
    same transform also zeroes argmax indices that are not labels (``n_out`` > labels + 1).
    """
    label_ids = sorted(int(k) for k in (labels or {}))
    postprocess = dict(postprocess)
    others = sorted(set(postprocess) - {"keep_largest_component"} | ({"instance"} if task == "instance" else set()))
    unlabelled = n_out > 1 and bool(label_ids) and bool(set(range(1, n_out)) - set(label_ids))
    if others or unlabelled:
        entry: dict[str, Any] = {"_target_": MEDSEG_POSTPROCESS_TARGET, "keys": "pred",
                                 "postprocess": json.loads(json.dumps(postprocess)), "task": task}
        if unlabelled:
            entry["labels"] = label_ids
        if "lung_field" in postprocess:  # looks at the image the network read, on the same grid
            entry["image_key"] = "image"
        return [entry]
    steps = []
    lcc = postprocess.get("keep_largest_component")
    if lcc:
        # medseg keeps the largest face-connected component per class: MONAI's equivalent
        steps.append({"_target_": "KeepLargestConnectedComponentd", "keys": "pred",
                      "applied_labels": [int(v) for v in lcc] if isinstance(lcc, list) else None,
                      "is_onehot": False, "independent": True, "connectivity": 1})
    return steps


def _output_dtype(labels: Mapping[str, Any] | None, instances: bool) -> str:
    """SaveImaged dtype: int32 for instance IDs (any count), else the smallest type for the labels."""
    if instances:
        return "int32"
    top = max((int(k) for k in (labels or {})), default=1)
    return "uint8" if top <= 255 else "uint16" if top <= 65535 else "int32"


def _postprocessing(n_out: int, postprocess: Mapping[str, Any], labels: Mapping[str, Any] | None = None,
                    task: str = "semantic") -> list[dict[str, Any]]:
    if n_out == 1:
        head = [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5}]
    else:
        head = [{"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]
    extra = monai_postprocess_plan(postprocess, task=task, labels=labels, n_out=n_out)
    instances = task == "instance" or "instance" in postprocess
    # medseg postprocesses on the network's grid, then inverts: same order here
    return head + extra + [
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": True, "to_tensor": True},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
         "output_dtype": _output_dtype(labels, instances), "resample": False, "separate_folder": False,
         "print_log": False},
    ]


def inference_config(net_def: dict, pre: list[dict], roi: list[int], overlap: float, sw_batch: int,
                     n_out: int, postprocess: Mapping[str, Any], labels: Mapping[str, Any] | None = None,
                     task: str = "semantic") -> dict[str, Any]:
    """``configs/inference.json`` in the MONAI model-zoo convention (postprocess as in
    :func:`monai_postprocess_plan`: the same label map as ``medseg segment``)."""
    return {
        "imports": ["$import glob"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "ensure_channel_first": True, "image_only": True},
                *pre,
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": roi, "sw_batch_size": sw_batch,
                    "overlap": overlap, "mode": "gaussian", "sigma_scale": 0.125},
        "postprocessing": {"_target_": "Compose", "transforms": _postprocessing(n_out, postprocess, labels, task)},
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
             "load_dict": {"model": "@network"}, "strict": True, "map_location": "@device"},
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
        "finalize": [],
    }


def train_config(net_def: dict, pre: list[dict], roi: list[int], n_out: int) -> dict[str, Any]:
    """``configs/train.json``: MSD layout under ``dataset_dir`` (imagesTr/, labelsTr/)."""
    label_pre = []
    for e in pre:
        e = dict(e)
        if e["_target_"] in {"Orientationd", "Spacingd", "Resized", "SpatialPadd"}:
            e["keys"] = ["image", "label"]
            if "mode" in e or e["_target_"] in {"Spacingd", "Resized"}:
                e["mode"] = ["bilinear" if e["_target_"] == "Spacingd" else "area", "nearest"]
        label_pre.append(e)
    keys = ["image", "label"]
    return {
        "imports": ["$import glob"],
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "images": "$list(sorted(glob.glob(@dataset_dir + '/imagesTr/*.nii*')))",
        "labels": "$list(sorted(glob.glob(@dataset_dir + '/labelsTr/*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": n_out > 1, "softmax": n_out > 1,
                 "sigmoid": n_out == 1},
        "optimizer": {"_target_": "torch.optim.AdamW", "params": "$@network.parameters()", "lr": 1e-3},
        "max_epochs": 100,
        "train": {
            "preprocessing": {"_target_": "Compose", "transforms": [
                {"_target_": "LoadImaged", "keys": keys, "ensure_channel_first": True, "image_only": True},
                *label_pre,
                {"_target_": "SpatialPadd", "keys": keys, "spatial_size": roi},
                {"_target_": "RandCropByPosNegLabeld", "keys": keys, "label_key": "label",
                 "spatial_size": roi, "pos": 1, "neg": 1, "num_samples": 2},
                {"_target_": "RandFlipd", "keys": keys, "prob": 0.5, "spatial_axis": 0},
            ]},
            "dataset": {"_target_": "Dataset",
                        "data": "$[{'image': i, 'label': l} for i, l in zip(@images, @labels)]",
                        "transform": "@train::preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train::dataset", "batch_size": 2,
                           "shuffle": True, "num_workers": 0},
            "inferer": {"_target_": "SimpleInferer"},
            "handlers": [
                {"_target_": "StatsHandler", "tag_name": "train_loss",
                 "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"},
                {"_target_": "CheckpointSaver", "save_dir": "@ckpt_dir", "save_dict": {"model": "@network"},
                 "save_final": True, "final_filename": "model.pt"},
            ],
            "trainer": {"_target_": "SupervisedTrainer", "max_epochs": "@max_epochs", "device": "@device",
                        "train_data_loader": "@train::dataloader", "network": "@network", "loss_function": "@loss",
                        "optimizer": "@optimizer", "inferer": "@train::inferer",
                        "train_handlers": "@train::handlers", "amp": False},
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@train::trainer.run()"],
        "finalize": [],
    }


def evaluate_config(pre: list[dict], n_out: int, postprocess: Mapping[str, Any],
                    labels: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``configs/evaluate.json``: merged over inference.json (``--config_file "['configs/inference.json',
    'configs/evaluate.json']"``); reads ``imagesTs/`` + ``labelsTs/`` and reports the mean Dice on the
    source grid (prediction inverted, label read as stored). The Dice is semantic: instance
    labelling is left out here."""
    post = _postprocessing(n_out, {k: v for k, v in postprocess.items() if k != "instance"}, labels)
    return {
        "labels": "$list(sorted(glob.glob(@dataset_dir + '/labelsTs/*.nii*')))",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii*')))",
        "dataset": {"_target_": "Dataset",
                    "data": "$[{'image': i, 'label': l} for i, l in zip(@datalist, @labels)]",
                    "transform": "@preprocessing"},
        # the label is read as stored (source grid) and left alone; only the image is preprocessed
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": ["image", "label"], "ensure_channel_first": True,
             "image_only": True},
            *pre,
        ]},
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "key_metric": {"val_mean_dice": {"_target_": "MeanDice", "include_background": False,
                                         "num_classes": max(n_out, 2),
                                         "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "key_val_metric": "@key_metric", "val_handlers": "@handlers", "amp": False},
    }
