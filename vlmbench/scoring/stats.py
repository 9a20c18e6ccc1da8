"""Aggregation: means and percentile-bootstrap 95% confidence intervals, seeded."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vlmbench.errors import VlmbenchError
from vlmbench.tasks.spec import MAX_BOOTSTRAP_SAMPLES

#: Seeds go to numpy's legacy global generator too, which takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1

# Resamples are drawn in chunks so that B x n indices never need to sit in memory at once.
_CHUNK_CELLS = 20_000_000


def mean_with_ci(values: np.ndarray, samples: int, seed: int) -> dict:
    """Mean of ``values`` with a percentile-bootstrap 95% interval (None when ``samples`` is 0 or n < 2)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    out = {"value": float(values.mean()) if n else None, "ci95": None, "n": n}
    if samples <= 0 or n < 2:
        return out
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    out["ci95"] = [float(lo), float(hi)]
    return out


def statistic_with_ci(statistic: Callable[[np.ndarray], float], n: int, samples: int, seed: int) -> dict:
    """``statistic(index)`` on all rows, and on ``samples`` bootstrap resamples of the row indices."""
    all_rows = np.arange(n)
    out = {"value": _finite(statistic(all_rows)) if n else None, "ci95": None, "n": n}
    if samples <= 0 or n < 2:
        return out
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(samples)], dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if len(stats):
        lo, hi = np.percentile(stats, [2.5, 97.5])
        out["ci95"] = [float(lo), float(hi)]
    return out


def _finite(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def check_statistics(bootstrap_samples: object, seed: object, *, source: str = "") -> None:
    """The bootstrap's options, checked before any work: resamples from 0 (no intervals) to
    :data:`MAX_BOOTSTRAP_SAMPLES` (a billion would be a MemoryError minutes later) and a seed numpy
    takes. ``source`` names where stored values came from (``--bootstrap-samples`` and ``--seed``
    otherwise)."""
    prefix = f"{source}: " if source else "--"
    for name, value, top, low in (
        ("bootstrap-samples", bootstrap_samples, MAX_BOOTSTRAP_SAMPLES, "0 (no intervals)"),
        ("seed", seed, MAX_SEED, "0"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            shown = name.replace("-", "_") if source else name
            raise VlmbenchError(f"{prefix}{shown} must be a whole number from {low} to {top}, got {value!r}")
