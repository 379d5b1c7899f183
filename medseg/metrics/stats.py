"""Summary statistics over cases that never let NaN or inf into a mean."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def summarize(values: Iterable[float], *, n_boot: int = 2000, seed: int = 0,
              confidence: float = 0.95) -> dict[str, float | int | list[float] | None]:
    """Mean, median, std (ddof=1) and a seeded percentile-bootstrap interval of the mean.

    NaN and inf values are left out of every statistic and counted in ``n_nan`` / ``n_inf``;
    ``n`` is the number of finite values used. With no finite value the statistics are None.
    """
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out: dict[str, float | int | list[float] | None] = {
        "n": int(finite.size),
        "n_nan": int(np.count_nonzero(np.isnan(arr))),
        "n_inf": int(np.count_nonzero(np.isinf(arr))),
    }
    if finite.size == 0:
        out.update(mean=None, median=None, std=None, ci95=None)
        return out
    out["mean"] = float(finite.mean())
    out["median"] = float(np.median(finite))
    out["std"] = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    out["ci95"] = bootstrap_ci(finite, n_boot=n_boot, seed=seed, confidence=confidence)
    return out


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> list[float]:
    """Percentile bootstrap interval ``[low, high]`` of the mean of finite ``values`` (seeded)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, finite.size, size=(n_boot, finite.size))
    means = finite[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return [float(low), float(high)]
