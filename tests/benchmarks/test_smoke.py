"""The benchmark's arithmetic on synthetic data (no timing, no daemon, no wasm)."""

from __future__ import annotations

import pytest

from tests.benchmarks import _stats
from tests.benchmarks._daemon_runs import parse_importtime
from tests.benchmarks._interleave import interleave


class _Fake:
    """A sampler whose "durations" are its call numbers; it logs who ran when."""

    def __init__(self, name: str, log: list[tuple[str, int]]) -> None:
        self.name = name
        self.calls = 0
        self.log = log

    def warm_up(self, n: int) -> None:
        self.log.append((f"{self.name}:warmup", n))
        self.calls += n

    def sample(self, n: int) -> list[int]:
        self.log.append((self.name, n))
        first = self.calls
        self.calls += n
        return list(range(first, self.calls))


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

    # Blocks alternate, the first sampler of a round rotates, warm-up calls are not kept.
    log: list[tuple[str, int]] = []
    a, b = _Fake("a", log), _Fake("b", log)
    taken = interleave([a, b], warmup=2, calls=5, block=2)
    assert log == [
        ("a:warmup", 2), ("b:warmup", 2), ("a", 2), ("b", 2), ("b", 2), ("a", 2), ("a", 1), ("b", 1)
    ]  # fmt: skip
    assert taken.latency_ns == {"a": [2, 3, 4, 5, 6], "b": [2, 3, 4, 5, 6]}
    assert set(taken.process_cpu_ns) == {"a", "b"}

    cost = parse_importtime(_IMPORTTIME, top=2)
    assert cost.top == [("site", 1500), ("kamid.protocol", 1200)]
    assert cost.total_us == 120 + 1000 + 300 + 200 + 700 + 50
    assert cost.modules == ["_io", "site", "attr._make", "attr", "kamid.protocol", "json"]
