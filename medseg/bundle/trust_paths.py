"""References and paths in a bundle config (the "Writing and the network" rules of
:mod:`medseg.bundle.trust`): looking up ``@id`` references, the literal a reference stands for,
and the proofs that a path is rooted in the bundle (``load_path``) or in medseg's output folder
(writers), by constants only."""

from __future__ import annotations

import ast
import re
from typing import Any

from medseg.bundle.expressions import _REF, _URL

_ROOTED_EXPR = r"""^\$\s*@{root}\s*((?:\+\s*(?:'[^'\\]*'|"[^"\\]*")\s*)*)$"""
_STR_CONST = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")
_ID_SEP = re.compile(r"::|#")
_MISSING = object()


def _lookup(config: dict, ref: str) -> Any:
    node: Any = config
    for part in _ID_SEP.split(ref):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _id_exists(config: dict, ref: str) -> bool:
    return _lookup(config, ref) is not _MISSING


def _literal_of(scopes: list[dict], text: str) -> Any:
    """The plain value ``@id`` stands for (through ``@`` aliases) when every config that defines
    it gives the same literal (a string that is no expression, reference or macro, a number, a
    bool, None); ``_MISSING`` otherwise. A writer argument written as such a reference is checked
    as if the literal stood there (the zoo writes ``"output_postfix": "@output_postfix"``)."""
    values = []
    for scope in scopes:
        node: Any = text
        for _ in range(32):
            if not (isinstance(node, str) and node.startswith("@") and _REF.fullmatch(node.replace("#", "::"))):
                break
            node = _lookup(scope, node[1:].replace("#", "::"))
        if node is _MISSING:
            continue
        if isinstance(node, str) and node[:1] in "$@%" or not isinstance(node, (str, int, float, bool, type(None))):
            return _MISSING
        values.append(node)
    return values[0] if values and all(v == values[0] for v in values) else _MISSING


def _output_dir_ok(value: Any, root: str = "output_dir") -> bool:
    """``@output_dir`` itself, or ``$@output_dir + 'sub' + ...`` with constant parts that do not
    climb out ('..') -- nothing else can make a path that starts with it and stays under it."""
    if value == f"@{root}":
        return True
    if not isinstance(value, str):
        return False
    m = re.match(_ROOTED_EXPR.format(root=root), value)
    if not m:
        return False
    tail = "".join(a or b for a, b in _STR_CONST.findall(m.group(1)))
    # '$@output_dir + "x"' would name a sibling ('<out>x'): the tail must start a sub-path
    return tail == "" or (tail[0] in "/\\" and ".." not in re.split(r"[/\\]", tail))
_TERM = re.compile(r"""\s*(@\w+(?:::\w+)*|'[^'\\]*'|"[^"\\]*")\s*""")


def _rooted_tail(value: Any, scopes: list[dict], root: str = "bundle_root", depth: int = 0) -> str | None:
    """The constant path that ``value`` appends to ``@root`` when it provably is ``@root`` plus
    constants, else None. Accepted: ``@root``; ``$T + T + ...`` whose first term is ``@root`` or a
    reference whose every definition is itself rooted (``$@checkpoint``, ``@ckpt_path`` ->
    ``$@bundle_root + '/models/model.pt'``) and whose other terms are string constants or
    references to plain string literals (``@modelname`` -> ``'model.pt'``). The caller checks the
    tail (see :func:`_in_folder`)."""
    if depth > 16:
        return None
    if not isinstance(value, str):
        return None
    text = value.replace("#", "::")
    if text == f"@{root}":
        return ""
    if text.startswith("@") and _REF.fullmatch(text):
        return _rooted_ref(text[1:], scopes, root, depth)
    if not text.startswith("$"):
        return None
    terms = text[1:].split("+")
    parts: list[str] = []
    for i, term in enumerate(terms):
        m = _TERM.fullmatch(term)
        if not m:
            return None  # '+' inside a constant, a call, anything else: not provable here
        tok = m.group(1)
        if tok.startswith("@"):
            if i == 0:
                head = "" if tok == f"@{root}" else _rooted_ref(tok[1:], scopes, root, depth)
                if head is None:
                    return None
                parts.append(head)
            else:
                choices = _string_choices(scopes, tok)
                if choices is None or len(choices) != 1:
                    # several possible names ("$'model.pt' if @highres else 'model_lowres.pt'"): each
                    # must keep the path inside; the tail reported is any one that does not
                    bad = [c for c in choices or [None] if c is None or not _in_folder("/" + c.lstrip("/"))
                           or ".." in c.split("/")]
                    if bad:
                        return None
                parts.append(sorted(choices)[0])
        elif i == 0:
            return None  # must start at the root
        else:
            parts.append(tok[1:-1])
    return "".join(parts)


def _string_choices(scopes: list[dict], text: str) -> set[str] | None:
    """The strings ``@id`` can stand for: a plain literal (see :func:`_literal_of`), or, in every
    config defining it, ``$'a' if <condition> else 'b'`` (nested) with string constants as the
    branches (the condition is checked by the grammar as an expression of its own). None when
    anything else could come out."""
    lit = _literal_of(scopes, text)
    if isinstance(lit, str):
        return {lit}
    out: set[str] = set()
    found = False
    for scope in scopes:
        node = _lookup(scope, text[1:].replace("#", "::"))
        if node is _MISSING:
            continue
        found = True
        if not (isinstance(node, str) and node.startswith("$")):
            return None
        try:
            # references may stand in the condition only: each becomes a plain name here
            tree = ast.parse(_REF.sub("_r", node[1:].replace("#", "::")).strip(), mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        todo = [tree]
        while todo:
            n = todo.pop()
            if isinstance(n, ast.IfExp):
                todo += [n.body, n.orelse]
            elif isinstance(n, ast.Constant) and isinstance(n.value, str):
                out.add(n.value)
            else:
                return None
    return out if found and out else None


def _rooted_ref(ref: str, scopes: list[dict], root: str, depth: int) -> str | None:
    """The tail of ``@ref`` when every config defining it roots it at ``@root`` with the same tail."""
    tails = set()
    for scope in scopes:
        node = _lookup(scope, ref)
        if node is _MISSING:
            continue
        tails.add(_rooted_tail(node, scopes, root, depth + 1))
    if len(tails) != 1:
        return None
    return tails.pop()


def _in_folder(tail: str | None) -> bool:
    """A tail appended to a folder keeps the path inside it: empty, or starting with '/', no '..'
    part, no backslash (``'_evil/x'`` would name a sibling folder ``<root>_evil``)."""
    if tail is None:
        return False
    if tail == "":
        return True
    return tail.startswith("/") and "\\" not in tail and "\0" not in tail and ".." not in tail.split("/")


def _relative_literal(value: Any) -> bool:
    """A plain relative path such as ``'./output'`` (no expression, reference, macro, address,
    '..' part or backslash)."""
    return (isinstance(value, str) and bool(value) and value[:1] not in "$@%/~" and not _URL.match(value)
            and "\\" not in value and "\0" not in value and ".." not in value.split("/"))
