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
    only ``$import monai``, ``$import torch``, ``$import numpy [as np]``, ``$import glob`` and
    ``$import os`` (the model zoo's ``datalist`` conventions need the last two; what can be
    reached through them is the allow-list below).
``$`` expressions
    are checked as the text MONAI evaluates: MONAI first turns every ``#`` into ``::`` (so a
    Python comment would become a slice step, evaluated), and substitutes ``__local_refs['id']``
    for each reference textually (inside a string its quotes end the string: a reference inside
    a string literal is refused); relative references (``@::id``, ``@#id``) are refused. The text
    is parsed to an AST (never evaluated here) and accepted only in a small grammar, each node
    checked in the role it plays: constants (no ``..`` path climbing, no ``scheme://``
    addresses); ``@id`` references to ids that exist (not into ``imports``: that would be a
    module); names bound by a list comprehension or a lambda in the same expression;
    ``True False None``; the builtins ``list sorted len str int float bool dict tuple range min
    max zip enumerate`` only as the function of a call; the modules ``torch monai np numpy glob
    os`` ONLY as the start of one of the allow-listed dotted names: calls (``torch.device``,
    ``torch.cuda.is_available``, ``glob.glob``, ``os.path.join/exists/basename/...``,
    ``monai.utils.set_determinism``, ``monai.handlers.from_engine``,
    ``monai.data.load_decathlon_datalist`` and pure tensor functions such as ``torch.where``) and
    values (dtypes, ``monai.utils.CommonKeys.*``). A module can never become a value, so
    ``[torch][0].builtins`` or ``[m for m in [np]][0]...`` reach nothing. Method calls ``to run
    eval train parameters cpu items keys values get`` only on an object the config built (a
    reference, a bound name, an item or method result of one), ``.run()`` only in the top-level
    ``run`` section or another top-level section that no config references and medseg never
    evaluates by name (the zoo's ``evaluating``/``inferring``; ``initialize``, ``network_def``,
    ``preprocessing``... are evaluated: an engine started there would run its writers); calling a reference only when it ends, in every config that defines it,
    at a monai.handlers component (``@checkpointloader(@evaluator)`` attaches it) or a ``$lambda``
    (a transform called with extra arguments, ``@saver(img, None, '/elsewhere')``, escapes the
    checks on its config); ``key=`` of ``sorted``/``min``/``max`` only a lambda (it calls what it
    is given); the one ``setattr`` the zoo uses, ``setattr(torch.backends.cudnn, 'benchmark' |
    'deterministic', True | False)``, exactly; ``+ - * / //``, comparisons, ``and or not``, ``x if
    c else y``, lists, tuples, dicts, subscripts, list comprehensions, lambdas (their body obeys the
    same grammar, their parameters cannot be called). Anything else is refused: attributes
    starting with ``_``, calls of computed functions or of bound names, f-strings, ``%``
    formatting, ``*``/``**`` unpacking in calls and literals, set/dict comprehensions and
    generators, walrus, statements.
    Examples accepted: ``$@bundle_root + '/models/model.pt'``,
    ``$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')``,
    ``$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))``, ``$@evaluator.run()``,
    ``$[{'image': i} for i in @datalist]``, ``$monai.utils.set_determinism(seed=0)``,
    ``$lambda x: x[1:]``.
``@`` references
    must name an id present in the config (a reference chain is as safe as its end, and every
    value on the way is checked by the same rules).
Arguments MONAI turns from a name into a class
    (``reader`` of LoadImage, ``writer`` of SaveImage, ``merger_cls`` of the sliding-window
    inferer: MONAI falls back to ``pydoc.locate`` of any dotted path or builtin) must be written
    out as one of the named MONAI classes (a string or a list of them; ``NumpyReader`` is not
    among them: it unpickles). Any other plain string that is a dotted name of an importable
    module (``os.system``) is refused wherever it stands.
Writing and the network
    below the top level, ``output_dir``/``save_dir``/``log_dir``/... must be ``@output_dir`` (or
    an expression starting with it), which medseg points at its own output folder (train.json,
    which medseg never runs from a bundle, may save checkpoints elsewhere); arguments that
    fetch at run time (``pretrained``, ``pretrained_path``, any key with ``url``, ``download`` set
    to anything but false/null) and any ``scheme://`` string outside metadata.json are refused,
    and so are the handlers that report to a server (MLflow, ClearML).
Components, from their class's signature
    ``_mode_: callable`` is refused for a class (the bare class could be built by an expression
    with arguments never checked: ``LoadImage(reader='subprocess.run', ...)``). A parameter that
    fetches (``pretrained``...) whose default is true must be set to false (``EfficientNetBN``
    downloads by default). A WRITER is any class taking ``output_dir``/``save_dir``/``log_dir``/
    ``mapping_file_path``/``filename``/``data_root_dir``/``folder_layout``/... : outside train
    configs its directory parameters must be given (defaults such as './' write to the current
    directory) as ``@output_dir`` or ``$@output_dir + 'sub'`` (nothing else: ``$@output_dir[:0] +
    '/x'``, ``$@output_dirx``); ``data_root_dir`` (relative sub-folders with '..'),
    ``folder_layout``, ``output_name_formatter``, ``base_path``, ``cache_dir`` are refused; its
    other arguments hold no path ('/', '\\', '..'), and those that name the file are written out.
    The top-level ``output_dir`` must lie in the bundle (``$@bundle_root + '/eval'``) or be a
    plain relative path without ``..`` (the zoo's ``'./output'``): every code path of medseg that
    evaluates a config replaces it with a folder of its own first. ``load_path`` must lie in the
    bundle, provably: ``@bundle_root`` followed by constants (the first starting with ``/``, no
    ``..``), through references whose every definition is so rooted (``$@checkpoint`` ->
    ``$@bundle_root + '/models/model.pt'``) and references to plain file names or to a choice of
    constant file names (the zoo's ``$'model.pt' if @highres else 'model_lowres.pt'``). A tail
    such as ``$@output_dir + 'x'`` (a sibling folder ``<out>x``) is refused for writers and
    readers alike.
``%`` macros, ``_requires_`` and ``_mode_`` other than ``default``/``callable``
    are refused.
Files
    every file read from a bundle (configs, checksums, weights, reference pair) goes through
    :func:`bundle_file`: relative, no ``..``, no symbolic link anywhere below the bundle folder,
    inside it once resolved.

What the policy does NOT cover (residual risk, accepted): allow-listed MONAI classes still do
their job with the arguments given, e.g. ``LoadImaged`` reads the paths its datalist names (a
datalist written out as plain absolute paths is not refused) through the allow-listed readers.

Layout and size: the policy above is one argument, so its config walk stays in one module
(~640 lines, a fifth of it this document: :func:`find_untrusted` and the component rules it
applies share every constant); the ``$`` grammar is :mod:`medseg.bundle.expressions`, the
reference and path proofs :mod:`medseg.bundle.trust_paths`, the files :mod:`medseg.bundle.files`.

Weights: ``models/model.pt`` is checked against ``models/sha256sums.txt`` (and the sha256 in
metadata) BEFORE it is read, then read with ``torch.load(..., weights_only=True)`` so that a
pickle payload cannot run code.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg._hashing import sha256_file  # noqa: F401  (importers take it from here)
from medseg.bundle.expressions import _DOTTED_VALUES, _REF, _RELATIVE_ID, _URL, check_expression
from medseg.bundle.files import bundle_file, check_checksums, load_weights, read_checksums  # noqa: F401
from medseg.bundle.trust_paths import (
    _ID_SEP,
    _MISSING,
    _id_exists,
    _in_folder,
    _literal_of,
    _lookup,
    _output_dir_ok,
    _relative_literal,
    _rooted_tail,
)
from medseg.errors import TrustError

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
# Arguments MONAI turns from a name into a class (``optional_import`` in monai.data, then ``pydoc.locate``
# of any dotted path or builtin): only these names, written out, may stand there. NumpyReader is left
# out on purpose: it calls ``np.load(allow_pickle=True)``.
_MONAI_READERS = {"ITKReader", "NibabelReader", "PILReader", "PydicomReader", "NrrdReader"}
_CLASS_BY_NAME = {
    "reader": _MONAI_READERS | {f"monai.data.{r}" for r in _MONAI_READERS},
    "writer": {"NibabelWriter", "ITKWriter", "PILWriter", "monai.data.NibabelWriter", "monai.data.ITKWriter",
               "monai.data.PILWriter"},
    "merger_cls": {"AvgMerger", "monai.inferers.merger.AvgMerger"},
}
_NAMED_CLASSES = set().union(*_CLASS_BY_NAME.values())
# Components that talk to a server as soon as they are built.
_NETWORK_TARGETS = {"MLFlowHandler", "ClearMLHandler", "ClearMLStatsHandler", "ClearMLImageHandler",
                    # fetch whatever their arguments say (torch.hub.load(..., trust_repo=True) runs the
                    # downloaded hubconf.py; Transchex always downloads BERT weights)
                    "PerceptualLoss", "TorchvisionModelPerceptualSimilarity", "RadImageNetPerceptualSimilarity",
                    "MedicalNetPerceptualSimilarity", "Transchex"}
# Arguments that name where a component writes: below the top level they must be ``@output_dir``
# (medseg points that id at its own output folder) or an expression that starts with it.
_WRITE_KEYS = {"output_dir", "save_dir", "log_dir", "folder_path", "output_file", "save_path"}
# Arguments naming a file an allow-listed component reads: must lie in the bundle ('@bundle_root + ...').
_READ_KEYS = {"load_path"}
_DOWNLOAD_KEYS = {"pretrained", "pretrained_path", "url", "weights_url", "download"}
# A component is a WRITER when its class takes any of these parameters (found from its signature, so
# that a writer nobody listed is still caught). Outside train configs its directory/file parameters
# must be present and point under ``@output_dir`` (a default such as './' or 'mapping.json' writes to
# the current directory), names must be plain file names, and the parameters that redirect where the
# file goes (a folder layout, a name formatter, a data root that makes relative sub-folders with '..',
# a cache or export folder) are refused.
_WRITE_PATH_PARAMS = _WRITE_KEYS | {"mapping_file_path", "store"}  # store: ZarrAvgMerger ('merged.zarr')
_WRITE_NAME_PARAMS = {"filename", "final_filename", "key_metric_filename", "file_prefix"}
_WRITE_FORBIDDEN_PARAMS = {"data_root_dir", "folder_layout", "output_name_formatter", "base_path", "cache_dir",
                           "value_store", "count_store"}
_DOTTED_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_ALLOWED_IMPORTS = {"import monai", "import torch", "import numpy", "import numpy as np", "import glob",
                    "import os"}

#: A config with more entries than this is refused unchecked (real bundles hold a few hundred).
MAX_CONFIG_ENTRIES = 200_000


def _resolve_target(target: Any) -> str | None:
    """Return the allowed full name of a ``_target_`` value, or None when it is not allowed."""
    if not isinstance(target, str) or not target or target[0] in "$@%":
        return None
    return _resolve_target_name(target)


@functools.lru_cache(maxsize=1)
def _component_locator():
    from monai.bundle.config_item import ComponentLocator

    return ComponentLocator()


@functools.lru_cache(maxsize=4096)
def _resolve_target_name(target: str) -> str | None:
    if not all(p.isidentifier() and not p.startswith("_") for p in target.split(".")):
        return None
    if target in _EXPLICIT_TARGETS or target in _ALLOWED_FUNCTIONS:
        return target
    if "." not in target:
        mod = _component_locator().get_component_module_name(target)
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
    if not inspect.isclass(obj) or not (obj.__module__ or "").startswith(package) or attr in _NETWORK_TARGETS:
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


def _may_be_called(config: dict, ref: str) -> bool:
    """Whether ``@ref(...)`` may stand in an expression: the reference (through plain ``@`` aliases)
    ends at a ``$lambda`` (its body obeys the grammar) or at a monai.handlers component in default
    mode (called on an engine, it attaches itself). Anything else (a transform, a writer, a class
    built with ``_mode_: callable``, the result of an expression) could be called with arguments
    that its config never showed the checker."""
    node = _lookup(config, ref)
    for _ in range(32):
        if isinstance(node, str) and node.startswith("@") and _REF.fullmatch(node.replace("#", "::")):
            node = _lookup(config, node[1:])
        else:
            break
    if isinstance(node, str) and node.startswith("$"):
        try:
            tree = ast.parse(node[1:].strip().replace("#", "::"), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
        return isinstance(tree.body, ast.Lambda)
    if isinstance(node, dict) and node.get("_mode_", "default") == "default":
        full = _resolve_target(node.get("_target_"))
        return bool(full) and full.startswith("monai.handlers.")
    return False


# Ids medseg evaluates by name in some code path (load_bundle, the zoo runner, run_inference_config):
# a top-level section outside these that no config references is never evaluated by medseg.
_EVALUATED_IDS = {"initialize", "device", "datalist", "network_def", "network", "preprocessing", "inferer",
                  "postprocessing", "dataset", "dataloader", "evaluator", "handlers", "checkpointloader",
                  "bundle_root", "output_dir", "dataset_dir", "imports", "_meta_"}


def _referenced_top_ids(scopes: list[dict]) -> set[str] | None:
    """First components of every id any string of any config references (``@x::1`` -> ``x``);
    None when a config is too large to walk (a YAML alias bomb shares subtrees: the walk is
    bounded like every other walk here), so that nothing counts as unreferenced."""
    out: set[str] = set()
    for scope in scopes:
        texts = list(itertools.islice(_strings(scope), MAX_CONFIG_ENTRIES + 1))
        if len(texts) > MAX_CONFIG_ENTRIES:
            return None
        for text in texts:
            t = text.replace("#", "::")
            if t[:1] in "$@%":
                out.update(_ID_SEP.split(r)[0] for r in _REF.findall(t) if r)
    return out


def _target_object(full: str) -> Any:
    modname, _, attr = full.rpartition(".")
    try:
        return getattr(importlib.import_module(modname), attr)
    except (ImportError, AttributeError):
        return None


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            if isinstance(k, str):
                yield k  # a key can become a file name (a checkpoint's save_dict)
            if k != "_target_":
                yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _component_problems(node: dict, *, run_config: bool, scopes: list[dict] | None = None) -> list[str]:
    """What a component (a dict with an allow-listed ``_target_``) may not do given the arguments
    its class really takes (its signature): run as a bare class, fetch by default, write outside."""
    full = _resolve_target(node.get("_target_"))
    if full is None:
        return []  # refused already
    obj = _target_object(full)
    problems = []
    if node.get("_mode_") == "callable" and inspect.isclass(obj):
        problems.append(f"_mode_ 'callable' of class {full!r}: an expression could build it with arguments "
                        "that are never checked")
    try:
        params = inspect.signature(obj).parameters if obj is not None else {}
    except (TypeError, ValueError):
        params = {}
    for name, p in params.items():
        low = name.lower()
        if (low in _DOWNLOAD_KEYS or "url" in low) and p.default not in (False, None, "", inspect.Parameter.empty) \
                and node.get(name, p.default) not in (False, None, ""):
            problems.append(f"{full} fetches by default ({name}={p.default!r}); set {name!r} to false")
    names = set(params)
    if not names & (_WRITE_PATH_PARAMS | _WRITE_NAME_PARAMS | _WRITE_FORBIDDEN_PARAMS):
        return problems
    for name in sorted(names & _WRITE_PATH_PARAMS):
        if run_config and not _output_dir_ok(node.get(name)):
            problems.append(f"{full} writes files: {name!r} must be given as '@output_dir' (its default "
                            f"{params[name].default!r} is outside the output folder)")
    for name in sorted(names & _WRITE_FORBIDDEN_PARAMS):
        if node.get(name) not in (None, "", False):
            problems.append(f"{full}: {name!r} moves where it writes; not allowed")
    for key, arg in node.items():
        if not isinstance(key, str) or key in _WRITE_PATH_PARAMS or key in _WRITE_FORBIDDEN_PARAMS \
                or key in ComponentLocatorKeys:
            continue
        names_a_file = bool(_NAMING_ARG.search(key))
        for text in _strings(arg):
            if text.startswith("$") and text[1:].strip() in _DOTTED_VALUES:
                continue
            if text.startswith("@") and scopes:
                literal = _literal_of(scopes, text)
                if literal is not _MISSING:  # checked as if written out
                    if isinstance(literal, str) and ("/" in literal or "\\" in literal or ".." in literal):
                        problems.append(f"{full}: argument {key!r} {text[:40]!r} of a writer holds a path")
                    continue
            if text[:1] and text[:1] in "$@%" and names_a_file:  # '' is a literal (the zoo's output_postfix)
                problems.append(f"{full}: argument {key!r} of a writer must be written out ({text[:40]!r})")
            elif text[:1] not in "$@" and ("/" in text or "\\" in text or ".." in text):
                problems.append(f"{full}: argument {key!r} {text[:40]!r} of a writer holds a path")
    return problems


# writer arguments that make up a file name: written out, never computed
_NAMING_ARG = re.compile(r"postfix|prefix|ext|name|dir|path|file|folder|root|format|layout", re.IGNORECASE)


def _network_def_problems(config: dict, scope: dict) -> list[str]:
    """``network_def`` is what medseg builds when it only loads a bundle (``load_bundle``), and there
    the bundle's own ``output_dir`` stands (a folder of the bundle, possibly a link out of it). So
    everything MONAI resolves for it (its subtree and, transitively, every id it references) may
    build networks only: no transform, dataset, engine or handler that a subscript, an iteration or
    a call could run (``@dataset[0]`` runs a SaveImaged)."""
    if "network_def" not in config:
        return []
    seen: set[str] = set()
    todo = ["network_def"]
    problems: list[str] = []
    while todo and len(seen) < 10_000:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        node = _lookup(config, ref)
        if node is _MISSING:
            node = _lookup(scope, ref)
        for component in _components(node):
            full = _resolve_target(component.get("_target_"))
            if full and not (full.startswith("monai.networks.") or full == "medseg.models.build_network"):
                problems.append(f"network_def reaches {full} (through @{ref}): building the network may only "
                                "build networks")
        for text in _strings(node):
            if text[:1] in "$@":
                todo.extend(r for r in _REF.findall(text.replace("#", "::")) if r)
    return sorted(set(problems))


def _components(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        if "_target_" in node:
            yield node
        for v in node.values():
            yield from _components(v)
    elif isinstance(node, list):
        for v in node:
            yield from _components(v)


ComponentLocatorKeys = {"_target_", "_disabled_", "_requires_", "_desc_", "_mode_"}


def _names_python_object(text: str) -> bool:
    """True for a dotted name whose first part is an importable module (``os.system``)."""
    import importlib.util
    import sys

    if not _DOTTED_PATH.match(text):
        return False
    root = text.split(".", 1)[0]
    if root in sys.stdlib_module_names or root in sys.builtin_module_names:
        return True
    try:
        return importlib.util.find_spec(root) is not None
    except (ImportError, ValueError):
        return False


def _class_by_name_problem(key: str, value: Any) -> str | None:
    """Why ``value`` may not stand at ``key``, an argument MONAI resolves from a name to a class."""
    allowed = _CLASS_BY_NAME[key]
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) or item is None:
            continue  # a component: its own _target_ is checked like any other
        if not (isinstance(item, str) and item in allowed):
            names = ", ".join(sorted(a for a in allowed if "." not in a))
            return f"{key} {str(item)[:60]!r} is not a MONAI {key.removesuffix('_cls')} ({names})"
    return None


def find_untrusted(config: Any, *, source: str = "config", known_ids: dict | None = None,
                   other_configs: list[dict] | None = None) -> list[str]:
    """List every construct in a parsed bundle config that the trust policy refuses.

    ``known_ids`` holds other configs the references may point into (e.g. the metadata under
    ``_meta_``). Nothing is imported from the config and nothing is evaluated.
    """
    findings: list[str] = []
    if not isinstance(config, dict):
        return [f"{source}: top level is not a JSON object"]
    scope = dict(known_ids or {})
    # the same id may be defined by several configs (MONAI merges them, or runs one alone): a
    # reference may be called only when it is callable in every config that defines it
    scopes = [config, scope, *(c for c in other_configs or [] if isinstance(c, dict))]

    def callable_ref(ref: str) -> bool:
        return all(_may_be_called(s, ref) for s in scopes if _id_exists(s, ref))
    scope.update(config)

    referenced: list[set[str] | None] = []  # computed once, when a '.run()' outside 'run' is met

    def run_allowed(where: str) -> bool:
        """'.run()' starts an engine: only in 'run', or in a top-level section ('evaluating',
        'inferring') that medseg never evaluates by name and no config references."""
        top = where.split("::", 1)[0]
        if top == "run":
            return True
        if top in _EVALUATED_IDS:
            return False
        if not referenced:
            try:
                referenced.append(_referenced_top_ids(scopes))
            except RecursionError:
                referenced.append(None)
        return referenced[0] is not None and top not in referenced[0]

    def check_ref(where: str, ref: str, shown: str) -> None:
        if not ref or not _id_exists(scope, ref):
            findings.append(f"{source}:{where}: reference {shown[:60]!r} to an id that does not exist")
        elif _ID_SEP.split(ref)[0] == "imports":
            findings.append(f"{source}:{where}: reference {shown[:60]!r} into 'imports' (a module) is not allowed")

    def check_string(where: str, value: str, *, import_ok: bool = False) -> None:
        value = value.replace("#", "::")  # what MONAI sees: it normalises every string this way first
        if value[:1] in "$@" and _RELATIVE_ID.search(value):
            findings.append(f"{source}:{where}: relative reference in {value[:60]!r} is not allowed")
            return
        if value.startswith("%"):
            findings.append(f"{source}:{where}: macro {value[:60]!r} (reads another file)")
        elif value.startswith("$"):
            expr = value[1:].strip()
            if re.match(r"^(import|from)\s", expr):
                if not (import_ok and " ".join(expr.split()) in _ALLOWED_IMPORTS):
                    findings.append(f"{source}:{where}: import {value[:60]!r}")
                return
            for problem in check_expression(expr, callable_ref=callable_ref, allow_run=run_allowed(where)):
                findings.append(f"{source}:{where}: expression {value[:60]!r}: {problem}")
            for ref in _REF.findall(expr):
                if ref:
                    check_ref(where, ref, "@" + ref)
        elif value.startswith("@"):
            if not _REF.fullmatch(value):
                findings.append(f"{source}:{where}: reference {value[:60]!r} is malformed")
            else:
                check_ref(where, value[1:], value)
        elif _URL.match(value) and Path(source).stem != "metadata":  # metadata's schema/links are never fetched
            findings.append(f"{source}:{where}: network address {value[:60]!r} (nothing is fetched at load time)")
        elif value not in _NAMED_CLASSES and _names_python_object(value):
            findings.append(f"{source}:{where}: {value[:60]!r} names a Python object outside the allow-list")

    try:
        entries = list(itertools.islice(_walk(config, ""), MAX_CONFIG_ENTRIES + 1))
    except RecursionError:
        return [f"{source}: nested too deeply to be checked"]
    if len(entries) > MAX_CONFIG_ENTRIES:
        return [f"{source}: more than {MAX_CONFIG_ENTRIES} entries (YAML aliases expand this way); not checked"]
    run_config = "train" not in Path(source).stem
    findings.extend(f"{source}: {p}" for p in _network_def_problems(config, scope))
    for component in _components(config):
        findings.extend(f"{source}: {p}" for p in _component_problems(component, run_config=run_config,
                                                                        scopes=scopes))
    for where, key, value in entries:
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
        if isinstance(key, str) and ("::" in key or "#" in key):
            # MONAI's id of {"a::b": x} is the id of {"a": {"b": y}}: the first one parsed wins, so what a
            # reference reaches would not be what this checker looks at
            findings.append(f"{source}:{where}: key {key[:60]!r} holds the id separator ('::' or '#')")
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
        lowered = key.lower() if isinstance(key, str) else ""
        if (lowered in _DOWNLOAD_KEYS or "url" in lowered) and value not in (False, None, ""):
            findings.append(f"{source}:{where}: {key} asks to fetch weights at run time (not allowed offline, "
                            "and unverified)")
            continue
        if lowered in _CLASS_BY_NAME:
            problem = _class_by_name_problem(lowered, value)
            if problem:
                findings.append(f"{source}:{where}: {problem}")
                continue
        if where == "output_dir" and "train" not in Path(source).stem and not (
                _in_folder(_rooted_tail(value, scopes)) or _output_dir_ok(value) or _relative_literal(value)):
            # a plain relative path ('./output', the zoo's default) is accepted too: every code path of
            # medseg that evaluates a config replaces output_dir with a folder of its own first
            # medseg points it at its own output folder when it runs inference.json, but not while it
            # only builds the network (load_bundle): there the bundle's own value stands
            findings.append(f"{source}:output_dir: {str(value)[:60]!r} must lie in the bundle "
                            "(\"$@bundle_root + '/eval'\" or a relative path such as './eval')")
            continue
        if lowered in _READ_KEYS and not _in_folder(_rooted_tail(value, scopes)):
            # CheckpointLoader reads it as soon as it is called on an engine (@checkpointloader(@evaluator))
            findings.append(f"{source}:{where}: {key} {str(value)[:60]!r} reads a file outside the bundle "
                            "(use \"$@bundle_root + '/models/...'\")")
            continue
        if lowered in _WRITE_KEYS and "::" in where and "train" not in Path(source).stem and not _output_dir_ok(value):
            findings.append(f"{source}:{where}: {key} {str(value)[:60]!r} writes outside the output folder "
                            "(use '@output_dir')")
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
    meta = next((configs[n] for n in ("metadata.json", "metadata.yaml", "metadata.yml") if n in configs), None)
    # MONAI merges configs (evaluate over train or inference, multi-GPU over train): a reference may
    # point into any of them. What is refused does not depend on this: every value is checked.
    scope: dict[str, Any] = {}
    for name, cfg in configs.items():
        if isinstance(cfg, dict) and Path(name).stem != "metadata":
            scope.update(cfg)
    if isinstance(meta, dict):
        scope["_meta_"] = meta
    findings: list[str] = []
    for name, cfg in configs.items():
        findings.extend(find_untrusted(cfg, source=name, known_ids=scope, other_configs=list(configs.values())))
    if findings:
        shown = "; ".join(findings[:12])
        more = f" (and {len(findings) - 12} more)" if len(findings) > 12 else ""
        raise TrustError(f"bundle config runs code that is not allow-listed: {shown}{more}; {TRUST_HINT}")


