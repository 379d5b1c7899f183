"""The grammar of a bundle config's ``$`` expressions (the ``$`` expressions section of
:mod:`medseg.bundle.trust`): the text MONAI would evaluate is parsed to an AST, never evaluated,
and each node is checked in the role it plays; :func:`check_expression` lists what is refused."""

from __future__ import annotations

import ast
import re
import secrets

# MONAI rewrites relative ids ('@::x', '%::::x', after '#' -> '::') against the item's own position
_RELATIVE_ID = re.compile(r"[@%](?:::)+")
_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
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
_MAX_INT = 10**9
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv)
_UNARYOPS = (ast.Not, ast.USub, ast.UAdd)
_CONSTANT_TYPES = (str, int, float, bool, type(None))
_REF = re.compile(r"@(\w*(?:::\w*)*)")  # on the text after MONAI's '#' -> '::' normalisation
_PATH_UP = re.compile(r"(^|[/\\])\.\.([/\\]|$)")


class _Grammar:
    """Checks one parsed ``$`` expression against the small grammar (see the module docstring).

    Every node is checked in the role it plays (a value, or the function of a call); anything
    not explicitly accepted is a problem. Modules never become values: ``torch``, ``np``, ...
    may only start one of the allow-listed dotted names, so no expression can reach a module
    object (``[torch][0].builtins``) and walk from there.
    """

    def __init__(self, refs: set[str], token: str = "\0", callable_refs: set[str] | None = None,
                 allow_run: bool = True):
        self.refs = refs
        self.token = token  # every placeholder starts with it: seen inside a string, MONAI's would break it
        self.callable_refs = refs if callable_refs is None else callable_refs
        self.allow_run = allow_run
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
            elif isinstance(node.value, int) and abs(node.value) > _MAX_INT:
                self.bad(f"integers beyond {_MAX_INT} are not allowed (range() and repetition bombs)")
            elif isinstance(node.value, str) and _PATH_UP.search(node.value):
                self.bad("a path that climbs out with '..' is not allowed")
            elif isinstance(node.value, str) and _URL.match(node.value):
                self.bad("a network address is not allowed (nothing is fetched at load time)")
            elif isinstance(node.value, str) and self.token in node.value:
                # MONAI substitutes __local_refs['id'] textually, inside strings too: its quotes end the
                # string, so the text MONAI evaluates is not the one checked here
                self.bad("a reference inside a string is not allowed")
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
            if isinstance(node.op, ast.Mult) and any(
                    isinstance(x, (ast.List, ast.Tuple, ast.ListComp, ast.JoinedStr))
                    or (isinstance(x, ast.Constant) and isinstance(x.value, str)) for x in (node.left, node.right)):
                self.bad("repeating a list or string with '*' is not allowed (memory bomb)")
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
            if node.attr == "run" and not self.allow_run:
                self.bad("'.run()' is only allowed in the top-level 'run' section or one that no config "
                         "references and medseg never evaluates ('evaluating'); it starts an engine")
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
            elif func.id in self.refs and func.id not in self.callable_refs:
                # a transform or writer called with extra arguments (SaveImage(img, meta, filename))
                # escapes the checks made on its config; only handlers and lambdas may be called
                self.bad(f"calling {func.id} is not allowed (only a monai.handlers component or a $lambda)")
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
            if (kw.arg == "key" and isinstance(func, ast.Name) and func.id in _BUILTINS
                    and not isinstance(kw.value, (ast.Lambda, ast.Constant))):
                # sorted(..., key=@saver) calls a config-built object with data of the expression's choosing
                self.bad(f"key= of {func.id}() must be a lambda")
            if kw.arg is None:
                self.bad("'**' unpacking is not allowed")
            else:
                self.value(kw.value)


def check_expression(expr: str, *, callable_ref=None, allow_run: bool = True) -> list[str]:
    """Problems of one ``$`` expression (without the ``$``) against the grammar above.

    The text is first normalised the way MONAI does before it evaluates it (``#`` -> ``::``: a
    ``#`` comment for Python is a slice step for MONAI). ``callable_ref(id)`` says whether a
    reference may be called (default: any); ``allow_run`` whether ``.run()`` may be called.
    """
    expr = expr.replace("#", "::")
    if _RELATIVE_ID.search(expr):
        return ["a relative reference ('@::id', '@#id') is not allowed"]
    refs = _REF.findall(expr)
    token = f"_medseg_ref_{secrets.token_hex(6)}_"
    names = {r: f"{token}{i}" for i, r in enumerate(sorted(set(refs), key=len, reverse=True))}
    text = _REF.sub(lambda m: names[m.group(1)], expr)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ["not a single Python expression"]
    callable_refs = None if callable_ref is None else {n for r, n in names.items() if callable_ref(r)}
    grammar = _Grammar(set(names.values()), token, callable_refs, allow_run)
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
