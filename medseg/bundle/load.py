"""Find and load MONAI bundles under the trust policy (see :mod:`medseg.bundle.trust`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import BundleError
from medseg.io.jsonfile import read_json_object

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def shipped_bundle_roots() -> list[Path]:
    """Where the bundles that come with medseg lie: ``medseg/bundles/`` inside the installed
    package (a wheel carries them there, :mod:`importlib.resources`), and the ``bundles/`` folder
    of a source checkout (beside the package, recognised by its ``bundle_tools.py``). Only folders
    that exist are listed."""
    from importlib import resources

    roots = []
    packaged = Path(str(resources.files("medseg") / "bundles"))
    if packaged.is_dir():
        roots.append(packaged)
    checkout = Path(__file__).resolve().parents[2] / "bundles"
    if (checkout / "bundle_tools.py").is_file() and checkout not in roots:
        roots.append(checkout)
    return roots


def bundle_search_path() -> list[Path]:
    """Folders searched for bundles by name: the settings' ``bundle_paths`` (``$MEDSEG_BUNDLES``,
    :mod:`medseg.settings`) first, then :func:`shipped_bundle_roots`."""
    from medseg.settings import current

    return [*current().bundle_paths, *shipped_bundle_roots()]


def resolve_bundle(path_or_name: str | os.PathLike[str]) -> Path:
    """Return the bundle folder for a path, or for a NAME looked up in :func:`bundle_search_path`."""
    p = Path(path_or_name)
    if p.is_dir():
        if not (p / "configs" / "metadata.json").is_file():
            raise BundleError(f"{p} is not a MONAI bundle (no configs/metadata.json)")
        return p
    name = str(path_or_name)
    if _NAME.match(name) and name not in (".", ".."):
        for root in bundle_search_path():
            cand = root / name
            if (cand / "configs" / "metadata.json").is_file():
                return cand
    roots = ", ".join(str(r) for r in bundle_search_path())
    raise BundleError(f"no bundle {name!r}: not a bundle folder and not a bundle name under {roots}; "
                      "see `medseg bundle list`")


def read_configs(bundle_dir: str | os.PathLike[str], names: tuple[str, ...] = (
        "metadata.json", "inference.json", "medseg.json")) -> dict[str, Any]:
    """Parse ``configs/<name>`` as plain JSON (nothing is evaluated); BundleError if absent or bad."""
    from medseg.bundle.trust import bundle_file

    bundle_dir = Path(bundle_dir)
    out = {}
    for name in names:
        out[name] = read_json_object(bundle_file(bundle_dir, f"configs/{name}"), error=BundleError,
                                     name=f"configs/{name} of bundle {bundle_dir.name}",
                                     missing=f"bundle {bundle_dir.name} lacks configs/{name}")
    return out


CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def refuse_links(bundle_dir: Path) -> None:
    """BundleError when anything inside the bundle is a symbolic link: a writer or reader that a
    config points at a folder of the bundle must not land outside it (every code path that reads
    a bundle's configs calls this first, through :func:`read_all_configs`)."""
    for root, dirs, files in os.walk(bundle_dir, followlinks=False):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink():
                raise BundleError(f"bundle {bundle_dir.name} holds a symbolic link ({p.relative_to(bundle_dir)}); "
                                  "a bundle's files must lie inside it (copy the file in instead)")


def read_all_configs(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Every config file in ``configs/`` (JSON and YAML, as ``python -m monai.bundle run`` could be
    pointed at any of them), parsed as data: file name -> object. BundleError on a bad one."""
    from medseg.bundle.trust import bundle_file
    from medseg.io.jsonfile import read_yaml_object

    bundle_dir = Path(bundle_dir)
    refuse_links(bundle_dir)
    folder = bundle_file(bundle_dir, "configs")
    out: dict[str, Any] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.suffix.lower() not in CONFIG_SUFFIXES:
            continue
        path = bundle_file(bundle_dir, f"configs/{p.name}")
        name = f"configs/{p.name} of bundle {bundle_dir.name}"
        out[p.name] = read_json_object(path, error=BundleError, name=name) if p.suffix.lower() == ".json" \
            else read_yaml_object(path, error=BundleError, name=name)
    return out


def build_network_def(bundle_dir: Path, configs: dict[str, Any], *, trust: bool = False):
    """Instantiate ``network_def`` of inference.json with MONAI's ConfigParser.

    Only call after :func:`medseg.bundle.trust.ensure_trusted` (or with trust): the parser
    evaluates the entry.
    """
    from monai.bundle import ConfigParser

    from medseg.bundle.trust import ensure_trusted

    ensure_trusted({k: configs[k] for k in ("metadata.json", "inference.json") if k in configs}, trust=trust)
    import tempfile

    parser = ConfigParser(configs["inference.json"])
    parser.read_meta({k: v for k, v in configs["metadata.json"].items() if k != "optional_packages_version"})
    parser["bundle_root"] = str(bundle_dir)
    try:
        # only the network is built here: whatever else a reference reaches sees an empty folder
        # of medseg's as its input and output, never a folder of the bundle
        with tempfile.TemporaryDirectory(prefix="medseg-bundle-") as scratch:
            parser.update({"output_dir": scratch, "dataset_dir": scratch})
            net = parser.get_parsed_content("network_def", instantiate=True)
    except (KeyError, TypeError, ValueError, RuntimeError, ImportError) as exc:
        raise BundleError(f"network_def of bundle {bundle_dir.name} cannot be built: "
                          f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}") from exc
    import torch

    if not isinstance(net, torch.nn.Module):
        raise BundleError(f"network_def of bundle {bundle_dir.name} is not a torch.nn.Module")
    return net


def load_bundle(path_or_name: str | os.PathLike[str], *, trust: bool = False):
    """Load a bundle (folder or name) as a :class:`medseg.inference.SegmentationModel`, or a MONAI
    Model Zoo bundle (no ``configs/medseg.json``) as a :class:`medseg.bundle.zoo.ZooBundleSource`
    that runs the bundle's own pre/postprocessing.

    Order: configs parsed as JSON -> trust policy (TrustError unless allow-listed or ``trust``)
    -> ``models/model.pt`` sha256 checked against ``models/sha256sums.txt`` -> loaded with
    ``weights_only=True`` -> network built from ``network_def`` and loaded strictly.
    """
    from medseg.bundle.trust import bundle_file, ensure_trusted, load_weights, sha256_file
    from medseg.models.weights import load_into

    bundle_dir = resolve_bundle(path_or_name)
    from medseg.bundle.zoo import ZooBundleSource, is_zoo_bundle

    if is_zoo_bundle(bundle_dir):  # a MONAI Model Zoo bundle: its own pipeline (medseg.bundle.zoo)
        return ZooBundleSource.load(bundle_dir, trust=trust)
    configs = read_configs(bundle_dir)
    ensure_trusted(read_all_configs(bundle_dir), trust=trust)  # every config, not only those run here
    from medseg.inference.model_spec import ModelSpec

    spec = ModelSpec.from_json(configs["medseg.json"], error=BundleError,
                               where=f"configs/medseg.json of bundle {bundle_dir.name}")
    state = load_weights(bundle_dir)
    meta_sha = (configs["metadata.json"].get("weights_sha256") or {}).get("models/model.pt")
    actual = sha256_file(bundle_file(bundle_dir, "models/model.pt"))
    if meta_sha is not None and meta_sha != actual:
        raise BundleError(f"models/model.pt of bundle {bundle_dir.name} does not match the sha256 in "
                          "metadata.json; the bundle was altered")
    net = build_network_def(bundle_dir, configs, trust=trust)
    load_into(net, state, error=BundleError, what=f"models/model.pt of bundle {bundle_dir.name} does not fit its network_def")
    from medseg.inference import SegmentationModel

    return SegmentationModel.from_spec(spec, network=net, weights_sha256=actual, name=spec.name or bundle_dir.name)


@dataclass(frozen=True)
class BundleInfo:
    """One row of ``medseg bundle list``."""

    name: str
    version: str
    task: str
    modality: str
    labels: dict[str, str]
    weights_sha256: str
    trained_on: str
    path: Path


def bundle_info(bundle_dir: str | os.PathLike[str]) -> BundleInfo:
    """Read what :func:`list_bundles` shows from a bundle's JSON (nothing is evaluated)."""
    bundle_dir = Path(bundle_dir)
    from medseg.bundle.zoo import is_zoo_bundle

    if is_zoo_bundle(bundle_dir):  # no medseg.json: labels from the metadata's channel_def
        meta = read_configs(bundle_dir, ("metadata.json",))["metadata.json"]
        try:
            names = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
        except (KeyError, TypeError):
            names = {}
        cfg = {"labels": {k: v for k, v in (names or {}).items() if str(k) != "0"}
               if isinstance(names, dict) else {}}
    else:
        configs = read_configs(bundle_dir, ("metadata.json", "medseg.json"))
        meta, cfg = configs["metadata.json"], configs["medseg.json"]
    try:
        modality = meta["network_data_format"]["inputs"]["image"]["modality"]
    except (KeyError, TypeError):
        modality = str(cfg.get("modality", "n/a"))
    sha = (meta.get("weights_sha256") or {}).get("models/model.pt", "")
    return BundleInfo(
        name=str(meta.get("name", bundle_dir.name)), version=str(meta.get("version", "?")),
        task=str(meta.get("task", "")), modality=str(modality),
        labels={str(k): str(v) for k, v in (cfg.get("labels") or {}).items()},
        weights_sha256=str(sha), trained_on=str(meta.get("data_source", "not stated")), path=bundle_dir,
    )


def list_bundles(extra_roots: list[Path] | None = None) -> list[BundleInfo]:
    """All bundles found in :func:`bundle_search_path` (and ``extra_roots``), by name."""
    seen: dict[str, BundleInfo] = {}
    for root in list(extra_roots or []) + bundle_search_path():
        if not root.is_dir():
            continue
        for cand in sorted(root.iterdir()):
            if (cand / "configs" / "metadata.json").is_file() and cand.name not in seen:
                try:
                    seen[cand.name] = bundle_info(cand)
                except BundleError:
                    continue
    return list(seen.values())
