"""Summary statistics of repeated measurements: median, p90, coefficient of variation, bootstrap CIs.

Definitions match ``edgekit.profile.metrics`` (linear-interpolated percentile, CV = sample standard
deviation / mean). Confidence intervals are percentile bootstraps with a fixed seed, so a report is
reproducible byte for byte. Pure functions of number lists; nothing here reads the store.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from edgekit.profile.metrics import percentile

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261122
CONFIDENCE = 0.95


@dataclass
class Summary:
    n: int
    median: float | None = None
    p90: float | None = None
    cv: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


def cv(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = float(np.mean(values))
    return float(np.std(values, ddof=1)) / mean if mean != 0 else None


def _bounds(estimates: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


@functools.lru_cache(maxsize=256)
def _median_positions(n: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``resamples`` resamples of n sorted values: the sorted positions whose mean is each median.

    Which positions of the sorted data a resample's median falls on depends only on n and the random
    draws, never on the values, so it is computed once per (n, resamples, seed) and shared by every
    metric and cell of that size. Each resample becomes a row of counts per sorted position, and the
    median is read where the cumulative count crosses the middle (no per-resample sort).
    """
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    counts = np.bincount((drawn + offsets).ravel(), minlength=resamples * n).reshape(resamples, n)
    cumulative = np.cumsum(counts, axis=1)
    low = np.argmax(cumulative >= (n + 1) // 2, axis=1)
    high = low if n % 2 else np.argmax(cumulative >= n // 2 + 1, axis=1)
    return low, high


def bootstrap_medians(
    values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """The medians of ``resamples`` resamples with replacement of ``values``: exactly
    ``np.median(np.sort(values)[idx], axis=1)`` for ``idx = default_rng(seed).integers(0, n, (resamples, n))``."""
    data = np.sort(np.asarray(values, dtype=float))
    low, high = _median_positions(len(data), resamples, seed)
    return (data[low] + data[high]) / 2


def bootstrap_median_ci(
    values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float] | None:
    """Percentile-bootstrap CI of the median; None with fewer than two values."""
    if len(values) < 2:
        return None
    return _bounds(bootstrap_medians(values, resamples, seed))


def bootstrap_ratio_ci(
    a: list[float], b: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float] | None:
    """CI of median(a) / median(b), resampling both sides independently."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma = bootstrap_medians(a, resamples, seed)
    mb = bootstrap_medians(b, resamples, seed + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = ma / mb
    ratios = ratios[np.isfinite(ratios)]
    return _bounds(ratios) if len(ratios) else None


def summarize(values: list[float]) -> Summary:
    if not values:
        return Summary(0)
    ci = bootstrap_median_ci(values)
    return Summary(
        n=len(values),
        median=float(np.median(values)),
        p90=percentile(values, 90),
        cv=cv(values),
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
    )
