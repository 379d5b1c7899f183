"""``run_inference_config``: a bundle's ``configs/inference.json`` run in-process, the way
``python -m monai.bundle run`` would run it (used by ``build`` for the reference pair and by
``verify``)."""

from __future__ import annotations

import os
from pathlib import Path

from medseg.errors import BundleError
from medseg.models.weights import read_state_dict
from medseg.settings import progress_enabled


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
        state = read_state_dict(bundle_file(bundle_dir, "models/model.pt"), error=BundleError,
                                what=f"models/model.pt of bundle {bundle_dir.name}")
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
