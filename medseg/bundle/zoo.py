"""MONAI Model Zoo bundles run as published: the bundle's own preprocessing, network, inferer and
postprocessing (with its inversion), medseg's geometry around them.

A zoo bundle has no ``configs/medseg.json``; medseg does not translate it into presets (that
lost agreement: the zoo's spleen bundle inverts probabilities, then takes the argmax). Instead
:class:`ZooBundleSource` does what ``python -m monai.bundle run`` does with one case, step by
step, with MONAI's own functions:

1. the input image (a MetaTensor from :func:`medseg.io.load`, any format, DICOM included) is
   written to a private temporary folder as NIfTI (one file per channel when it has several, the
   datalist convention of the zoo's multi-channel MR bundles) -- the file the bundle reads;
2. ``preprocessing`` of the inference config on ``{"image": that file}``, collated as its
   DataLoader does (:func:`monai.data.list_data_collate`);
3. ``inferer(image, network_def)`` under ``torch.no_grad()`` (autocast on CUDA when the
   bundle's evaluator sets ``amp``), the network in eval mode;
4. ``decollate_batch`` and ``postprocessing`` on the merged batch/output item
   (:func:`monai.engines.utils.engine_apply_transform`, as ``SupervisedEvaluator`` does), with
   the writers (``SaveImage``/``SaveImaged``) taken out: medseg writes the result itself;
5. the ``pred`` it ends with lies on the grid of the file read (the bundle's ``Invertd``), i.e.
   on the source grid of the input: it is checked (shape and affine) and returned with the
   input's affine.

The weights are those the bundle's ``CheckpointLoader`` names (``load_path``, which must lie in
the bundle), checked against ``models/sha256sums.txt`` or the zoo's ``large_files.yml`` (md5 or
sha256) when either lists them (a mismatch is refused), and read with ``weights_only=True``:
medseg never runs the bundle's checkpoint loader (a plain ``torch.load``). The bundle's
``initialize``/``run``/``finalize`` sections and its ``evaluator`` are never evaluated.

Trust: the configs medseg evaluates (``metadata.json`` and the inference config, alone: the
bundle's train/evaluate/multi-GPU/TensorRT configs are never merged in) pass
:func:`medseg.bundle.trust.ensure_trusted` before anything is evaluated, unless ``trust=True``
(``--trust-bundle``). ``medseg bundle verify`` reports on every config.

Size (~450 lines, a third of it this description): one concern, running one zoo bundle as
published (its checkpoint, imports, inference pipeline and their checks belong together).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from medseg.errors import BundleError, ModelError
from medseg.inference.sources.base import InfersLabels

INFERENCE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
_SAVERS = ("SaveImage", "SaveImaged")


def inference_config_name(configs: dict[str, Any]) -> str | None:
    """The inference config a zoo bundle runs (JSON first, then YAML), or None."""
    return next((n for n in INFERENCE_CONFIGS if n in configs), None)


def is_zoo_bundle(bundle_dir: Path) -> bool:
    """A bundle without ``configs/medseg.json`` but with an inference config."""
    cfg = Path(bundle_dir) / "configs"
    return not (cfg / "medseg.json").is_file() and any((cfg / n).is_file() for n in INFERENCE_CONFIGS)


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def listed_hash(bundle_dir: Path, rel: str) -> tuple[str, str, str] | None:
    """``(algorithm, hex, where)`` for ``rel`` from ``models/sha256sums.txt`` or ``large_files.yml``
    (the zoo's list: ``path``, ``hash_val``, ``hash_type`` md5|sha256), or None when neither lists it."""
    from medseg.bundle.trust import bundle_file, read_checksums
    from medseg.io.jsonfile import read_yaml_object

    if bundle_file(bundle_dir, "models/sha256sums.txt").is_file():
        sums = read_checksums(bundle_dir)
        if rel in sums:
            return "sha256", sums[rel], "models/sha256sums.txt"
    for name in ("large_files.yml", "large_files.yaml"):
        path = bundle_file(bundle_dir, name)
        if not path.is_file():
            continue
        data = read_yaml_object(path, error=BundleError, name=f"{name} of bundle {bundle_dir.name}")
        for item in data.get("large_files") or [] if isinstance(data, dict) else []:
            if not isinstance(item, dict) or str(item.get("path", "")).lstrip("./") != rel:
                continue
            algo = str(item.get("hash_type") or "").lower()
            value = str(item.get("hash_val") or "").lower()
            if algo not in ("md5", "sha256") or not value:
                raise BundleError(f"{name} of bundle {bundle_dir.name} lists {rel} without an md5/sha256 hash")
            return algo, value, name
    return None


@contextlib.contextmanager
def bundle_imports(bundle_dir: Path, trusted: bool, own: dict[str, Any]):
    """While a TRUSTED bundle's config is evaluated, its folder is first on ``sys.path`` so that
    ``scripts.*`` resolves as under ``monai.bundle run`` (which runs from the bundle folder), and
    the ``scripts`` modules of other bundles are set aside (every zoo bundle names its package
    ``scripts``); ``own`` keeps this bundle's modules between calls. Untrusted configs cannot
    import anything of the bundle (the trust policy refuses it): nothing changes then."""
    import sys

    if not trusted or not (bundle_dir / "scripts").is_dir():
        yield
        return
    def ours(name: str) -> bool:
        return name == "scripts" or name.startswith("scripts.")
    others = {k: sys.modules.pop(k) for k in [k for k in sys.modules if ours(k)]}
    sys.modules.update(own)
    sys.path.insert(0, str(bundle_dir))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(bundle_dir))
        except ValueError:
            pass
        own.clear()
        own.update({k: sys.modules.pop(k) for k in [k for k in sys.modules if ours(k)]})
        sys.modules.update(others)


def _checkpoint_component(config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(id, component)`` of the config's CheckpointLoader (top level or in a handler list)."""
    from medseg.bundle.trust import _components, _resolve_target

    for comp in _components(config):
        full = _resolve_target(comp.get("_target_")) or str(comp.get("_target_"))
        if full.rsplit(".", 1)[-1] == "CheckpointLoader":
            return str(comp.get("load_path", "")), comp
    return None


def _loader_keys(config: dict[str, Any]) -> list[str] | None:
    """The keys the first ``LoadImaged`` of ``preprocessing`` reads (references to plain strings
    resolved), or None when that cannot be told without evaluating the config."""
    pre = config.get("preprocessing")
    transforms = pre.get("transforms") if isinstance(pre, dict) else None
    for t in transforms if isinstance(transforms, list) else []:
        if isinstance(t, dict) and str(t.get("_target_", "")).rsplit(".", 1)[-1] == "LoadImaged":
            keys = t.get("keys")
            items = keys if isinstance(keys, list) else [keys]
            out = []
            for k in items:
                if isinstance(k, str) and k.startswith("@") and isinstance(config.get(k[1:]), str):
                    k = config[k[1:]]
                if not isinstance(k, str) or k[:1] in "$@%":
                    return None
                out.append(k)
            return out
    return None


def checkpoint_path(bundle_dir: Path, configs: dict[str, Any], name: str) -> tuple[str, str | None]:
    """``(path relative to the bundle, load_dict key)`` of the weights the inference config's
    CheckpointLoader reads (``models/model.pt`` when it has none). Only call after the trust check:
    ``load_path`` is evaluated (the policy accepts only ``@bundle_root`` plus constants there)."""
    found = _checkpoint_component(configs[name])
    if found is None:
        return "models/model.pt", None
    comp = found[1]
    parser = ZooBundleSource._parser(bundle_dir, configs, name, Path("/nonexistent-medseg"))
    parser["medseg_load_path"] = comp.get("load_path")
    try:
        value = str(parser.get_parsed_content("medseg_load_path"))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise BundleError(f"load_path of bundle {bundle_dir.name} cannot be read: {exc}") from exc
    root = str(bundle_dir).rstrip("/") + "/"
    if not value.startswith(root):
        raise BundleError(f"bundle {bundle_dir.name}: its CheckpointLoader reads a file outside the bundle")
    load_dict = comp.get("load_dict")
    key = next(iter(load_dict)) if isinstance(load_dict, dict) and len(load_dict) == 1 else None
    return value[len(root):].lstrip("/"), key


class ZooBundleSource(InfersLabels):
    """A MONAI Model Zoo bundle as a model source (see the module docstring)."""

    kind = "monai_zoo"
    task = "semantic"

    def __init__(self, bundle_dir: Path, configs: dict[str, Any], config_name: str, network: Any,
                 weights_sha256: str, weights_check: str, trusted: bool) -> None:
        self.bundle_dir = bundle_dir
        self.configs = configs
        self.config_name = config_name
        self.config = configs[config_name]
        self.meta = configs.get("metadata.json") or {}
        self.network = network
        self.weights_sha256 = weights_sha256
        self.weights_check = weights_check
        self.trusted = trusted
        self.name = bundle_dir.name
        self.labels = self._labels()
        self.domain: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._modules: dict[str, Any] = {}

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Any, *, trust: bool = False, **_: Any) -> ZooBundleSource:
        from medseg.bundle.load import read_all_configs, resolve_bundle
        from medseg.bundle.trust import ensure_trusted

        bundle_dir = resolve_bundle(path)
        configs = read_all_configs(bundle_dir)
        name = inference_config_name(configs)
        if name is None:
            raise BundleError(f"bundle {bundle_dir.name} has neither configs/medseg.json nor an inference "
                              "config (configs/inference.json or inference.yaml)")
        # exactly what medseg evaluates: the inference config, alone (as `monai.bundle run
        # --config_file configs/inference.json` does), and the metadata under _meta_. The bundle's
        # other configs (train, evaluate, multi-GPU, TensorRT) are never read as configs here.
        configs = {k: v for k, v in configs.items() if k in (name, "metadata.json")}
        ensure_trusted(configs, trust=trust)
        for key in ("preprocessing", "inferer", "postprocessing", "network_def"):
            if key not in configs[name]:
                raise BundleError(f"configs/{name} of bundle {bundle_dir.name} has no '{key}'; medseg runs zoo "
                                  "bundles built from preprocessing, network_def, inferer and postprocessing")
        keys = _loader_keys(configs[name])
        if keys is not None and "image" not in keys:
            raise BundleError(f"bundle {bundle_dir.name} reads its inputs under {', '.join(keys)[:80]}; medseg gives a "
                              "zoo bundle one image (all its channels) under 'image'")
        state, sha, check = cls._weights(bundle_dir, configs, name)
        parser = cls._parser(bundle_dir, configs, name, Path(tempfile.gettempdir()) / "medseg-unused")
        modules: dict[str, Any] = {}
        try:
            with bundle_imports(bundle_dir, trust, modules):
                net = parser.get_parsed_content("network_def", instantiate=True)
        except (KeyError, TypeError, ValueError, RuntimeError, ImportError, AttributeError) as exc:
            raise BundleError(f"network_def of bundle {bundle_dir.name} cannot be built: "
                              f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}") from exc
        import torch

        from medseg.models.weights import load_into

        if not isinstance(net, torch.nn.Module):
            raise BundleError(f"network_def of bundle {bundle_dir.name} is not a torch.nn.Module")
        load_into(net, state, error=BundleError, what=f"the weights of bundle {bundle_dir.name} do not fit its network_def")
        net.eval()
        source = cls(bundle_dir, configs, name, net, sha, check, trust)
        source._modules = modules
        return source

    @staticmethod
    def _parser(bundle_dir: Path, configs: dict[str, Any], name: str, scratch: Path):
        from monai.bundle import ConfigParser

        parser = ConfigParser(configs[name])
        parser.read_meta({k: v for k, v in (configs.get("metadata.json") or {}).items()
                          if k != "optional_packages_version"})
        # every folder the config names points at medseg's own scratch folder: nothing the bundle
        # evaluates reads or writes a folder of the bundle's choosing
        parser.update({"bundle_root": str(bundle_dir), "output_dir": str(scratch / "out"),
                       "dataset_dir": str(scratch / "in")})
        return parser

    @staticmethod
    def _weights(bundle_dir: Path, configs: dict[str, Any], name: str) -> tuple[dict[str, Any], str, str]:
        """The state dict the bundle's CheckpointLoader would load, verified and read safely."""
        from medseg.bundle.trust import bundle_file
        from medseg.models.weights import read_state_dict

        rel, key = checkpoint_path(bundle_dir, configs, name)
        path = bundle_file(bundle_dir, rel)
        if not path.is_file():
            raise BundleError(f"bundle {bundle_dir.name} lacks its weights {rel} (download them with "
                              "`python -m monai.bundle download` or copy them in)")
        listed = listed_hash(bundle_dir, rel)
        sha = _file_digest(path, "sha256")
        if listed is not None:
            algo, expected, where = listed
            if (sha if algo == "sha256" else _file_digest(path, algo)) != expected:
                raise BundleError(f"{rel} of bundle {bundle_dir.name} does not match its {algo} in {where}: the "
                                  "weights were altered or damaged")
            check = f"{algo} listed in {where} matches"
        else:
            check = "no hash listed (models/sha256sums.txt, large_files.yml): loaded unverified, weights_only"
        obj = read_state_dict(path, error=BundleError, what=f"{rel} of bundle {bundle_dir.name}", key=key)
        return obj, sha, check

    # -- describing ------------------------------------------------------------------------
    def _labels(self) -> dict[int, str]:
        try:
            out = self.meta["network_data_format"]["outputs"]["pred"]
        except (KeyError, TypeError):
            out = {}
        names = out.get("channel_def") if isinstance(out, dict) else None
        labels: dict[int, str] = {}
        if isinstance(names, dict):
            for k, v in names.items():
                if str(k).isdigit() and int(k) != 0:
                    labels[int(k)] = str(v)
        if not labels:
            n = int(out.get("num_channels", 2)) if isinstance(out, dict) else 2
            labels = {k: f"class {k}" for k in range(1, max(n, 2))}
        return labels

    def _evaluator_amp(self) -> bool:
        ev = self.config.get("evaluator")
        return bool(isinstance(ev, dict) and ev.get("amp") is True)

    def describe(self):
        from medseg.inference.sources.base import ModelInfo

        try:
            inp = self.meta["network_data_format"]["inputs"]["image"]
        except (KeyError, TypeError):
            inp = {}
        channels = int(inp.get("num_channels", 1)) if isinstance(inp, dict) else 1
        modality = str(inp.get("modality", "unknown")) if isinstance(inp, dict) else "unknown"
        spacing = None
        pre = self.config.get("preprocessing")
        for t in pre.get("transforms", []) if isinstance(pre, dict) else []:
            if isinstance(t, dict) and str(t.get("_target_", "")).endswith("Spacingd") and isinstance(
                    t.get("pixdim"), list):
                spacing = tuple(float(s) for s in t["pixdim"])
        dims = self.config.get("network_def", {}).get("spatial_dims", 3)
        return ModelInfo(kind=self.kind, name=self.name, labels=dict(self.labels), channels=channels,
                         modality=(modality,) * channels, spacing_mm=spacing,
                         spatial_dims=int(dims) if isinstance(dims, int) else 3,
                         details={"bundle_version": str(self.meta.get("version", "?")), "config": self.config_name,
                                  "pipeline": "the bundle's own preprocessing, inferer and postprocessing",
                                  "weights_check": self.weights_check, "trusted": bool(self.trusted),
                                  "evaluator_amp": self._evaluator_amp()})

    # -- predicting ------------------------------------------------------------------------
    def infer(self, image: Any, *, device: str = "auto", progress: bool = True, amp: bool = True) -> Any:
        """Labels of ``image`` on its own grid, as ``python -m monai.bundle run`` writes them for the
        same file (a :class:`~medseg.inference.result.Prediction`). ``amp``: autocast on CUDA only where the bundle's evaluator asks for it."""
        import numpy as np
        import torch
        from monai.data import MetaTensor

        from medseg.inference.result import InferenceRecord, Prediction, label_meta
        from medseg.inference.segmentation import resolve_device

        if not isinstance(image, MetaTensor):
            raise ModelError("a zoo bundle needs a MetaTensor with an affine (use medseg.io.load)")
        if image.ndim != 4:
            raise ModelError(f"{self.name}: medseg runs zoo bundles on 3D volumes; got {image.ndim - 1} spatial axes")
        dev = resolve_device(device)
        timings: dict[str, float] = {}
        with self._lock, tempfile.TemporaryDirectory(prefix="medseg-zoo-") as tmp:
            t0 = time.perf_counter()
            scratch = Path(tmp)
            (scratch / "in").mkdir()
            (scratch / "out").mkdir()
            files = write_input(image, scratch / "in")
            pred = self.run_pipeline(files, dev, scratch, use_amp=amp)
            timings["inference"] = time.perf_counter() - t0
        pred = pred.detach().cpu()
        arr = pred.as_tensor().numpy() if isinstance(pred, MetaTensor) else np.asarray(pred)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.shape != tuple(image.shape[1:]):
            raise ModelError(f"{self.name}: the bundle's postprocessing ends on shape {arr.shape}, not the input's "
                             f"{tuple(image.shape[1:])} (it does not invert its preprocessing); medseg cannot place "
                             "it on the source grid")
        aff_in = np.asarray(image.affine, dtype=np.float64)
        aff_out = np.asarray(pred.affine, dtype=np.float64) if isinstance(pred, MetaTensor) else aff_in
        if not np.allclose(aff_in, aff_out, atol=1e-3):
            raise ModelError(f"{self.name}: the bundle's output grid differs from its input's (affine); medseg "
                             "cannot place it on the source grid")
        values = np.rint(arr).astype(np.int64)
        top = int(values.max()) if values.size else 0
        out_dtype = torch.uint8 if top <= 255 and int(values.min(initial=0)) >= 0 else torch.int16
        from medseg.geometry import spacing_of

        meta = label_meta(image, labels=self.labels, task=self.task, spacing=spacing_of(aff_in, 3))
        out = MetaTensor(torch.from_numpy(np.ascontiguousarray(values))[None].to(out_dtype),
                         affine=torch.as_tensor(aff_in, dtype=torch.float64), meta=meta)
        out.applied_operations = []
        return Prediction(out, InferenceRecord(device=str(dev), timings_s=timings))

    def run_pipeline(self, files: list[str], dev: Any, scratch: Path, *, use_amp: bool = True) -> Any:
        """preprocessing -> inferer(network) -> postprocessing (writers removed) on one case; the
        ``pred`` MetaTensor of the postprocessed item."""
        import torch
        from monai.data import decollate_batch, list_data_collate
        from monai.engines.utils import engine_apply_transform

        parser = self._parser(self.bundle_dir, self.configs, self.config_name, scratch)
        with bundle_imports(self.bundle_dir, self.trusted, self._modules):
            try:
                pre = parser.get_parsed_content("preprocessing", instantiate=True)
                inferer = parser.get_parsed_content("inferer", instantiate=True)
                post = strip_savers(parser.get_parsed_content("postprocessing", instantiate=True))
            except (KeyError, TypeError, ValueError, RuntimeError, ImportError, AttributeError) as exc:
                raise BundleError(f"bundle {self.name}: its pipeline cannot be built: "
                                  f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}") from exc
            item = {"image": files[0] if len(files) == 1 else files}
            data = pre(item)
            batch = list_data_collate([data])
            net = self.network.to(dev)
            inputs = batch["image"].to(dev)
            autocast = use_amp and dev.type == "cuda" and self._evaluator_amp()
            try:
                with torch.no_grad(), torch.autocast("cuda", enabled=autocast):
                    pred = inferer(inputs, net)
            finally:
                self.network.to("cpu")
            output = {"image": inputs, "label": None, "pred": pred}
            b = decollate_batch(batch, detach=True)[0]
            o = decollate_batch(output, detach=True)[0]
            if post is not None:
                b, o = engine_apply_transform(b, o, post)
        return o["pred"]


def strip_savers(transform: Any) -> Any:
    """The postprocessing without its writers (SaveImage/SaveImaged, also inside nested Composes):
    medseg writes the result itself, on the source grid."""
    from monai.transforms import Compose

    if isinstance(transform, Compose):
        kept = [strip_savers(t) for t in transform.transforms if type(t).__name__ not in _SAVERS]
        transform.transforms = [t for t in kept if t is not None]
        return transform
    if type(transform).__name__ in _SAVERS:
        return None
    return transform


def write_input(image: Any, folder: Path) -> list[str]:
    """Write ``image`` (C, X, Y, Z) as NIfTI the way a zoo user's datalist holds it: one file, or
    one per channel (``image_0000.nii.gz`` ...) for several channels. Returns the paths."""
    from medseg.io.write import save

    if image.shape[0] == 1:
        return [str(save(image, folder / "image.nii.gz"))]
    return [str(save(image[c:c + 1], folder / f"image_{c:04d}.nii.gz", affine=image.affine))
            for c in range(image.shape[0])]
