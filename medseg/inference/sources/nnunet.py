"""nnU-Net v2 trained-model folders as a model source: results equal to ``nnUNetv2_predict``.

The folder is the one nnU-Net writes under ``nnUNet_results/DatasetXXX/<trainer>__<plans>__<config>/``
(``plans.json``, ``dataset.json``, ``fold_N/checkpoint_final.pth``). medseg runs it through
nnunetv2's own preprocessing (crop to nonzero, the plans' normalisation schemes, resampling with
a separate z axis for anisotropic spacing, ``transpose_forward``) and its sliding window (Gaussian,
mirroring, half-precision accumulation, ensembles of folds by averaged logits); the export
(resampling back, argmax, un-cropping, ``transpose_backward``) is nnU-Net's, run one class at a
time with a running argmax (:mod:`medseg.inference.sources.nnunet_export`: identical labels,
without nnU-Net's all-class float64 and source-grid copies): nnunetv2 is a run-time dependency
(``pip install medseg[nnunet]``, see ``requirements-nnunet.txt``), as MONAI is for medseg's own
models. What medseg adds is around it:

* **Geometry.** nnU-Net works in the array space of the file as its reader returns it
  (``SimpleITKIO`` / ``NibabelIO``: the voxel array in (k, j, i) order with the spacing from the
  header, the direction ignored). A medseg image is ``(C, i, j, k)`` with a voxel -> RAS affine,
  whatever format or orientation it came from, so the array nnU-Net sees is that tensor with its
  spatial axes reversed and the spacing the norms of the affine's columns, reversed. The labels
  come back through the same reversal onto exactly the source grid (affine and shape of the
  input), so oblique and flipped inputs (LPS vs RAS) give what ``nnUNetv2_predict`` writes for the
  same file.
* **Safe loading.** Checkpoints are pickles. They are read with ``torch.load(weights_only=True)``
  and only the globals in :func:`safe_globals` (numpy scalar and dtype reconstruction); a
  checkpoint naming anything else is refused with one line and nothing of it runs. The plans'
  network class must live in ``dynamic_network_architectures.architectures`` and every class
  the plans name for it (conv, norm, dropout, nonlinearity) in ``torch.nn``: ``plans.json`` is
  data from the internet, and nnU-Net would import and call whatever it names.
* **Refused with one line:** region-based models (labels given as regions), cascades
  (``3d_cascade_fullres``, which need the low-resolution stage's output), readers other than
  ``SimpleITKIO`` / ``NibabelIO`` (e.g. ``NibabelIOWithReorient``, 2D picture readers), and 2D
  inputs.

The network is built from the plans as nnU-Net's stock ``nnUNetTrainer`` builds it (the
checkpoint's trainer name is recorded, not imported): trainers that build another network than
the plans describe are not supported.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg._hashing import sha256_file
from medseg.errors import ConfigError, ModelError
from medseg.geometry import spacing_of
from medseg.inference.result import InferenceRecord, Prediction, label_meta
from medseg.inference.sources.base import InfersLabels, ModelInfo
from medseg.inference.sources.nnunet_export import logits_to_labels
from medseg.io.jsonfile import read_json_object

log = logging.getLogger(__name__)

CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
SUPPORTED_READERS = ("SimpleITKIO", "NibabelIO")
_NET_PREFIX = "dynamic_network_architectures.architectures."
_UNSUPPORTED_GLOBAL = re.compile(r"(?:Unsupported global|unsupported GLOBAL): (?:GLOBAL )?([\w.]+)")


@dataclass(frozen=True)
class NnunetOptions:
    """``nnUNetv2_predict``'s options that change the result (its defaults here).

    folds: fold numbers (ints) or ``("all",)``; None: every ``fold_N`` holding the checkpoint
        (``fold_all`` when there is none), which for a complete 5-fold model is
        ``nnUNetv2_predict``'s default ``-f 0 1 2 3 4``.
    checkpoint: ``"final"`` (``checkpoint_final.pth``) or ``"best"`` (``checkpoint_best.pth``).
    tta: mirroring along the axes the checkpoint allows (``--disable_tta`` turns it off).
    step_size: sliding-window step as a fraction of the patch size (0 < step <= 1).
    """

    folds: tuple[int | str, ...] | None = None
    checkpoint: str = "final"
    tta: bool = True
    step_size: float = 0.5

    def __post_init__(self) -> None:
        if self.checkpoint not in CHECKPOINTS:
            raise ConfigError(f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, got {self.checkpoint!r}")
        if not 0 < float(self.step_size) <= 1:
            raise ConfigError(f"--step-size must be in (0, 1], got {self.step_size}")
        if self.folds is not None:
            folds: list[int | str] = []
            for f in self.folds:
                text = str(f).strip()
                if text == "all":
                    folds.append("all")
                elif text.isdigit():
                    folds.append(int(text))
                else:
                    raise ConfigError(f"--folds takes fold numbers or 'all', got {text!r}")
            if not folds:
                raise ConfigError("--folds needs at least one fold")
            object.__setattr__(self, "folds", tuple(dict.fromkeys(folds)))

    @property
    def is_default(self) -> bool:
        return self == NnunetOptions()


def safe_globals() -> list[Any]:
    """The globals a checkpoint written by nnU-Net may name besides torch's own tensor types:
    numpy scalars (``_best_ema``, the logged losses) and the dtypes they carry. Nothing that can
    call code: ``numpy.core.multiarray.scalar`` only builds a number from its bytes."""
    import numpy

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    out: list[Any] = [scalar, numpy.dtype]
    dtypes = getattr(numpy, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                     "BoolDType", "UInt8DType", "Int16DType"):
            if hasattr(dtypes, name):
                out.append(getattr(dtypes, name))
    return out


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read an nnU-Net checkpoint without running pickled code (one-line ModelError otherwise)."""
    import pickle
    import warnings

    import torch

    where = f"{path.parent.name}/{path.name}"
    try:
        with torch.serialization.safe_globals(safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on a foreign pickle protocol: the error says it
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = _UNSUPPORTED_GLOBAL.search(str(exc))
        what = f" ({m.group(1)})" if m else ""
        raise ModelError(f"{where} refused: the checkpoint names a Python object outside the safe list{what}; "
                         "it was not loaded") from None
    except Exception as exc:  # junk bytes: torch's unpickler raises KeyError, IndexError, struct.error, ...
        raise ModelError(f"{where} cannot be read as a torch checkpoint ({type(exc).__name__})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("network_weights"), dict):
        raise ModelError(f"{where} holds no network_weights: not an nnU-Net v2 checkpoint")
    return data


def _locate_module_class(name: str, prefix: str, what: str):
    import pydoc

    import torch

    if not isinstance(name, str) or not name.startswith(prefix):
        raise ModelError(f"plans.json: {what} {name!r} is not under {prefix.rstrip('.')}; refused")
    obj = pydoc.locate(name)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise ModelError(f"plans.json: {what} {name!r} is not a torch module class")
    return obj


def build_network(configuration_manager, in_channels: int, out_channels: int):
    """The network the stock ``nnUNetTrainer.build_network_architecture`` builds from the plans,
    with every class name checked against the allow-list first (see the module docstring)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    cls_name = configuration_manager.network_arch_class_name
    _locate_module_class(cls_name, _NET_PREFIX, "network class")
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    req = list(configuration_manager.network_arch_init_kwargs_req_import)
    for key in req:
        if kwargs.get(key) is not None:
            _locate_module_class(kwargs[key], "torch.nn.", f"architecture entry {key!r}")
    try:
        return get_network_from_plans(cls_name, kwargs, req, in_channels, out_channels, allow_init=True,
                                      deep_supervision=False)
    except (TypeError, ValueError, KeyError, ImportError) as exc:
        raise ModelError(f"plans.json: the network cannot be built ({type(exc).__name__})") from None


@contextlib.contextmanager
def _quiet():
    """nnunetv2 prints to stdout (paths not set, device notes); medseg's stdout is its results."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    text = buf.getvalue().strip()
    if text:
        log.debug("nnunetv2: %s", " | ".join(text.splitlines())[:2000])


class NnunetV2Source(InfersLabels):
    """An nnU-Net v2 trained-model folder (see the module docstring)."""

    kind = "nnunet_v2"
    task = "semantic"

    def __init__(self, folder: str | Path, options: NnunetOptions | None = None) -> None:

        with _quiet():
            from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
            from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.folder = Path(folder)
        self.options = options or NnunetOptions()
        name = self.folder.name
        self.plans = read_json_object(self.folder / "plans.json", error=ModelError, name=f"plans.json in {name}")
        self.dataset_json = read_json_object(self.folder / "dataset.json", error=ModelError,
                                             name=f"dataset.json in {name}")
        ckpt_name = CHECKPOINTS[self.options.checkpoint]
        self.folds = self._folds(ckpt_name)
        checkpoints = [load_checkpoint(self.folder / f"fold_{f}" / ckpt_name) for f in self.folds]
        first = checkpoints[0]
        init_args = first.get("init_args") if isinstance(first.get("init_args"), dict) else {}
        self.configuration = str(init_args.get("configuration") or name.rsplit("__", 1)[-1])
        self.trainer_name = str(first.get("trainer_name") or "unknown")
        mirror = first.get("inference_allowed_mirroring_axes")
        self.mirror_axes = tuple(int(a) for a in mirror) if mirror is not None else None
        reader = str(self.plans.get("image_reader_writer", "SimpleITKIO"))
        if reader not in SUPPORTED_READERS:
            raise ModelError(f"{name}: the plans read images with {reader}; medseg supports nnU-Net models "
                             f"whose reader is {' or '.join(SUPPORTED_READERS)}")
        try:
            self.plans_manager = PlansManager(self.plans)
            self.configuration_manager = self.plans_manager.get_configuration(self.configuration)
            self.label_manager = self.plans_manager.get_label_manager(self.dataset_json)
        except (KeyError, ValueError, TypeError, RuntimeError, AssertionError) as exc:
            raise ModelError(f"{name}: plans.json/dataset.json do not describe configuration "
                             f"{self.configuration!r} ({type(exc).__name__}: {str(exc)[:80]})") from None
        if self.label_manager.has_regions:
            raise ModelError(f"{name}: region-based nnU-Net models (labels given as regions) are not supported")
        if self.configuration_manager.previous_stage_name is not None:
            raise ModelError(f"{name}: {self.configuration} is a cascade stage (it needs the "
                             f"{self.configuration_manager.previous_stage_name} predictions); cascades are not supported")
        self.in_channels = int(determine_num_input_channels(self.plans_manager, self.configuration_manager,
                                                            self.dataset_json))
        self.network = build_network(self.configuration_manager, self.in_channels,
                                     int(self.label_manager.num_segmentation_heads))
        self.parameters = []
        for f, ck in zip(self.folds, checkpoints, strict=True):
            try:
                self.network.load_state_dict(ck["network_weights"])
            except RuntimeError as exc:
                first_line = str(exc).strip().splitlines()[0][:160]
                raise ModelError(f"{name}/fold_{f}: the weights do not fit the network in plans.json "
                                 f"({first_line})") from None
            self.parameters.append(ck["network_weights"])
        self.network.eval()
        names = {}
        for key, value in dict(self.dataset_json.get("labels") or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                names[value] = str(key)
        self.labels = {int(k): names.get(int(k), f"label_{k}") for k in self.label_manager.foreground_labels}
        self.name = name
        self.weights_sha256 = self._digest(ckpt_name)
        # nnU-Net swaps each fold's weights into the one network; concurrent cases (batch
        # --workers) must not interleave that
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, *, trust: bool = False, options: NnunetOptions | None = None) -> NnunetV2Source:
        """Load the folder (``trust`` changes nothing: weights are never unpickled as code)."""
        return cls(path, options)

    def _folds(self, ckpt_name: str) -> tuple[int | str, ...]:
        name = self.folder.name
        if self.options.folds is not None:
            for f in self.options.folds:
                if not (self.folder / f"fold_{f}" / ckpt_name).is_file():
                    raise ModelError(f"{name}: fold_{f}/{ckpt_name} does not exist")
            return tuple(self.options.folds)
        found = sorted(int(p.name[5:]) for p in self.folder.glob("fold_*")
                       if p.name[5:].isdigit() and (p / ckpt_name).is_file())
        if found:
            return tuple(found)
        if (self.folder / "fold_all" / ckpt_name).is_file():
            return ("all",)
        raise ModelError(f"{name}: no fold_*/{ckpt_name}; train first or choose --checkpoint")

    def _digest(self, ckpt_name: str) -> str:
        """sha256 over plans.json, dataset.json and each fold's checkpoint (all decide the result)."""
        h = hashlib.sha256()
        for part in (self.folder / "plans.json", self.folder / "dataset.json",
                     *(self.folder / f"fold_{f}" / ckpt_name for f in self.folds)):
            h.update(f"{part.relative_to(self.folder).as_posix()}\0{sha256_file(part)}\n".encode())
        return h.hexdigest()

    def describe(self) -> ModelInfo:
        cm = self.configuration_manager
        channels = dict(self.dataset_json.get("channel_names") or self.dataset_json.get("modality") or {})
        modality = tuple(str(channels.get(str(i), channels.get(i, "unknown"))) for i in range(self.in_channels))
        return ModelInfo(
            kind=self.kind, name=self.name, labels=dict(self.labels), channels=self.in_channels,
            modality=modality, spacing_mm=tuple(float(s) for s in cm.spacing),
            spatial_dims=len(cm.patch_size),
            details={"configuration": self.configuration, "trainer": self.trainer_name,
                     "plans": str(self.plans.get("plans_name", "")), "folds": list(self.folds),
                     "checkpoint": CHECKPOINTS[self.options.checkpoint], "tta_mirroring": self.options.tta,
                     "mirror_axes": list(self.mirror_axes) if self.mirror_axes is not None else None,
                     "step_size": float(self.options.step_size), "patch_size": [int(p) for p in cm.patch_size],
                     "normalization": list(cm.normalization_schemes),
                     "transpose_forward": list(self.plans_manager.transpose_forward),
                     "nnunetv2": _version("nnunetv2")})

    def infer(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Prediction:
        """Labels of ``image`` on its own grid, as ``nnUNetv2_predict`` gives them for the same file.

        ``amp`` is not used: nnU-Net's predictor autocasts on CUDA and runs float32 on the CPU,
        and medseg keeps that so that results stay equal.
        """
        import torch
        from monai.data import MetaTensor

        from medseg.inference.segmentation import resolve_device

        if not isinstance(image, MetaTensor):
            raise ModelError("an nnU-Net model needs a MetaTensor with an affine (use medseg.io.load)")
        if image.ndim != 4:
            raise ModelError(f"nnU-Net models in medseg take 3D volumes; got {image.ndim - 1} spatial axes")
        if image.shape[0] != self.in_channels:
            raise ModelError(f"{self.name} expects {self.in_channels} input channel(s), the image has {image.shape[0]}")
        dev = resolve_device(device)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        affine = np.asarray(image.affine, dtype=np.float64)
        spacing_ijk = np.asarray(spacing_of(affine, 3))
        data = np.ascontiguousarray(image.as_tensor().detach().cpu().numpy().astype(np.float32).transpose(0, 3, 2, 1))
        props = {"spacing": [float(s) for s in spacing_ijk[::-1]]}
        with self._lock, _quiet():
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            predictor = nnUNetPredictor(tile_step_size=float(self.options.step_size), use_gaussian=True,
                                        use_mirroring=bool(self.options.tta),
                                        perform_everything_on_device=dev.type == "cuda", device=dev,
                                        verbose=False, verbose_preprocessing=False, allow_tqdm=progress)
            predictor.manual_initialization(self.network, self.plans_manager, self.configuration_manager,
                                            self.parameters, self.dataset_json, self.trainer_name, self.mirror_axes)
            timings["setup"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            # nnU-Net's preprocessing and sliding window as predict_single_npy_array runs them; the
            # input copies are dropped before the export, which goes class by class (nnunet_export)
            pre = self.configuration_manager.preprocessor_class(verbose=False)
            pre_data, _, props = pre.run_case_npy(data, None, props, self.plans_manager,
                                                  self.configuration_manager, self.dataset_json)
            del data
            logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(pre_data)).cpu()
            del pre_data
            timings["inference"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            seg = logits_to_labels(logits, props, self.plans_manager, self.configuration_manager,
                                   self.label_manager)
            del logits
        timings["export"] = time.perf_counter() - t0
        seg = np.asarray(seg)
        if seg.shape != tuple(image.shape[1:][::-1]):
            raise ModelError(f"nnU-Net returned shape {seg.shape} for input {tuple(image.shape[1:][::-1])}; "
                             "please report it")
        out_dtype = torch.uint8 if max(self.labels, default=0) <= 255 else torch.int16
        values = torch.from_numpy(np.ascontiguousarray(seg.transpose(2, 1, 0)))[None].to(out_dtype)
        out = MetaTensor(values, affine=torch.as_tensor(affine, dtype=torch.float64),
                         meta=label_meta(image, labels=self.labels, task=self.task, spacing=spacing_ijk))
        out.applied_operations = []
        return Prediction(out, InferenceRecord(device=str(dev), tta=bool(self.options.tta), timings_s=timings))


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "unknown"


def nnunet_available() -> bool:
    """Whether nnunetv2 (the ``medseg[nnunet]`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("nnunetv2") is not None


def require_nnunet(folder: Path) -> None:
    if not nnunet_available():
        raise ConfigError(f"{folder.name} is an nnU-Net v2 model folder; running it needs nnunetv2: "
                          "pip install -e '.[nnunet]' -c constraints.txt && pip install --no-deps -r "
                          "requirements-nnunet.txt (make env does both)")
