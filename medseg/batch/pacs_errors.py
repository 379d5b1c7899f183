"""What failed when a PACS cannot be reached, in words an engineer on call can act on.

The messages never quote a request's URL beyond the server's base address (a query string can
hold an accession number) nor a library's text that could hold one.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (``__cause__``, ``__context__``, urllib3's ``reason``, args)."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _tls_reason(exc: BaseException) -> str | None:
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            why = getattr(e, "verify_message", "") or "certificate verify failed"
            return f"TLS failure: the server's certificate was not accepted ({why}); give the CA that signed it with --ca-bundle"
    for e in _chain(exc):
        if isinstance(e, ssl.SSLError):
            why = getattr(e, "reason", None) or type(e).__name__
            hint = " (is that port speaking HTTPS?)" if "WRONG_VERSION" in str(why) else ""
            return f"TLS failure ({why}){hint}"
    return None


def socket_reason(exc: BaseException, connect_timeout_s: float) -> str:
    """The reason behind a failed TCP connection."""
    for e in _chain(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused (nothing listens on that port: the service is down or the port is wrong)"
        if isinstance(e, socket.gaierror):
            return "host name not found (DNS)"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return (f"no connection within {connect_timeout_s:g} s (connect timeout: host down or a firewall "
                    "dropping packets; --connect-timeout)")
        if isinstance(e, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(e, OSError) and e.strerror:
            return f"connection failed ({e.strerror})"
    return f"connection failed ({type(exc).__name__})"


def http_reason(exc: BaseException, connect_timeout_s: float, read_timeout_s: float) -> str:
    """One phrase for a ``requests`` exception: TLS, refused, timeout (connect or read), reset."""
    import requests

    tls = _tls_reason(exc)
    if tls:
        return tls
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return socket_reason(TimeoutError(), connect_timeout_s)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within {read_timeout_s:g} s (read timeout; --read-timeout)"
    return socket_reason(exc, connect_timeout_s)


def probe_tcp(host: str, port: int, timeout_s: float) -> str | None:
    """None when a TCP connection to ``host:port`` opens now, else why not (see :func:`socket_reason`)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return socket_reason(exc, timeout_s)
