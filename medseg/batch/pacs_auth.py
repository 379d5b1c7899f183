"""HTTP credentials for DICOMweb, never from the command line (a command line is visible to every
user of the machine in ``ps`` and lands in shell histories and cron logs).

A bearer token, first found of:
  ``--token-file FILE`` (a path; the token is read from the file before every request, so a
  sidecar that renews it is followed), ``MEDSEG_PACS_TOKEN_FILE``, ``MEDSEG_PACS_TOKEN``.
Else HTTP basic authentication:
  ``MEDSEG_PACS_USER`` with ``MEDSEG_PACS_PASSWORD`` or ``MEDSEG_PACS_PASSWORD_FILE``, else the
  ``~/.netrc`` (or ``$NETRC``) entry for the server's host.
A token together with a user/password in the environment is refused as ambiguous. So is a URL that
carries ``user:password@``. DIMSE uses none of these.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from medseg.errors import ConfigError


def _read_secret(path: str, what: str) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} file {p.name}: {exc.__class__.__name__}") from None
    if not text or "\n" in text:
        raise ConfigError(f"the {what} file {p.name} must hold exactly one non-empty line")
    return text


def credentials_for(url: str) -> tuple[str, str] | None:
    """(user, password) from MEDSEG_PACS_USER + MEDSEG_PACS_PASSWORD(_FILE), else netrc, else None."""
    user = os.environ.get("MEDSEG_PACS_USER")
    password = os.environ.get("MEDSEG_PACS_PASSWORD")
    if user and not password and os.environ.get("MEDSEG_PACS_PASSWORD_FILE"):
        password = _read_secret(os.environ["MEDSEG_PACS_PASSWORD_FILE"], "MEDSEG_PACS_PASSWORD_FILE")
    if user and password:
        return user, password
    host = urlparse(url).hostname or ""
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    if Path(path).exists():
        try:
            entry = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError) as exc:
            raise ConfigError(f"cannot read the netrc file {path}: {exc.__class__.__name__}") from None
        if entry and entry[0] and entry[2]:
            return entry[0], entry[2]
    return None


def token_source(token_file: str | None = None) -> str | None:
    """Where the bearer token comes from: a file path, ``env:`` for MEDSEG_PACS_TOKEN, or None."""
    path = token_file or os.environ.get("MEDSEG_PACS_TOKEN_FILE")
    if path:
        if not Path(path).is_file():
            raise ConfigError(f"the token file {Path(path).name} does not exist")
        return path
    return "env:" if os.environ.get("MEDSEG_PACS_TOKEN") else None


def http_auth(url: str, token_file: str | None = None):
    """The ``requests`` auth for ``url``: a bearer token, basic credentials or None (see module doc)."""
    import requests

    parsed = urlparse(url)
    if parsed.username or parsed.password:
        raise ConfigError("the PACS address carries credentials (user:password@): anyone on the machine can "
                          "read a command line; use MEDSEG_PACS_USER/MEDSEG_PACS_PASSWORD, ~/.netrc or a token file")
    source = token_source(token_file)
    if source is None:
        return credentials_for(url)
    if os.environ.get("MEDSEG_PACS_USER") and os.environ.get("MEDSEG_PACS_PASSWORD"):
        raise ConfigError("both a bearer token and MEDSEG_PACS_USER/MEDSEG_PACS_PASSWORD are set: keep one")

    class BearerAuth(requests.auth.AuthBase):
        """``Authorization: Bearer <token>``, the token read when each request is sent."""

        def __call__(self, r):
            token = (os.environ.get("MEDSEG_PACS_TOKEN", "").strip() if source == "env:"
                     else _read_secret(source, "token"))
            if not token or any(c in token for c in "\r\n"):
                raise ConfigError("the bearer token is empty or spans several lines")
            r.headers["Authorization"] = f"Bearer {token}"
            return r

    return BearerAuth()
