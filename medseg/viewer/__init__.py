"""``medseg view``: a local web viewer (NiiVue in the page, a loopback server in Python).

:class:`~medseg.viewer.session.ViewerSession` holds what is shown (image, labels, reference, the
prompt mask) and does the work (legend volumes, prompts, saving);
:class:`~medseg.viewer.server.ViewerServer` serves it on ``127.0.0.1`` behind a random token.
NiiVue is not in the repository: ``make env`` (``make viewer-vendor``) copies its build from npm
into ``static/vendor/``.
"""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "ViewerSession": "medseg.viewer.session",
    "ViewerServer": "medseg.viewer.server",
    "serve": "medseg.viewer.server",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
