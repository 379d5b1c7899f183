"""The HTTP side of ``medseg view``: loopback only, a token on every request, a closed route table.

Built on the standard library's :class:`http.server.ThreadingHTTPServer` (see the README's design
section for why no framework): only :class:`~http.server.BaseHTTPRequestHandler` is used, never
``SimpleHTTPRequestHandler``, so nothing maps a URL onto the file system.

Rules, each checked before routing:

* the socket is bound to ``127.0.0.1`` and nothing else;
* every request carries the session token (``?token=`` or the ``X-Medseg-Token`` header),
  compared in constant time; without it: 403 and an empty body;
* the ``Host`` header must name the loopback address (a DNS-rebinding page cannot reach us);
* a ``..`` segment, a backslash, a NUL or an absolute path in the URL path, in any query
  parameter or in any string of a JSON body is refused (400) before anything looks at it;
* static files come from a table built at start-up from the package's ``static/`` folder, so a
  URL names a key in that table, never a path;
* no request line is logged (URLs carry the token); responses carry a strict CSP, no referrer
  and no caching.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from medseg.errors import MedsegError
from medseg.viewer.grid import MAX_UPLOAD_BYTES
from medseg.viewer.session import ROLES, ViewerSession

HOST = "127.0.0.1"
MAX_BODY = 1 << 20  # prompts and save requests are small JSON
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                 ".png": "image/png", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self' blob: data:; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_value(value: str) -> bool:
    """True for a string that could reach outside a folder: ``..`` anywhere, an absolute path
    (``/``, ``\\``, ``C:``), a backslash or a NUL."""
    return (".." in value or value.startswith(("/", "~")) or "\\" in value or "\x00" in value
            or bool(_DRIVE.match(value)))


def _unsafe_json(obj: Any) -> bool:
    if isinstance(obj, str):
        return unsafe_value(obj)
    if isinstance(obj, dict):
        return any(_unsafe_json(k) or _unsafe_json(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_unsafe_json(v) for v in obj)
    return False


def static_table() -> dict[str, tuple[bytes, str]]:
    """``{url name: (bytes, content type)}`` of every file shipped in ``medseg/viewer/static``
    (``vendor/`` included when the build put NiiVue there)."""
    table: dict[str, tuple[bytes, str]] = {}
    root = resources.files("medseg.viewer") / "static"

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            name = prefix + child.name
            if child.is_dir():
                walk(child, name + "/")
                continue
            suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
            if suffix in CONTENT_TYPES:
                table[name] = (child.read_bytes(), CONTENT_TYPES[suffix])

    walk(root, "")
    return table


def vendor_missing(table: dict[str, tuple[bytes, str]] | None = None) -> bool:
    """True when the NiiVue build (``static/vendor/niivue.umd.js``, made by ``make env``) is absent."""
    return "vendor/niivue.umd.js" not in (table if table is not None else static_table())


class ViewerServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` on ``127.0.0.1`` holding one :class:`ViewerSession` and its token."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, session: ViewerSession, port: int = 0, token: str | None = None, review: Any = None) -> None:
        """``review``: a :class:`~medseg.viewer.review.Review` when stepping through a batch
        (``session`` is then its current case)."""
        self.session = session
        self.review = review
        self.token = token or secrets.token_urlsafe(32)
        self.static = static_table()
        super().__init__((HOST, int(port)), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def start_thread(self) -> threading.Thread:
        """Serve on a daemon thread (tests, notebooks); stop with ``shutdown()`` then ``server_close()``."""
        t = threading.Thread(target=self.serve_forever, name="medseg-view", daemon=True)
        t.start()
        return t


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"
    server_version = "medseg-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silent: request lines hold the token."""

    # ---------------------------------------------------------------- responses
    def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

    def _refuse(self, status: int, message: str = "") -> None:
        self._send(status, message.encode())

    # ---------------------------------------------------------------- checks before routing
    def _checked(self) -> tuple[str, dict[str, str]] | None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        token = query.pop("token", None) or self.headers.get("X-Medseg-Token", "")
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self._refuse(403)
            return None
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in (HOST, "localhost"):
            self._refuse(403)
            return None
        path = unquote(parts.path)
        if unsafe_value(path.lstrip("/")) or "//" in path or any(unsafe_value(v) or unsafe_value(k)
                                                                   for k, v in query.items()):
            self._refuse(400, "refused: a path or parameter names a parent folder or an absolute path")
            return None
        return path, query

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise _Refused(413, "request body too large")
        raw = self.rfile.read(n) if n else b"{}"
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Refused(400, "the request body is not JSON") from None
        if _unsafe_json(body):
            raise _Refused(400, "refused: a parameter names a parent folder or an absolute path")
        if not isinstance(body, dict):
            raise _Refused(400, "the request body must be a JSON object")
        return body

    # ---------------------------------------------------------------- routes
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        checked = self._checked()
        if checked is None:
            return
        path, query = checked
        s = self.server.session
        routes: dict[str, Callable[[], None]] = {
            "/": self._index,
            "/api/info": lambda: self._json({**s.info(), "review": self.server.review is not None}),
            "/api/review": lambda: (self._json(self.server.review.listing()) if self.server.review is not None
                                    else self._refuse(404)),
        }
        try:
            if path in routes:
                routes[path]()
            elif path.startswith("/static/"):
                self._static(path[len("/static/"):])
            elif path.startswith("/volume/") and path[len("/volume/"):] in ROLES:
                data = s.volume_bytes(path[len("/volume/"):])
                self._send(200, data, "application/gzip")
            elif path == "/api/fullres":
                self._full_resolution(s, query)
            else:
                self._refuse(404)
        except MedsegError as exc:
            self._refuse(409, " ".join(str(exc).split()))
        except (KeyError, TypeError, ValueError):
            self._refuse(400, "malformed request")

    def _full_resolution(self, s: ViewerSession, query: dict[str, str]) -> None:
        """``GET /api/fullres?role=image&x=&y=&z=[&side=]``: a source-grid box around a world
        position (RAS mm) as gzip NIfTI, its box in a header (``X-Medseg-Crop``)."""
        role = query.get("role", "image")
        if role not in ROLES:
            self._refuse(404)
            return
        centre = [float(query[k]) for k in ("x", "y", "z")]
        side = int(query["side"]) if "side" in query else None
        data, box = s.full_resolution(role, centre, **({} if side is None else {"side": side}))
        self._send(200, data, "application/gzip", {"X-Medseg-Crop": json.dumps(box)})

    def do_POST(self) -> None:  # noqa: N802
        checked = self._checked()
        if checked is None:
            return
        path, query = checked
        try:
            if path in ("/api/edit", "/api/scribble"):
                data = self._upload()
                s = self.server.session
                if path == "/api/edit":
                    summary = s.edit(data)
                else:
                    summary = s.scribble(data, value=query.get("value", "1"), refine=query.get("refine") == "1")
                self._delta(s, summary)
                return
            body = self._body()
            if path.startswith("/api/review"):
                self._review(path, body)
                return
            s = self.server.session
            if path in ("/api/prompt", "/api/undo", "/api/redo", "/api/clear"):
                if path == "/api/prompt":
                    summary = s.prompt(box=body.get("box"), points=body.get("points"), labels=body.get("labels"),
                                       extreme_points=body.get("extreme_points"), refine=bool(body.get("refine", False)),
                                       value=body.get("value", 1))
                else:
                    summary = {"/api/undo": s.undo, "/api/redo": s.redo, "/api/clear": s.clear}[path]()
                self._delta(s, summary)
            elif path == "/api/save":
                name = s.save(body.get("name"), format=str(body.get("format", "nifti")))
                self._json({"saved": name})
            else:
                self._refuse(404)
        except _Refused as exc:
            self._refuse(exc.status, exc.message)
        except MedsegError as exc:
            self._refuse(422, " ".join(str(exc).split()))
        except (TypeError, ValueError):
            self._refuse(400, "malformed request")

    def _delta(self, s: ViewerSession, summary: dict[str, Any]) -> None:
        """The answer to a change: the display-grid box it touched as gzip NIfTI (the page paints it
        into its drawing layer), and the summary (with that box) in a header."""
        self._send(200, s.delta_bytes(summary), "application/gzip",
                   {"X-Medseg-Prompt": json.dumps(summary, allow_nan=False)})

    def _upload(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n <= 0:
            raise _Refused(400, "an edit needs a body")
        if n > MAX_UPLOAD_BYTES:
            raise _Refused(413, "upload too large")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/gzip":
            raise _Refused(415, "an edit is sent as application/gzip")
        return self.rfile.read(n)

    def _review(self, path: str, body: dict[str, Any]) -> None:
        review = self.server.review
        if review is None:
            raise _Refused(404, "not reviewing a batch")
        if path == "/api/review":
            self._json(review.listing())
        elif path == "/api/review/open":
            self.server.session = review.open(body.get("index"))
            self._json(review.listing())
        elif path == "/api/review/decide":
            review.decide(self.server.session, body.get("decision"))
            self._json(review.listing())
        else:
            self._refuse(404)

    def _index(self) -> None:
        page, ctype = self.server.static["index.html"]
        # the token is URL-safe base64: nothing to escape in an attribute
        self._send(200, page.replace(b"{{TOKEN}}", self.server.token.encode()), ctype)

    def _static(self, name: str) -> None:
        item = self.server.static.get(name)
        if item is None:
            self._refuse(404)
            return
        self._send(200, item[0], item[1])


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def serve(session: ViewerSession, port: int = 0, *, open_browser: bool = False,
          announce: Callable[[str], None] = print, review: Any = None) -> None:
    """Serve ``session`` until interrupted; announces the URL (with the token) first."""
    server = ViewerServer(session, port, review=review)
    try:
        announce(server.url)
        if open_browser:
            _open_browser(server.url)
        server.serve_forever()
    finally:
        server.server_close()


def _open_browser(url: str) -> bool:
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    return bool(browser.open(url))


def has_browser() -> bool:
    """True when Python's :mod:`webbrowser` finds a browser to start."""
    import webbrowser

    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True

