"""Process-wide state a training run changes, saved into checkpoints and given back afterwards.

:func:`rng_state` / :func:`set_rng_state` carry the torch, numpy, python (and CUDA) RNG states in
a form ``torch.load(weights_only=True)`` reads (exact resume). :func:`global_state_restored`
makes a run deterministic (deterministic algorithms, no cuDNN autotuning, the cuBLAS workspace
setting) and afterwards gives the caller back every one of those settings and the RNG states
it had, so that training inside a research script or a test leaves the process as it found it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (keys sorted, raw tensor bytes): equal digests = equal weights."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    """torch/numpy/python RNG states as tensors and plain lists, so that a checkpoint loads with
    ``torch.load(weights_only=True)`` (no pickled numpy objects)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(pystate), "gauss": pygauss},
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


@contextlib.contextmanager
def global_state_restored(*, deterministic: bool, cuda: bool) -> Iterator[None]:
    """Run the block deterministically (when asked) and restore afterwards: deterministic
    algorithms (and their warn-only flag), ``cudnn.benchmark``, ``cudnn.deterministic``,
    ``CUBLAS_WORKSPACE_CONFIG`` and the torch/numpy/python/CUDA RNG states."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"), rng_state())
    try:
        if deterministic:
            if cuda:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        det, warn_only, benchmark, cudnn_det, cublas, rngs = saved
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, cudnn_det
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
        set_rng_state(rngs)
