"""Zoo bundles with seeded random weights (the published weights cannot be fetched here).

:func:`make_zoo_bundle` copies a MONAI Model Zoo bundle's files (configs, docs, scripts; no
weights) into a new folder, builds its ``network_def`` with MONAI, saves a seeded random state
dict where the bundle's CheckpointLoader reads it and lists its sha256 in ``large_files.yml`` the
way the zoo lists its hashes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ZOO_DATA = Path(__file__).parent / "data" / "zoo"


def make_zoo_bundle(src: Path, dst: Path, *, seed: int = 0) -> Path:
    import hashlib

    import torch
    from monai.bundle import ConfigParser

    from medseg.bundle.load import read_all_configs
    from medseg.bundle.zoo import inference_config_name

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pt", "*.ts", "*.onnx", "large_files.yml"))
    configs = read_all_configs(dst)
    name = inference_config_name(configs)
    parser = ConfigParser(configs[name])
    parser["bundle_root"] = str(dst)
    parser.update({"output_dir": str(dst / "unused-out"), "dataset_dir": str(dst / "unused-in")})
    torch.manual_seed(seed)
    from medseg.bundle.zoo import bundle_imports

    with bundle_imports(dst, True, {}):  # a bundle's own scripts/ (the fixture trusts what it copies)
        net = parser.get_parsed_content("network_def", instantiate=True)
    state = net.state_dict()
    # random batch-norm statistics too, so every weight of the bundle matters
    g = torch.Generator().manual_seed(seed + 1)
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean"):
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
    from medseg.bundle.zoo import checkpoint_path

    rel, _ = checkpoint_path(dst, configs, name)  # where the bundle's CheckpointLoader reads
    path = dst / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    (dst / "large_files.yml").write_text(
        f"large_files:\n- path: \"{rel}\"\n  url: \"https://example.invalid/not-fetched\"\n"
        f"  hash_val: \"{sha}\"\n  hash_type: \"sha256\"\n", encoding="utf-8")
    return dst


def monai_bundle_run(bundle: Path, inputs: list[Path], out_dir: Path, *, config: str | None = None,
                     timeout: int = 1800) -> Path:
    """Run ``python -m monai.bundle run`` on one case, as a zoo user does (the bundle's datalist
    replaced by ``dataset#data``); returns the one NIfTI it wrote under ``out_dir``."""
    import os
    import subprocess
    import sys

    from medseg.bundle.load import read_all_configs
    from medseg.bundle.zoo import inference_config_name

    configs = read_all_configs(bundle)
    config = config or inference_config_name(configs)
    cfg = configs[config]
    # the section that starts the engine: 'run' in most bundles, 'evaluating'/'inferring' in older ones
    run_id = "run" if "run" in cfg else next(
        (k for k, v in cfg.items() if isinstance(v, list) and any(".run()" in str(x) for x in v)), "run")
    image = str(inputs[0]) if len(inputs) == 1 else [str(p) for p in inputs]
    argv = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / config),
            "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
            "--output_dir", str(out_dir), "--run_id", run_id, "--dataset_dir", str(Path(inputs[0]).parent), "--dataset#data", repr([{"image": image}]),
            "--dataloader#num_workers", "0"]
    env = dict(os.environ, PYTHONPATH=str(bundle) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=bundle, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"monai.bundle run failed: {proc.stderr.strip().splitlines()[-1:]}")
    found = sorted(p for p in out_dir.rglob("*") if p.name.endswith((".nii.gz", ".nii")))
    if len(found) != 1:
        raise RuntimeError(f"monai.bundle run wrote {len(found)} NIfTI files under {out_dir}")
    return found[0]
