"""Trust policy for MONAI bundles: a bundle config is code, weights are pickles.

A MONAI config can run Python: ``$`` expressions are ``eval``-ed, ``_target_`` imports and calls
any dotted name, ``imports`` runs import statements, ``%`` macros read other files, ``_mode_:
debug`` starts pdb and ``_requires_`` forces evaluation order. Unless the user passes
``trust=True`` (CLI ``--trust-bundle``), medseg parses the JSON itself (no MONAI evaluation),
walks every value and refuses the bundle (:class:`~medseg.errors.TrustError`) unless all of
these hold:

``_target_``
    resolves to a class in ``monai.networks.nets``, ``monai.transforms``, ``monai.inferers``,
    ``monai.handlers``, ``monai.engines``, ``monai.losses``, ``monai.metrics``, one of
    ``monai.data.{Dataset, CacheDataset, DataLoader, ThreadDataLoader}``,
    ``torch.optim.{Adam, AdamW, SGD}``, ``torch.optim.lr_scheduler.{StepLR, CosineAnnealingLR}``,
    or medseg's own ``medseg.models.build_network`` / ``medseg.transforms.presets.preprocessing`` /
    ``medseg.transforms.monai_postprocess.MedsegPostprocessd`` (its postprocess dict is validated
    against a fixed set of operations; it runs no code from the config).
    Short names (``"Compose"``) are resolved the way MONAI does (its component locator, MONAI
    modules only) and the result must be allowed. A ``reader`` argument must name a MONAI reader.
``imports``
    only ``$import monai``, ``$import torch``, ``$import numpy [as np]`` and ``$import glob``
    (the standard library's file-name matcher: the model-zoo ``datalist`` convention needs it).
``$`` expressions
    parse as ONE Python expression (no statements, no ``;``) built only from: constants,
    ``@id`` references to ids that exist in the config, names ``torch monai np numpy glob`` and
    names bound by a comprehension in the same expression, the builtins ``list sorted len str int
    float bool dict tuple range min max zip enumerate``, the dotted functions
    ``torch.device torch.cuda.is_available glob.glob monai.utils.set_determinism
    monai.handlers.from_engine`` and dtypes ``torch.float16/32/64 torch.int64 torch.uint8``,
    methods ``to run eval train parameters cpu items keys values get`` on a reference or a
    comprehension variable, arithmetic ``+ - * /``, comparisons, ``and or not``, ``x if c
    else y``, lists, tuples, dicts, list comprehensions and subscripts. No attribute starting
    with ``_``, no lambda, no keyword-argument unpacking of unknown objects.
    Examples accepted: ``$@bundle_root + '/models/model.pt'``,
    ``$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')``,
    ``$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))``, ``$@evaluator.run()``,
    ``$monai.utils.set_determinism(seed=0)``.
``@`` references
    must name an id present in the config (a reference chain is as safe as its end, and every
    value on the way is checked by the same rules).
``%`` macros, ``_requires_`` and ``_mode_`` other than ``default``/``callable``
    are refused, and so are arguments that fetch weights at run time (``pretrained``,
    ``pretrained_path``, ``url``, ``weights_url``, ``download`` set to anything but false/null).

What the policy does NOT cover (residual risk, accepted): allow-listed MONAI classes still do
their job with the arguments given, e.g. ``SaveImaged`` writes files where its ``output_dir``
says (medseg overrides ``output_dir`` when it runs a bundle) and ``LoadImaged`` reads any path.

Weights: ``models/model.pt`` is checked against ``models/sha256sums.txt`` (and the sha256 in
metadata) BEFORE it is read, then read with ``torch.load(..., weights_only=True)`` so that a
pickle payload cannot run code.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg._hashing import sha256_file
from medseg.errors import BundleError, TrustError

TRUST_HINT = "rerun with --trust-bundle if you trust its author"

_MONAI_PACKAGES = (
    "monai.networks.nets",
    "monai.transforms",
    "monai.inferers",
    "monai.handlers",
    "monai.engines",
    "monai.losses",
    "monai.metrics",
)
_EXPLICIT_TARGETS = {
    "monai.data.Dataset",
    "monai.data.CacheDataset",
    "monai.data.DataLoader",
    "monai.data.ThreadDataLoader",
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.SGD",
    "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "medseg.models.build_network",
    "medseg.transforms.presets.preprocessing",
    "medseg.transforms.monai_postprocess.MedsegPostprocessd",
}
_ALLOWED_FUNCTIONS = {"monai.handlers.from_engine"}
_MONAI_READERS = {"ITKReader", "NibabelReader", "NumpyReader", "PILReader", "PydicomReader", "NrrdReader"}
_DOWNLOAD_KEYS = {"pretrained", "pretrained_path", "url", "weights_url", "download"}
_ALLOWED_IMPORTS = {"import monai", "import torch", "import numpy", "import numpy as np", "import glob"}

_EXPR_NAMES = {"torch", "monai", "np", "numpy", "glob", "True", "False", "None"}
_BUILTINS = {"list", "sorted", "len", "str", "int", "float", "bool", "dict", "tuple", "range", "min", "max",
             "zip", "enumerate"}
_DOTTED_CALLS = {"torch.device", "torch.cuda.is_available", "glob.glob", "monai.utils.set_determinism",
                 "monai.handlers.from_engine"}
_DOTTED_VALUES = {"torch.float16", "torch.float32", "torch.float64", "torch.int64", "torch.uint8"}
_METHODS = {"to", "run", "eval", "train", "parameters", "cpu", "items", "keys", "values", "get"}
_OK_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Attribute, ast.Constant, ast.BinOp, ast.Add, ast.Sub,
    ast.Mult, ast.Div, ast.List, ast.Tuple, ast.Dict, ast.ListComp, ast.comprehension, ast.IfExp,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.BoolOp,
    ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Subscript, ast.Slice, ast.keyword, ast.Load,
    ast.Store,
)
_REF = re.compile(r"@(\w*(?:(?:::|#)\w*)*)")
_REF_NAME = "__medseg_ref_"
_ID_SEP = re.compile(r"::|#")


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def check_expression(expr: str) -> list[str]:
    """Problems of one ``$`` expression (without the ``$``) against the grammar above."""
    refs = _REF.findall(expr)
    text = _REF.sub(lambda m: f"{_REF_NAME}{len(m.group(1))}", expr)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return ["not a single Python expression"]
    bound = {t.id for c in ast.walk(tree) if isinstance(c, ast.comprehension)
             for t in ast.walk(c.target) if isinstance(t, ast.Name)}
    problems: list[str] = []
    if any(r == "" for r in refs):
        problems.append("empty '@' reference")
    for node in ast.walk(tree):
        if not isinstance(node, _OK_NODES):
            problems.append(f"syntax {type(node).__name__} is not allowed")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                problems.append(f"attribute {node.attr!r} is not allowed")
        elif isinstance(node, ast.keyword) and node.arg is None:
            problems.append("'**' unpacking is not allowed")
        elif isinstance(node, ast.Name):
            if not (node.id in _EXPR_NAMES or node.id in _BUILTINS or node.id in bound
                    or node.id.startswith(_REF_NAME)):
                problems.append(f"name {node.id!r} is not allowed")
        elif isinstance(node, ast.Call):
            func = node.func
            name = _dotted(func)
            if isinstance(func, ast.Name):
                if func.id not in _BUILTINS:
                    problems.append(f"call of {func.id!r} is not allowed")
            elif isinstance(func, ast.Attribute):
                root = func.value
                if name in _DOTTED_CALLS:
                    continue
                is_obj = (isinstance(root, ast.Name) and (root.id.startswith(_REF_NAME) or root.id in bound)) \
                    or isinstance(root, ast.Subscript)
                if not (is_obj and func.attr in _METHODS):
                    problems.append(f"call of {name or func.attr!r} is not allowed")
            else:
                problems.append("call of a computed function is not allowed")
    # dotted module attributes used as values (torch.float32) or partial chains
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name is None:
                continue
            root = name.split(".", 1)[0]
            if root in {"torch", "monai", "np", "numpy", "glob"}:
                ok = any(name == d or d.startswith(name + ".") for d in _DOTTED_CALLS | _DOTTED_VALUES)
                if not ok:
                    problems.append(f"attribute {name!r} is not allowed")
    return problems


def _resolve_target(target: Any) -> str | None:
    """Return the allowed full name of a ``_target_`` value, or None when it is not allowed."""
    if not isinstance(target, str) or not target or target[0] in "$@%":
        return None
    if not all(p.isidentifier() and not p.startswith("_") for p in target.split(".")):
        return None
    if target in _EXPLICIT_TARGETS or target in _ALLOWED_FUNCTIONS:
        return target
    if "." not in target:
        from monai.bundle.config_item import ComponentLocator

        mod = ComponentLocator().get_component_module_name(target)
        if isinstance(mod, list):
            mod = mod[0] if mod else None
        if not mod:
            return None
        full = f"{mod}.{target}"
    else:
        full = target
    modname, _, attr = full.rpartition(".")
    if modname.startswith("monai.data.") and f"monai.data.{attr}" in _EXPLICIT_TARGETS:
        import monai.data

        try:
            same = getattr(importlib.import_module(modname), attr) is getattr(monai.data, attr)
        except (ImportError, AttributeError):
            same = False
        return full if same else None
    package = next((p for p in _MONAI_PACKAGES if modname == p or modname.startswith(p + ".")), None)
    if package is None:
        return None
    try:
        obj = getattr(importlib.import_module(modname), attr)
    except (ImportError, AttributeError):
        return None
    if not inspect.isclass(obj) or not (obj.__module__ or "").startswith(package):
        return None
    return full


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """Yield ``(id_path, key, value)`` for every dict entry and list item."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}::{k}" if path else str(k)
            yield p, k, v
            yield from _walk(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            p = f"{path}::{i}" if path else str(i)
            yield p, i, v
            yield from _walk(v, p)


def _id_exists(config: dict, ref: str) -> bool:
    node: Any = config
    for part in _ID_SEP.split(ref):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def find_untrusted(config: Any, *, source: str = "config", known_ids: dict | None = None) -> list[str]:
    """List every construct in a parsed bundle config that the trust policy refuses.

    ``known_ids`` holds other configs the references may point into (e.g. the metadata under
    ``_meta_``). Nothing is imported from the config and nothing is evaluated.
    """
    findings: list[str] = []
    if not isinstance(config, dict):
        return [f"{source}: top level is not a JSON object"]
    scope = dict(known_ids or {})
    scope.update(config)

    def check_string(where: str, value: str, *, import_ok: bool = False) -> None:
        if value.startswith("%"):
            findings.append(f"{source}:{where}: macro {value[:60]!r} (reads another file)")
        elif value.startswith("$"):
            expr = value[1:].strip()
            if re.match(r"^(import|from)\s", expr):
                if not (import_ok and " ".join(expr.split()) in _ALLOWED_IMPORTS):
                    findings.append(f"{source}:{where}: import {value[:60]!r}")
                return
            for problem in check_expression(expr):
                findings.append(f"{source}:{where}: expression {value[:60]!r}: {problem}")
            for ref in _REF.findall(expr):
                if ref and not _id_exists(scope, ref):
                    findings.append(f"{source}:{where}: reference '@{ref}' to an id that does not exist")
        elif value.startswith("@"):
            ref = value[1:]
            if not _REF.fullmatch(value) or not _id_exists(scope, ref):
                findings.append(f"{source}:{where}: reference {value[:60]!r} to an id that does not exist")

    for where, key, value in _walk(config, ""):
        if key == "imports" and where == "imports":
            if not isinstance(value, list):
                findings.append(f"{source}:imports is not a list")
                continue
            for i, item in enumerate(value):
                if not (isinstance(item, str) and item.startswith("$")):
                    findings.append(f"{source}:imports::{i}: {str(item)[:60]!r} is not an import statement")
                else:
                    check_string(f"imports::{i}", item, import_ok=True)
            continue
        if where.startswith("imports::"):
            continue
        if key == "_target_":
            if _resolve_target(value) is None:
                findings.append(f"{source}:{where}: _target_ {str(value)[:60]!r} is not allow-listed")
            continue
        if key == "_requires_":
            findings.append(f"{source}:{where}: _requires_ is not allowed")
            continue
        if key == "_mode_" and value not in ("default", "callable"):
            findings.append(f"{source}:{where}: _mode_ {str(value)[:30]!r} is not allowed")
            continue
        if key in _DOWNLOAD_KEYS and value not in (False, None, ""):
            findings.append(f"{source}:{where}: {key} asks to fetch weights at run time (not allowed offline, "
                            "and unverified)")
            continue
        if key == "reader" and isinstance(value, str) and value not in _MONAI_READERS:
            findings.append(f"{source}:{where}: reader {value[:60]!r} is not a MONAI reader")
            continue
        if isinstance(key, str) and key[:1] in "$@%":
            findings.append(f"{source}:{where}: key {key[:60]!r} looks like code")
        if isinstance(value, str):
            check_string(where, value)
    return findings


def ensure_trusted(configs: dict[str, Any], *, trust: bool = False) -> None:
    """Raise :class:`TrustError` listing every refused construct of ``configs`` (name -> parsed JSON).

    ``trust=True`` skips the check (the user vouches for the bundle's author).
    """
    if trust:
        return
    meta = configs.get("metadata.json")
    known = {"_meta_": meta} if isinstance(meta, dict) else {}
    findings: list[str] = []
    for name, cfg in configs.items():
        scope = dict(known)
        if name == "evaluate.json" and isinstance(configs.get("inference.json"), dict):
            scope.update(configs["inference.json"])  # evaluate.json is merged over inference.json
        findings.extend(find_untrusted(cfg, source=name, known_ids=scope))
    if findings:
        shown = "; ".join(findings[:12])
        more = f" (and {len(findings) - 12} more)" if len(findings) > 12 else ""
        raise TrustError(f"bundle config runs code that is not allow-listed: {shown}{more}; {TRUST_HINT}")




def read_checksums(bundle_dir: str | Path) -> dict[str, str]:
    """Parse ``models/sha256sums.txt`` (``<hex>  <path relative to the bundle>`` per line)."""
    path = Path(bundle_dir) / "models" / "sha256sums.txt"
    if not path.is_file():
        raise BundleError(f"bundle {Path(bundle_dir).name} has no models/sha256sums.txt; rebuild it with "
                          "`medseg bundle build`")
    sums: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise BundleError(f"models/sha256sums.txt of bundle {Path(bundle_dir).name} has a malformed line")
        rel = parts[1].strip().lstrip("*")
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise BundleError(f"models/sha256sums.txt of bundle {Path(bundle_dir).name} names a path outside it")
        sums[rel] = parts[0]
    return sums


def check_checksums(bundle_dir: str | Path) -> list[str]:
    """Return mismatches between the files of a bundle and its checksum file (empty: all match)."""
    bundle_dir = Path(bundle_dir)
    problems = []
    sums = read_checksums(bundle_dir)
    if "models/model.pt" not in sums:
        problems.append("models/sha256sums.txt has no entry for models/model.pt")
    for rel, expected in sums.items():
        f = bundle_dir / rel
        if not f.is_file():
            problems.append(f"{rel} listed in sha256sums.txt is missing")
        elif sha256_file(f) != expected:
            problems.append(f"{rel} does not match its sha256 in models/sha256sums.txt")
    return problems


def load_weights(bundle_dir: str | Path, rel: str = "models/model.pt") -> dict[str, Any]:
    """Verify ``rel`` against the bundle's checksums, then load it as a state dict.

    Uses ``torch.load(weights_only=True)``: a pickle that tries to run code is refused with a
    :class:`BundleError` instead of being executed.
    """
    import pickle

    import torch

    bundle_dir = Path(bundle_dir)
    sums = read_checksums(bundle_dir)
    path = bundle_dir / rel
    if rel not in sums:
        raise BundleError(f"{rel} of bundle {bundle_dir.name} has no sha256 in models/sha256sums.txt")
    if not path.is_file():
        raise BundleError(f"{rel} of bundle {bundle_dir.name} is missing")
    if sha256_file(path) != sums[rel]:
        raise BundleError(f"{rel} of bundle {bundle_dir.name} does not match its sha256: the weights were "
                          "altered or damaged; rebuild or re-download the bundle")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{rel} of bundle {bundle_dir.name} is not a plain state dict and was not loaded "
                          f"(weights_only refused it: {first[:120]})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BundleError(f"{rel} of bundle {bundle_dir.name} does not hold a state dict of tensors")
    return obj
