"""The benchmark's arithmetic on synthetic data (no timing, no daemon, no wasm)."""

from __future__ import annotations

import pytest

from tests.benchmarks import _stats
from tests.benchmarks._daemon_runs import parse_importtime

_IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:      1000 |       1500 | site
import time:       300 |        300 |     attr._make
import time:       200 |        500 |   attr
import time:       700 |       1200 | kamid.protocol
import time:        50 |         50 | json
"""


def test_statistics_helpers_on_synthetic_samples() -> None:
    # 1..101 ms: every percentile lands exactly on a sample.
    samples = [float(v) for v in range(1, 102)]
    assert _stats.percentile(samples, 50) == 51.0
    assert _stats.percentile(samples, 99) == 100.0
    assert _stats.percentile(samples, 1) == 2.0
    # Interpolated between samples, and the median of an even count.
    assert _stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert _stats.percentile([10.0, 20.0], 99) == pytest.approx(19.9)
    assert _stats.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="at least one"):
        _stats.percentile([], 50)
    with pytest.raises(ValueError, match="1-99"):
        _stats.percentile(samples, 100)

    summary = _stats.summarize_ns([1_000_000, 2_000_000, 3_000_000, 10_000_000])
    assert summary.as_dict() == {
        "n": 4,
        "p50": 2.5,
        "p99": pytest.approx(9.79),  # 3 + 0.97 * (10 - 3)
        "mean": 4.0,
        "min": 1.0,
        "max": 10.0,
    }
    assert _stats.ms(1_500_000) == 1.5
    assert _stats.ratio(3.0, 2.0) == 1.5
    assert _stats.ratio(1.0, 0.0) == float("inf")

    cost = parse_importtime(_IMPORTTIME, top=2)
    assert cost.top == [("site", 1500), ("kamid.protocol", 1200)]
    assert cost.total_us == 120 + 1000 + 300 + 200 + 700 + 50
    assert cost.modules == ["_io", "site", "attr._make", "attr", "kamid.protocol", "json"]
