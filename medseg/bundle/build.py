"""Build a MONAI bundle from a medseg training run folder.

Run folder contract (training engineer): ``RUN/model_spec.json`` (a
:class:`~medseg.inference.model_spec.ModelSpec`, read and written only there), ``RUN/checkpoints/best.pt``
(a dict with ``"state_dict"``), ``RUN/metrics.json`` and ``RUN/curves.png`` (both optional).

The bundle follows the MONAI Bundle Specification and the model-zoo conventions, and carries
``configs/medseg.json`` (the same ModelSpec, flat: :meth:`ModelSpec.to_bundle_json`). The network
and the preset's transforms are written as plain MONAI ``_target_`` entries when they can be
reproduced exactly (checked at build time on a test input); otherwise the entry names medseg's
own factory (``medseg.models.build_network`` / ``medseg.transforms.presets.preprocessing``),
which the trust policy allows. The configs themselves come from :mod:`medseg.bundle.configs`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.configs import (
    SCHEMA_URL,
    evaluate_config,
    inference_config,
    network_def,
    preprocessing_config,
    preset_modality,
    train_config,
)
from medseg.errors import BundleError, ConfigError
from medseg.inference.model_spec import ModelSpec
from medseg.io.atomic import atomic_dir
from medseg.io.jsonfile import read_json_object
from medseg.settings import progress_enabled


def _flatten_metrics(metrics: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(metrics, Mapping):
        for k, v in metrics.items():
            out.update(_flatten_metrics(v, f"{prefix}{k}."))
    elif isinstance(metrics, (int, float)) and not isinstance(metrics, bool) and math.isfinite(metrics):
        out[prefix.rstrip(".")] = float(metrics)
    return out


def _read_json(path: Path, what: str) -> dict[str, Any]:
    return read_json_object(path, error=BundleError, name=f"{what} {path.name}",
                            missing=f"{what} {path.name} is missing in {path.parent}; is this a training "
                                    "run folder?")


def _load_run(run_dir: Path) -> tuple[ModelSpec, dict[str, Any], dict]:
    import pickle

    import torch

    spec = ModelSpec.from_json(_read_json(run_dir / "model_spec.json", "run file"), error=BundleError,
                               where=f"model_spec.json in {run_dir.name}")
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise BundleError(f"{run_dir.name}/checkpoints/best.pt is missing; train the model first")
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise BundleError(f"{run_dir.name}/checkpoints/best.pt is not a plain checkpoint (weights_only "
                          "refused it)") from exc
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise BundleError(f"{run_dir.name}/checkpoints/best.pt has no 'state_dict'")
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path, "run file") if metrics_path.is_file() else {}
    return spec, state, metrics


def _reference_input(dims: int, modality: str, roi: list[int]):
    """Deterministic smooth test image with blobs, on an LPS-like (flipped) anisotropic grid."""
    import torch
    from monai.data import MetaTensor
    from scipy import ndimage

    rng = np.random.default_rng(1234)
    shape = tuple(int(min(max(r, 16), 48)) for r in roi[:dims])
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=2.0)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    lo, hi = (-1000.0, 400.0) if modality == "CT" else (0.0, 1000.0)
    arr = (lo + (hi - lo) * field).astype(np.float32)
    affine = np.eye(4)
    if dims == 3:
        affine[:3, :3] = np.diag([-1.2, -1.2, 2.0])
        affine[:3, 3] = [30.0, 25.0, -40.0]
    else:
        affine[:2, :2] = np.diag([0.5, 0.5])
    return MetaTensor(torch.from_numpy(arr)[None], affine=torch.from_numpy(affine), meta={"space": "RAS"})


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _readme(name: str, meta: dict, medseg_cfg: dict, metrics: dict[str, float], extra: dict) -> str:
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


def build_bundle(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    version: str = "0.1.0",
    description: str = "",
    authors: str = "medseg",
    data_source: str = "",
    data_license_text: str = "",
    data_type: str = "nifti",
    intended_use: str = "Research use only: not for diagnostic or treatment decisions.",
    references: list[str] | None = None,
    changelog: dict[str, str] | None = None,
    copyright: str | None = None,
    task_description: str | None = None,
) -> Path:
    """Build the MONAI bundle ``out_dir`` (must not exist) from training run ``run_dir``.

    Writes ``configs/{metadata,inference,train,evaluate,medseg}.json``, ``models/model.pt``
    (state dict only), ``models/model.ts`` (TorchScript), ``models/sha256sums.txt``,
    ``docs/README.md``, ``docs/data_license.txt`` and a reference pair
    ``tests/ref_input.nii.gz`` / ``tests/ref_output.nii.gz`` produced by running the bundle's own
    inference.json. The folder appears atomically (built beside it, then renamed).
    Returns the bundle path.
    """
    import torch

    from medseg.bundle.trust import sha256_file
    from medseg.io import save

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists():
        raise BundleError(f"{out_dir} already exists; choose a new folder or remove the old bundle first")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"bundle name {name!r} must be letters, digits, '_' or '-'")
    spec, state, metrics_raw = _load_run(run_dir)
    if spec.slice_by_slice:
        raise BundleError("slice_by_slice models (a 2D network over a 3D volume) cannot be written as a MONAI "
                          "bundle yet; train a 3D model or use the run folder directly")
    net_spec, preset, dims, roi = spec.network, spec.preset, spec.spatial_dims, list(spec.roi_size)
    overlap, sw_batch, postprocess = spec.overlap, spec.sw_batch_size, spec.postprocess
    task = spec.task
    labels = {str(k): v for k, v in sorted(spec.labels.items())}
    n_out = int(net_spec.get("out_channels", len(labels) + 1))
    n_in = int(net_spec.get("in_channels", 1))
    modality, fmt = preset_modality(preset)
    metrics = _flatten_metrics(metrics_raw)

    try:
        net_def = network_def(net_spec, state)
    except RuntimeError as exc:
        raise BundleError(f"best.pt of {run_dir.name} does not fit the network in model_spec.json: "
                          f"{str(exc).splitlines()[0][:160]}") from exc
    pre = preprocessing_config(preset, dims, modality, spec.preset_overrides)

    from medseg.models import build_network

    net = build_network(net_spec)
    net.load_state_dict(state, strict=True)
    net.eval()

    channel_def = {"0": "background"} if n_out > 1 else {}
    channel_def.update({k: v for k, v in labels.items() if int(k) < n_out} if n_out > 1 else {"0": next(
        iter(labels.values()), "foreground")})
    meta: dict[str, Any] = {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": dict(changelog or {version: "built by medseg from a training run"}),
        **_versions(),
        "name": name,
        "task": task_description or f"{modality} segmentation of {', '.join(labels.values())}",
        "description": description or f"medseg {net_spec.get('arch')} for {', '.join(labels.values())} "
                                      f"on {modality} (preset {preset}).",
        "authors": authors,
        "copyright": copyright or f"Copyright (c) {authors}",
        "data_source": data_source or "not stated",
        "data_type": data_type,
        "image_classes": f"single channel {modality} image ({fmt}), preprocessed by preset {preset}",
        "label_classes": "single channel label map: " + ", ".join(f"{k} is {v}" for k, v in labels.items())
                         + ", 0 is background",
        "pred_classes": f"{n_out} channel scores; argmax gives the label map",
        "eval_metrics": metrics,
        "intended_use": intended_use,
        "references": list(references or []),
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": fmt, "modality": modality, "num_channels": n_in,
                "spatial_shape": roi, "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": {str(i): "image" for i in range(n_in)},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "labels" if n_out > 1 else "classes", "modality": "n/a",
                "num_channels": n_out, "spatial_shape": roi, "dtype": "float32", "value_range": [],
                "is_patch_data": True, "channel_def": channel_def,
            }},
        },
    }
    medseg_cfg = spec.to_bundle_json(modality=modality, name=name)
    infer_cfg = inference_config(net_def, pre, roi, overlap, sw_batch, n_out, postprocess, labels, task)

    with atomic_dir(out_dir) as tmp:
        for sub in ("configs", "models", "docs", "tests"):
            (tmp / sub).mkdir()
        torch.save(dict(state), tmp / "models" / "model.pt")
        example = torch.rand((1, n_in, *roi))
        try:
            ts = torch.jit.script(net)
        except Exception:  # noqa: BLE001 - TorchScript scripting fails in many ways; tracing is the fallback
            with torch.no_grad():
                ts = torch.jit.trace(net, example)
        torch.jit.save(ts, str(tmp / "models" / "model.ts"))
        meta["weights_sha256"] = {"models/model.pt": sha256_file(tmp / "models" / "model.pt"),
                                  "models/model.ts": sha256_file(tmp / "models" / "model.ts")}
        _write_json(tmp / "configs" / "metadata.json", meta)
        _write_json(tmp / "configs" / "inference.json", infer_cfg)
        _write_json(tmp / "configs" / "train.json", train_config(net_def, pre, roi, n_out))
        _write_json(tmp / "configs" / "evaluate.json", evaluate_config(pre, n_out, postprocess, labels))
        _write_json(tmp / "configs" / "medseg.json", medseg_cfg)
        (tmp / "docs" / "data_license.txt").write_text(
            (data_license_text or "No licence conditions were stated for the training data.") + "\n",
            encoding="utf-8")
        (tmp / "docs" / "README.md").write_text(
            _readme(name, meta, medseg_cfg, metrics, {"data_source": data_source or "not stated"}),
            encoding="utf-8")
        ref_in = tmp / "tests" / "ref_input.nii.gz"
        save(_reference_input(dims, modality, roi), ref_in)
        work = Path(tempfile.mkdtemp(prefix=".ref.", dir=tmp.parent))
        try:
            (work / "in").mkdir()
            shutil.copyfile(ref_in, work / "in" / "ref_input.nii.gz")
            produced = run_inference_config(tmp, work / "in", work / "out", trust=False, check_sums=False)
            if len(produced) != 1:
                raise BundleError("the bundle's inference.json did not produce exactly one output for the "
                                  "reference input")
            shutil.copyfile(produced[0], tmp / "tests" / "ref_output.nii.gz")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        sums = []
        for rel in ("models/model.pt", "models/model.ts", "configs/metadata.json", "configs/inference.json",
                    "configs/medseg.json", "tests/ref_input.nii.gz", "tests/ref_output.nii.gz"):
            sums.append(f"{sha256_file(tmp / rel)}  {rel}")
        (tmp / "models" / "sha256sums.txt").write_text("\n".join(sums) + "\n", encoding="utf-8")
    return out_dir


def set_release(bundle_dir: str | os.PathLike[str], version: str, changelog: Mapping[str, str]) -> None:
    """Give a built bundle a new ``version`` and ``changelog`` (``configs/metadata.json``) and
    record the new metadata's sha256 in ``models/sha256sums.txt``, so that it still verifies.

    ``version`` must be MAJOR.MINOR.PATCH and have an entry in ``changelog`` (kept in the given
    order; newest first by convention). Each file is replaced atomically."""
    import re

    from medseg.bundle.trust import read_checksums, sha256_file
    from medseg.io.atomic import atomic_write_text

    bundle_dir = Path(bundle_dir)
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ConfigError(f"bundle version {version!r} is not MAJOR.MINOR.PATCH")
    log = {str(k): str(v) for k, v in changelog.items()}
    if version not in log:
        raise ConfigError(f"the changelog has no entry for version {version}")
    meta_path = bundle_dir / "configs" / "metadata.json"
    meta = read_json_object(meta_path, error=BundleError, name=f"configs/metadata.json of bundle {bundle_dir.name}")
    sums = read_checksums(bundle_dir)
    meta.update(version=version, changelog=log)
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    sums["configs/metadata.json"] = sha256_file(meta_path)
    atomic_write_text(bundle_dir / "models" / "sha256sums.txt",
                      "".join(f"{sha}  {rel}\n" for rel, sha in sums.items()))


def run_inference_config(bundle_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str],
                         output_dir: str | os.PathLike[str], *, trust: bool = False,
                         check_sums: bool = True, progress: bool = True) -> list[Path]:
    """Run ``configs/inference.json`` in-process: the same components ``python -m monai.bundle run``
    uses (``datalist``, ``preprocessing``, ``network_def``, ``inferer``, ``postprocessing``), driven
    by a plain loop instead of the ignite ``evaluator`` (so pytorch-ignite is not needed).

    The configs pass the trust policy first (unless ``trust``) and the weights their checksum
    (unless ``check_sums=False``, used while the bundle is being built); weights are read with
    ``weights_only=True``. Returns the files written under ``output_dir``.
    """
    import pickle

    import torch
    from monai.bundle import ConfigParser
    from tqdm.auto import tqdm

    from medseg.bundle.load import read_all_configs, read_configs
    from medseg.bundle.trust import bundle_file, check_checksums, ensure_trusted, load_weights

    bundle_dir = Path(bundle_dir)
    configs = read_configs(bundle_dir, ("metadata.json", "inference.json"))
    ensure_trusted(read_all_configs(bundle_dir), trust=trust)
    if check_sums:
        bad = check_checksums(bundle_dir)
        if bad:
            raise BundleError(f"bundle {bundle_dir.name} fails its checksums: {'; '.join(bad)}")
        state = load_weights(bundle_dir)
    else:
        try:
            state = torch.load(bundle_file(bundle_dir, "models/model.pt"), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise BundleError("models/model.pt is not a plain state dict") from exc
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    before = set(output_dir.rglob("*"))
    parser = ConfigParser(configs["inference.json"])
    parser.read_meta({k: v for k, v in configs["metadata.json"].items() if k != "optional_packages_version"})
    parser.update({"bundle_root": str(bundle_dir), "dataset_dir": str(dataset_dir), "output_dir": str(output_dir)})
    try:
        if "initialize" in parser.config:
            parser.get_parsed_content("initialize")
        device = parser.get_parsed_content("device")
        files = list(parser.get_parsed_content("datalist"))
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(state, strict=True)
        net = net.to(device).eval()
        pre = parser.get_parsed_content("preprocessing")
        inferer = parser.get_parsed_content("inferer")
        post = parser.get_parsed_content("postprocessing")
        quiet = not progress_enabled(progress)
        for f in tqdm(files, desc="bundle inference", unit="image", disable=quiet):
            data = pre({"image": f})
            with torch.no_grad():
                pred = inferer(data["image"][None].to(device), net)
            data["pred"] = pred[0].cpu() if not isinstance(pred, (list, tuple)) else pred[0][0].cpu()
            data["image"] = data["image"].cpu()
            post(data)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {bundle_dir.name}: inference.json failed: "
                          f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}") from exc
    return sorted(p for p in output_dir.rglob("*") if p.is_file() and p not in before)
