"""Percentiles and summaries of timing samples, with the standard library only."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Summary", "ms", "percentile", "ratio", "summarize", "summarize_ns"]

NS_PER_MS = 1_000_000


def ms(ns: int) -> float:
    """Nanoseconds (``time.perf_counter_ns`` differences) as milliseconds."""
    return ns / NS_PER_MS


def percentile(samples: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile (1-99) of ``samples``, linearly interpolated.

    Uses ``statistics.quantiles(..., n=100, method="inclusive")``, for which the 50th
    percentile is exactly the median and the result always lies within the samples.

    Raises:
        ValueError: ``samples`` is empty or ``pct`` is not within 1-99.
    """
    if not 1 <= pct <= 99:
        raise ValueError(f"pct must be within 1-99 (got {pct})")
    if not samples:
        raise ValueError("no samples: a percentile needs at least one")
    if len(samples) == 1:
        return float(samples[0])
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


@dataclass(frozen=True)
class Summary:
    """The distribution of one measurement, in milliseconds."""

    n: int
    p50: float
    p99: float
    mean: float
    min: float
    max: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> Summary:
    """p50, p99, mean, min and max of samples already in milliseconds.

    Raises:
        ValueError: ``samples_ms`` is empty.
    """
    if not samples_ms:
        raise ValueError("no samples to summarize")
    return Summary(
        n=len(samples_ms),
        p50=percentile(samples_ms, 50),
        p99=percentile(samples_ms, 99),
        mean=statistics.fmean(samples_ms),
        min=float(min(samples_ms)),
        max=float(max(samples_ms)),
    )


def summarize_ns(samples_ns: Sequence[int]) -> Summary:
    """:func:`summarize` of ``perf_counter_ns`` durations."""
    return summarize([ms(s) for s in samples_ns])


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; infinity when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else float("inf")
