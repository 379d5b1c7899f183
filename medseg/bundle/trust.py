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
    are parsed to an AST (never evaluated here) and accepted only in a small grammar, each node
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
    reference, a bound name, an item or method result of one); calling a reference (a handler
    attached to the engine: ``@checkpointloader(@evaluator)``) runs that allow-listed class's own
    ``__call__``; the one ``setattr`` the zoo uses, ``setattr(torch.backends.cudnn, 'benchmark' |
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
``%`` macros, ``_requires_`` and ``_mode_`` other than ``default``/``callable``
    are refused.
Files
    every file read from a bundle (configs, checksums, weights, reference pair) goes through
    :func:`bundle_file`: relative, no ``..``, no symbolic link anywhere below the bundle folder,
    inside it once resolved.

What the policy does NOT cover (residual risk, accepted): allow-listed MONAI classes still do
their job with the arguments given, e.g. ``LoadImaged`` reads the paths its datalist names (a
datalist written out as plain absolute paths is not refused) through the allow-listed readers.

Weights: ``models/model.pt`` is checked against ``models/sha256sums.txt`` (and the sha256 in
metadata) BEFORE it is read, then read with ``torch.load(..., weights_only=True)`` so that a
pickle payload cannot run code.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import re
import secrets
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
_NETWORK_TARGETS = {"MLFlowHandler", "ClearMLHandler", "ClearMLStatsHandler", "ClearMLImageHandler"}
# Arguments that name where a component writes: below the top level they must be ``@output_dir``
# (medseg points that id at its own output folder) or an expression that starts with it.
_WRITE_KEYS = {"output_dir", "save_dir", "log_dir", "folder_path", "output_file", "save_path"}
_DOWNLOAD_KEYS = {"pretrained", "pretrained_path", "url", "weights_url", "download"}
_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
_DOTTED_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_ALLOWED_IMPORTS = {"import monai", "import torch", "import numpy", "import numpy as np", "import glob",
                    "import os"}

_MODULE_ROOTS = {"torch", "monai", "np", "numpy", "glob", "os"}
_CONSTANTS = {"True", "False", "None"}
_BUILTINS = {"list", "sorted", "len", "str", "int", "float", "bool", "dict", "tuple", "range", "min", "max",
             "zip", "enumerate"}
_PATH_FUNCTIONS = ("join", "exists", "isfile", "isdir", "basename", "dirname", "splitext", "abspath", "normpath")
_DOTTED_CALLS = {"torch.device", "torch.cuda.is_available", "glob.glob", "monai.utils.set_determinism",
                 "monai.handlers.from_engine", "monai.data.load_decathlon_datalist",
                 *(f"os.path.{f}" for f in _PATH_FUNCTIONS),
                 # pure tensor functions (label merging in the zoo's postprocessing lambdas)
                 *(f"torch.{f}" for f in ("where", "cat", "stack", "argmax", "softmax", "sigmoid", "zeros_like",
                                          "ones_like", "logical_and", "logical_or", "logical_not"))}
# dtypes and MONAI's key names: plain values, nothing callable behind them
_DTYPES = ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool")
_DOTTED_VALUES = {*(f"torch.{t}" for t in (*_DTYPES, "float", "half", "double", "long", "int")),
                  *(f"{m}.{t}" for m in ("np", "numpy") for t in _DTYPES if t != "bfloat16"),
                  *(f"monai.utils.CommonKeys.{k}" for k in ("IMAGE", "LABEL", "PRED", "LOSS", "METADATA"))}
# setattr(torch.backends.cudnn, NAME, True/False): the one setattr the zoo's configs use
_CUDNN_FLAGS = {"benchmark", "deterministic"}
_METHODS = {"to", "run", "eval", "train", "parameters", "cpu", "items", "keys", "values", "get"}
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv)
_UNARYOPS = (ast.Not, ast.USub, ast.UAdd)
_CONSTANT_TYPES = (str, int, float, bool, type(None))
_ID_SEP = re.compile(r"::|#")
#: A config with more entries than this is refused unchecked (real bundles hold a few hundred).
MAX_CONFIG_ENTRIES = 200_000
_REF = re.compile(r"@(\w*(?:(?:::|#)\w*)*)")
_PATH_UP = re.compile(r"(^|[/\\])\.\.([/\\]|$)")


class _Grammar:
    """Checks one parsed ``$`` expression against the small grammar (see the module docstring).

    Every node is checked in the role it plays (a value, or the function of a call); anything
    not explicitly accepted is a problem. Modules never become values: ``torch``, ``np``, ...
    may only start one of the allow-listed dotted names, so no expression can reach a module
    object (``[torch][0].builtins``) and walk from there.
    """

    def __init__(self, refs: set[str]):
        self.refs = refs
        self.bound: set[str] = set()
        self.problems: list[str] = []

    def bad(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    # an object the config built (a reference, a comprehension variable, an item or method result of one)
    def is_object(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.refs or node.id in self.bound
        if isinstance(node, ast.Subscript):
            return self.is_object(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            return node.func.attr in _METHODS and self.is_object(node.func.value)
        return False

    def value(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, _CONSTANT_TYPES):
                self.bad(f"constant of type {type(node.value).__name__} is not allowed")
            elif isinstance(node.value, str) and _PATH_UP.search(node.value):
                self.bad("a path that climbs out with '..' is not allowed")
            elif isinstance(node.value, str) and _URL.match(node.value):
                self.bad("a network address is not allowed (nothing is fetched at load time)")
        elif isinstance(node, ast.Name):
            if node.id in _MODULE_ROOTS:
                names = sorted(d for d in _DOTTED_CALLS | _DOTTED_VALUES if d.startswith(node.id + "."))
                self.bad(f"module {node.id!r} may only be used through an allow-listed name "
                         f"({', '.join(names) or 'none'})")
            elif not (node.id in self.refs or node.id in self.bound or node.id in _CONSTANTS):
                self.bad(f"name {node.id!r} is not allowed")
        elif isinstance(node, ast.Attribute):
            self.attribute(node, call=False)
        elif isinstance(node, ast.Call):
            self.call(node)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS):
            self.value(node.left)
            self.value(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARYOPS):
            self.value(node.operand)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                self.value(v)
        elif isinstance(node, ast.Compare):
            for v in (node.left, *node.comparators):
                self.value(v)
        elif isinstance(node, ast.IfExp):
            for v in (node.test, node.body, node.orelse):
                self.value(v)
        elif isinstance(node, (ast.List, ast.Tuple)):
            for v in node.elts:
                if isinstance(v, ast.Starred):
                    self.bad("'*' unpacking is not allowed")
                else:
                    self.value(v)
        elif isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                self.bad("'**' unpacking is not allowed")
            for v in [k for k in node.keys if k is not None] + node.values:
                self.value(v)
        elif isinstance(node, ast.Subscript):
            self.value(node.value)
            self.value(node.slice)
        elif isinstance(node, ast.Slice):
            for v in (node.lower, node.upper, node.step):
                if v is not None:
                    self.value(v)
        elif isinstance(node, ast.ListComp):
            self.comprehension(node)
        elif isinstance(node, ast.Lambda):
            self.lambda_(node)
        else:
            self.bad(f"syntax {type(node).__name__} is not allowed")

    def comprehension(self, node: ast.ListComp) -> None:
        outer = set(self.bound)
        for gen in node.generators:
            if gen.is_async:
                self.bad("async comprehension is not allowed")
            self.value(gen.iter)  # the iterable sees only the names bound before it
            for t in ast.walk(gen.target):
                if isinstance(t, ast.Name):
                    self.bind(t.id, "comprehension variable")
                elif not isinstance(t, (ast.Tuple, ast.Store, ast.Load)):
                    self.bad(f"comprehension target {type(t).__name__} is not allowed")
            for cond in gen.ifs:
                self.value(cond)
        self.value(node.elt)
        self.bound = outer

    def bind(self, name: str, what: str) -> None:
        if name in _MODULE_ROOTS | _BUILTINS | _CONSTANTS or name in self.refs:
            self.bad(f"{what} {name!r} is not allowed")
        else:
            self.bound.add(name)

    def lambda_(self, node: ast.Lambda) -> None:
        """A lambda is a value; its parameters are names bound like comprehension variables, and
        its body obeys the same grammar (so it can do no more than the expression around it)."""
        a = node.args
        for default in [*a.defaults, *(d for d in a.kw_defaults if d is not None)]:
            self.value(default)
        outer = set(self.bound)
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x)]:
            self.bind(arg.arg, "lambda parameter")
        self.value(node.body)
        self.bound = outer

    def attribute(self, node: ast.Attribute, *, call: bool) -> None:
        if node.attr.startswith("_"):
            self.bad(f"attribute {node.attr!r} is not allowed")
            self.value(node.value)
            return
        name = _dotted(node)
        root = name.split(".", 1)[0] if name else None
        if root in _MODULE_ROOTS:
            if name not in (_DOTTED_CALLS if call else _DOTTED_VALUES):
                self.bad(f"attribute {name!r} is not allowed")
        elif call and node.attr in _METHODS and self.is_object(node.value):
            self.value(node.value)
        else:
            self.bad(f"call of {name or node.attr!r} is not allowed" if call else
                     f"attribute {name or node.attr!r} is not allowed")
            if name is None:
                self.value(node.value)  # say what is wrong inside, too

    @staticmethod
    def is_cudnn_flag(node: ast.Call) -> bool:
        """``setattr(torch.backends.cudnn, 'benchmark' | 'deterministic', True | False)``, exactly."""
        args = node.args
        return (len(args) == 3 and not node.keywords and _dotted(args[0]) == "torch.backends.cudnn"
                and isinstance(args[1], ast.Constant) and args[1].value in _CUDNN_FLAGS
                and isinstance(args[2], ast.Constant) and isinstance(args[2].value, bool))

    def call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "setattr" and self.is_cudnn_flag(node):
            return
        if isinstance(func, ast.Name):
            # calling an object the config built (a handler attaching to an engine, a transform on
            # data) runs that allow-listed class's own __call__, nothing the config names
            if func.id not in self.refs and (func.id not in _BUILTINS or func.id in self.bound):
                self.bad(f"name {func.id!r} is not allowed")
        elif isinstance(func, ast.Attribute):
            self.attribute(func, call=True)
        else:
            self.bad("call of a computed function is not allowed")
            self.value(func)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.bad("'*' unpacking is not allowed")
            else:
                self.value(arg)
        for kw in node.keywords:
            if kw.arg is None:
                self.bad("'**' unpacking is not allowed")
            else:
                self.value(kw.value)


def check_expression(expr: str) -> list[str]:
    """Problems of one ``$`` expression (without the ``$``) against the grammar above."""
    refs = _REF.findall(expr)
    token = f"_medseg_ref_{secrets.token_hex(6)}_"
    names = {r: f"{token}{i}" for i, r in enumerate(sorted(set(refs), key=len, reverse=True))}
    text = _REF.sub(lambda m: names[m.group(1)], expr)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ["not a single Python expression"]
    grammar = _Grammar(set(names.values()))
    if any(r == "" for r in refs):
        grammar.bad("empty '@' reference")
    try:
        grammar.value(tree.body)
    except RecursionError:
        return ["expression nested too deeply"]
    shown = []  # say '@id' where the checker saw its placeholder (longest placeholder first)
    for problem in grammar.problems:
        for ref, name in sorted(names.items(), key=lambda kv: len(kv[1]), reverse=True):
            problem = problem.replace(name, f"@{ref}")
        shown.append(problem)
    return shown


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


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

    def check_ref(where: str, ref: str, shown: str) -> None:
        if not ref or not _id_exists(scope, ref):
            findings.append(f"{source}:{where}: reference {shown[:60]!r} to an id that does not exist")
        elif _ID_SEP.split(ref)[0] == "imports":
            findings.append(f"{source}:{where}: reference {shown[:60]!r} into 'imports' (a module) is not allowed")

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
        if lowered in _WRITE_KEYS and "::" in where and "train" not in Path(source).stem and not (
                value == "@output_dir" or (isinstance(value, str) and value.startswith("$")
                                           and value[1:].lstrip().startswith("@output_dir"))):
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
        findings.extend(find_untrusted(cfg, source=name, known_ids=scope))
    if findings:
        shown = "; ".join(findings[:12])
        more = f" (and {len(findings) - 12} more)" if len(findings) > 12 else ""
        raise TrustError(f"bundle config runs code that is not allow-listed: {shown}{more}; {TRUST_HINT}")




def bundle_file(bundle_dir: str | Path, rel: str) -> Path:
    """The path of ``rel`` inside a bundle, refused (BundleError) when it could leave the bundle.

    ``rel`` must be a relative path without ``..``; no part of it below the bundle folder may be
    a symbolic link, and the resolved file must lie inside the resolved bundle folder. The file
    need not exist. Every file medseg reads from a bundle goes through here.
    """
    bundle_dir = Path(bundle_dir)
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts or "\\" in rel:
        raise BundleError(f"bundle {bundle_dir.name} names a path outside it ({rel[:80]!r})")
    here = bundle_dir
    for part in parts:
        here = here / part
        if here.is_symlink():
            raise BundleError(f"{Path(*parts).as_posix()} of bundle {bundle_dir.name} is a symbolic link; a "
                              "bundle's files must lie inside it (copy the file in instead)")
    if not here.resolve().is_relative_to(bundle_dir.resolve()):
        raise BundleError(f"{rel[:80]} of bundle {bundle_dir.name} lies outside the bundle")
    return here


def read_checksums(bundle_dir: str | Path) -> dict[str, str]:
    """Parse ``models/sha256sums.txt`` (``<hex>  <path relative to the bundle>`` per line)."""
    path = bundle_file(bundle_dir, "models/sha256sums.txt")
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
        bundle_file(bundle_dir, rel)  # refuses paths outside the bundle and links
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
        f = bundle_file(bundle_dir, rel)
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
    path = bundle_file(bundle_dir, rel)
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
