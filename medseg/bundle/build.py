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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.configs import (
    evaluate_config,
    inference_config,
    network_def,
    preprocessing_config,
    preset_modality,
    train_config,
)
from medseg.bundle.metadata import BundleRelease, ModelFacts, metadata_json, readme
from medseg.bundle.run_config import run_inference_config
from medseg.errors import BundleError, ConfigError
from medseg.inference.model_spec import ModelSpec
from medseg.io.atomic import atomic_dir
from medseg.io.jsonfile import read_json_object
from medseg.models.weights import read_state_dict


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
    spec = ModelSpec.from_json(_read_json(run_dir / "model_spec.json", "run file"), error=BundleError,
                               where=f"model_spec.json in {run_dir.name}")
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise BundleError(f"{run_dir.name}/checkpoints/best.pt is missing; train the model first")
    state = read_state_dict(ckpt, error=BundleError, what=f"{run_dir.name}/checkpoints/best.pt")
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path, "run file") if metrics_path.is_file() else {}
    return spec, state, metrics


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


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
    Returns the bundle path. The release options are those of :class:`BundleRelease`.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    release = BundleRelease(name=name, version=version, description=description, authors=authors,
                            data_source=data_source, data_license_text=data_license_text, data_type=data_type,
                            intended_use=intended_use, references=list(references or []), changelog=changelog,
                            copyright=copyright, task_description=task_description)
    _check_target(out_dir, name)
    run = _prepare(run_dir)
    meta = metadata_json(release, run.facts)
    medseg_cfg = run.spec.to_bundle_json(modality=run.facts.modality, name=name)
    with atomic_dir(out_dir) as tmp:
        for sub in ("configs", "models", "docs", "tests"):
            (tmp / sub).mkdir()
        meta["weights_sha256"] = _write_models(tmp, run)
        _write_configs(tmp, run, meta, medseg_cfg)
        _write_docs(tmp, release, meta, medseg_cfg, run.facts.metrics)
        _write_reference_pair(tmp, run)
        _write_checksums(tmp)
    return out_dir


@dataclass
class _Run:
    """A training run read and checked for building: its ModelSpec, weights, the loaded network,
    the MONAI ``network_def`` / preprocessing configs and the model facts of the metadata."""

    spec: ModelSpec
    state: dict
    net: Any
    net_def: dict[str, Any]
    pre: dict[str, Any]
    facts: ModelFacts


def _check_target(out_dir: Path, name: str) -> None:
    if out_dir.exists():
        raise BundleError(f"{out_dir} already exists; choose a new folder or remove the old bundle first")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"bundle name {name!r} must be letters, digits, '_' or '-'")


def _prepare(run_dir: Path) -> _Run:
    """Read the run, refuse what a bundle cannot hold, and load its weights into the network."""
    from medseg.models import build_network

    spec, state, metrics_raw = _load_run(run_dir)
    if spec.slice_by_slice:
        raise BundleError("slice_by_slice models (a 2D network over a 3D volume) cannot be written as a MONAI "
                          "bundle yet; train a 3D model or use the run folder directly")
    labels = {str(k): v for k, v in sorted(spec.labels.items())}
    modality, fmt = preset_modality(spec.preset)
    facts = ModelFacts(labels=labels, network=spec.network, preset=spec.preset, modality=modality, fmt=fmt,
                       n_in=int(spec.network.get("in_channels", 1)),
                       n_out=int(spec.network.get("out_channels", len(labels) + 1)),
                       roi=list(spec.roi_size), metrics=_flatten_metrics(metrics_raw))
    try:
        net_def = network_def(spec.network, state)
    except RuntimeError as exc:
        raise BundleError(f"best.pt of {run_dir.name} does not fit the network in model_spec.json: "
                          f"{str(exc).splitlines()[0][:160]}") from exc
    pre = preprocessing_config(spec.preset, spec.spatial_dims, modality, spec.preset_overrides)
    net = build_network(spec.network)
    net.load_state_dict(state, strict=True)
    net.eval()
    return _Run(spec=spec, state=state, net=net, net_def=net_def, pre=pre, facts=facts)


def _write_models(tmp: Path, run: _Run) -> dict[str, str]:
    """``models/model.pt`` (state dict) and ``models/model.ts`` (scripted, else traced); their sha256."""
    import torch

    from medseg.bundle.trust import sha256_file

    torch.save(dict(run.state), tmp / "models" / "model.pt")
    example = torch.rand((1, run.facts.n_in, *run.facts.roi))
    try:
        ts = torch.jit.script(run.net)
    except Exception:  # noqa: BLE001 - TorchScript scripting fails in many ways; tracing is the fallback
        with torch.no_grad():
            ts = torch.jit.trace(run.net, example)
    torch.jit.save(ts, str(tmp / "models" / "model.ts"))
    return {rel: sha256_file(tmp / rel) for rel in ("models/model.pt", "models/model.ts")}


def _write_configs(tmp: Path, run: _Run, meta: dict[str, Any], medseg_cfg: dict[str, Any]) -> None:
    spec, facts = run.spec, run.facts
    _write_json(tmp / "configs" / "metadata.json", meta)
    _write_json(tmp / "configs" / "inference.json",
                inference_config(run.net_def, run.pre, facts.roi, spec.overlap, spec.sw_batch_size, facts.n_out,
                                 spec.postprocess, facts.labels, spec.task))
    _write_json(tmp / "configs" / "train.json", train_config(run.net_def, run.pre, facts.roi, facts.n_out))
    _write_json(tmp / "configs" / "evaluate.json", evaluate_config(run.pre, facts.n_out, spec.postprocess, facts.labels))
    _write_json(tmp / "configs" / "medseg.json", medseg_cfg)


def _write_docs(tmp: Path, release: BundleRelease, meta: dict[str, Any], medseg_cfg: dict[str, Any],
                metrics: dict[str, float]) -> None:
    (tmp / "docs" / "data_license.txt").write_text(
        (release.data_license_text or "No licence conditions were stated for the training data.") + "\n",
        encoding="utf-8")
    (tmp / "docs" / "README.md").write_text(
        readme(release.name, meta, medseg_cfg, metrics, {"data_source": release.data_source or "not stated"}),
        encoding="utf-8")


def _write_reference_pair(tmp: Path, run: _Run) -> None:
    """``tests/ref_input.nii.gz`` and what the bundle's own inference.json makes of it."""
    from medseg.io import save

    ref_in = tmp / "tests" / "ref_input.nii.gz"
    save(_reference_input(run.spec.spatial_dims, run.facts.modality, run.facts.roi), ref_in)
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


def _write_checksums(tmp: Path) -> None:
    from medseg.bundle.trust import sha256_file

    sums = [f"{sha256_file(tmp / rel)}  {rel}" for rel in CHECKSUMMED]
    (tmp / "models" / "sha256sums.txt").write_text("\n".join(sums) + "\n", encoding="utf-8")


#: the files ``models/sha256sums.txt`` lists, in order
CHECKSUMMED = ("models/model.pt", "models/model.ts", "configs/metadata.json", "configs/inference.json",
               "configs/medseg.json", "tests/ref_input.nii.gz", "tests/ref_output.nii.gz")


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
