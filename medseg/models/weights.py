"""Reading network weights from a file someone else wrote, without running pickled code.

Every checkpoint medseg reads (a bundle's ``models/model.pt``, a zoo bundle's weights, a training
run's ``best.pt`` / ``last.pt``, ``init_weights`` for fine-tuning) goes through
:func:`read_state_dict`: ``torch.load(weights_only=True)`` (a pickle naming anything but tensors
and plain containers is refused, not executed), then a check that a state dict of tensors came out.
Each caller passes its own typed error and the words that name the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load_into", "read_state_dict"]


def read_state_dict(path: str | Path, *, error: type[Exception], what: str,
                    key: str | None = "state_dict") -> dict[str, Any]:
    """The state dict in ``path``: the file's dict itself, or its ``key`` entry when that is a dict
    (``{"state_dict": ...}`` as medseg's checkpoints store it, ``{"model": ...}`` for some zoo
    bundles).

    Raises:
        error: ``"<what> is not a plain state dict and was not loaded (weights_only refused it:
            ...)"`` when torch cannot read it safely (a code-running pickle, a damaged or foreign
            file); ``"<what> does not hold a state dict of tensors"`` otherwise.
    """
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on a foreign pickle protocol: the error says it
            warnings.simplefilter("ignore")
            obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # on junk bytes torch's unpickler raises KeyError, IndexError, struct.error, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"{what} is not a plain state dict and was not loaded "
                    f"(weights_only refused it: {first[:120]})") from exc
    if isinstance(obj, dict) and key is not None and isinstance(obj.get(key), dict):
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise error(f"{what} does not hold a state dict of tensors")
    return obj


def load_into(network: Any, state: dict[str, Any], *, error: type[Exception], what: str) -> None:
    """``network.load_state_dict(state, strict=True)``; weights that do not fit (missing or extra
    keys, other shapes) raise ``error("<what>: <torch's first two lines>")``, one line, instead of
    torch's many-line RuntimeError."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        raise error(f"{what}: {' '.join(lines[:2])[:200]}") from exc
