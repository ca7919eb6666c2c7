"""The daemon's counters, gauges and histograms, in the Prometheus text format.

:class:`DaemonMetrics` is the one registry of a daemon. The scheduler reports every call
to it (it is the scheduler's :class:`~kamid.scheduler.CallObserver`); values that other
parts already keep (cache statistics, connections, the queue) are read when the metrics
are rendered, so nothing is counted twice. ``metrics.get``, ``/metrics`` on
``--metrics-listen`` and the activity section of ``daemon.status`` all read it.

Everything here runs on the trio thread; none of it is thread-safe, and none of it needs
to be.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from kamid import __version__
from kamid.protocol import (
    ActivityStatistics,
    CacheStatistics,
    GetMetricsResult,
    SchedulerStatistics,
    ToolActivity,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from kamid.protocol import Usage

__all__ = [
    "DURATION_BUCKETS",
    "Counter",
    "DaemonMetrics",
    "Gauge",
    "Histogram",
    "Registry",
    "escape_help",
    "escape_label",
    "format_value",
]

#: Seconds; a componentize-js call takes ~1 ms, a queue wait up to ``queue_timeout_s``.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Distinct ``tool`` label values kept; more (``wasm.run`` of many files) become ``_other``.
MAX_TOOL_LABELS = 500


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus parses it: ``+Inf``, ``NaN``, ``3``, ``0.25``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.label_names = tuple(labels)

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> Iterable[str]:
        return ()


class Counter(_Metric):
    """A value that only goes up (and restarts at 0 when the daemon does)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter names end in _total (got {name})")
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot go down (got {amount})")
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self.values.get(self._key(labels), 0.0)

    def samples(self) -> Iterable[str]:
        for key, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, key)} {format_value(value)}"


class Gauge(_Metric):
    """A value that goes up and down: set directly, or read from ``sample`` on render."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        *,
        sample: Callable[[], Iterable[tuple[Sequence[str], float]]] | None = None,
    ) -> None:
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {}
        self._sample = sample

    def set(self, value: float, **labels: str) -> None:
        self.values[self._key(labels)] = value

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def get(self, **labels: str) -> float:
        return self.values.get(self._key(labels), 0.0)

    def samples(self) -> Iterable[str]:
        values = dict(self.values)
        if self._sample is not None:
            values.update((tuple(k), v) for k, v in self._sample())
        for key, value in sorted(values.items()):
            yield f"{self.name}{_labels(self.label_names, key)} {format_value(value)}"


class SampledCounter(_Metric):
    """A counter kept elsewhere (the component cache), read on render."""

    kind = "counter"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str],
        sample: Callable[[], Iterable[tuple[Sequence[str], float]]],
    ) -> None:
        super().__init__(name, help, labels)
        self._sample = sample

    def samples(self) -> Iterable[str]:
        for key, value in sorted((tuple(k), v) for k, v in self._sample()):
            yield f"{self.name}{_labels(self.label_names, key)} {format_value(value)}"


class Summary(_Metric):
    """Only ``_sum`` and ``_count`` (no quantiles), read on render."""

    kind = "summary"

    def __init__(self, name: str, help: str, sample: Callable[[], tuple[float, float]]) -> None:
        super().__init__(name, help)
        self._sample = sample

    def samples(self) -> Iterable[str]:
        total, count = self._sample()
        yield f"{self.name}_sum {format_value(total)}"
        yield f"{self.name}_count {format_value(count)}"


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        if "le" in labels:
            raise ValueError("a histogram cannot have a label named le")
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{name}: buckets must be increasing and unique")
        super().__init__(name, help, labels)
        self.bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        # Per label set: counts per bucket (not cumulative; the last is +Inf), sum.
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = ([0] * (len(self.bounds) + 1), [0.0])
        counts, total = series
        counts[bisect.bisect_left(self.bounds, value)] += 1
        total[0] += value

    def count(self, **labels: str) -> int:
        series = self.series.get(self._key(labels))
        return sum(series[0]) if series else 0

    def samples(self) -> Iterable[str]:
        names = self.label_names
        for key, (counts, total) in sorted(self.series.items()):
            cumulative = 0
            for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
                cumulative += n
                le = 'le="+Inf"' if math.isinf(bound) else f'le="{bound!r}"'
                yield f"{self.name}_bucket{_labels(names, key, le)} {cumulative}"
            yield f"{self.name}_sum{_labels(names, key)} {format_value(total[0])}"
            yield f"{self.name}_count{_labels(names, key)} {cumulative}"


class Registry:
    """Metrics rendered in registration order."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> Any:
        if any(m.name == metric.name for m in self.metrics):
            raise ValueError(f"metric {metric.name} is registered twice")
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.header()
            lines += metric.samples()
        return "\n".join(lines) + "\n"


class _Window:
    """Recent calls: per-second counts for the rate, the latest latencies for percentiles."""

    def __init__(self, seconds: int, keep: int) -> None:
        self.seconds = seconds
        self.counts: deque[list[int]] = deque()  # [second, calls, failed]
        self.latencies: deque[tuple[float, float]] = deque(maxlen=keep)
        self.calls = 0
        self.failed = 0

    def add(self, now: float, duration_s: float, ok: bool) -> None:
        second = int(now)
        if not self.counts or self.counts[-1][0] != second:
            self.counts.append([second, 0, 0])
        self.counts[-1][1] += 1
        self.counts[-1][2] += not ok
        self.latencies.append((now, duration_s))
        self._trim(now)

    def _trim(self, now: float) -> None:
        oldest = int(now) - self.seconds
        while self.counts and self.counts[0][0] <= oldest:
            self.counts.popleft()

    def summary(
        self, now: float, span: float
    ) -> tuple[int, int, float, float | None, float | None]:
        """(calls, failed, calls/s, p50 ms, p99 ms) over the window."""
        self._trim(now)
        calls = sum(c[1] for c in self.counts)
        failed = sum(c[2] for c in self.counts)
        recent = sorted(d for t, d in self.latencies if t > now - self.seconds)
        rate = calls / span if span > 0 else 0.0
        return calls, failed, round(rate, 3), _percentile_ms(recent, 50), _percentile_ms(recent, 99)


def _percentile_ms(sorted_s: list[float], pct: int) -> float | None:
    if not sorted_s:
        return None
    index = min(len(sorted_s) - 1, max(0, math.ceil(pct / 100 * len(sorted_s)) - 1))
    return round(sorted_s[index] * 1000, 3)


class DaemonMetrics(Registry):
    """Every metric kamid exports. ``service`` supplies the values read on render.

    Names are fixed (dashboards depend on them): see docs/operators.md. Other parts of
    the daemon update the gauges they own, e.g. the MCP server ``mcp_sessions``.

    Args:
        service: the :class:`kamid.service.KamiService` (read duck-typed: ``executor``,
            ``scheduler``, ``connections``), or None for a registry with no live values.
        window_s: the span of the activity view (calls/s, percentiles) in ``daemon.status``.
        clock: monotonic seconds, for the activity window.
    """

    def __init__(
        self,
        service: Any = None,
        *,
        window_s: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._service = service
        self._clock = clock
        self._window_s = window_s
        self._started = clock()
        self._total = _Window(window_s, keep=4096)
        self._tools: dict[str, _Window] = {}
        self._tool_labels: set[str] = set()
        started_at = time.time()
        add = self.add
        add(
            Gauge(
                "kami_build_info",
                "Always 1; the labels name the kamid and wasmtime versions.",
                ("version", "wasmtime"),
                sample=lambda: [((__version__, self._wasmtime()), 1.0)],
            )
        )
        add(
            Gauge(
                "kami_start_time_seconds",
                "When this kamid started, in seconds since the Unix epoch.",
                sample=lambda: [((), started_at)],
            )
        )
        self.calls: Counter = add(
            Counter(
                "kami_calls_total",
                "Tool calls answered, by tool and outcome (ok, or the error kind: "
                "tool_failed, limit_exceeded, busy, timeout, cancelled, ...).",
                ("tool", "outcome"),
            )
        )
        self.call_duration: Histogram = add(
            Histogram(
                "kami_call_duration_seconds",
                "Time from a call's arrival at the scheduler to its answer, queue wait "
                "included, by tool (refused calls are not observed).",
                ("tool",),
            )
        )
        self.queue_wait: Histogram = add(
            Histogram(
                "kami_call_queue_wait_seconds",
                "Time admitted calls waited for a free slot, by priority.",
                ("priority",),
            )
        )
        self.fuel: Counter = add(
            Counter(
                "kami_fuel_consumed_total",
                "Wasmtime fuel (about one unit per wasm instruction) burnt by calls, by tool.",
                ("tool",),
            )
        )
        self.rejections: Counter = add(
            Counter(
                "kami_scheduler_rejections_total",
                "Calls refused with busy, by reason: queue_full, queue_timeout, "
                "rate_limited, displaced (a batch call gave its queue place to an "
                "interactive one).",
                ("reason",),
            )
        )
        add(
            Gauge(
                "kami_scheduler_running",
                "Calls running now.",
                sample=lambda: [((), self._scheduler().running)],
            )
        )
        add(
            Gauge(
                "kami_scheduler_queued",
                "Calls waiting for a slot now, by priority.",
                ("priority",),
                sample=lambda: [
                    (("interactive",), self._scheduler().queued_interactive),
                    (("batch",), self._scheduler().queued_batch),
                ],
            )
        )
        add(
            Gauge(
                "kami_scheduler_max_concurrent",
                "Calls allowed to run at once ([scheduler].max_concurrent).",
                sample=lambda: [((), self._scheduler().max_concurrent)],
            )
        )
        add(
            SampledCounter(
                "kami_cache_hits_total",
                "Component cache hits: memory (the in-memory LRU) or disk (the AOT file).",
                ("source",),
                lambda: [
                    (("memory",), self._cache().memory_hits),
                    (("disk",), self._cache().disk_hits),
                ],
            )
        )
        add(
            SampledCounter(
                "kami_cache_misses_total",
                "Component cache misses: components compiled from wasm.",
                (),
                lambda: [((), self._cache().compiles)],
            )
        )
        add(
            SampledCounter(
                "kami_cache_evictions_total",
                "Components dropped from the in-memory LRU to make room.",
                (),
                lambda: [((), self._cache().evictions)],
            )
        )
        add(
            SampledCounter(
                "kami_cache_rejected_total",
                "AOT files refused because their hash did not match the recorded one.",
                (),
                lambda: [((), self._cache().rejected)],
            )
        )
        add(
            Gauge(
                "kami_cache_entries",
                "Compiled components held in memory.",
                sample=lambda: [((), self._cache().entries)],
            )
        )
        add(
            Summary(
                "kami_compile_seconds",
                "Time spent compiling components from wasm to native code.",
                lambda: (self._cache().compile_ms_total / 1000, self._cache().compiles),
            )
        )
        add(
            Gauge(
                "kami_connections",
                "Open client connections on the daemon socket.",
                sample=lambda: [((), self._connections())],
            )
        )
        self.mcp_sessions: Gauge = add(
            Gauge("kami_mcp_sessions", "Open MCP sessions (set by the MCP server).")
        )
        self.mcp_sessions.set(0)
        self.config_reloads: Counter = add(
            Counter(
                "kami_config_reloads_total",
                "SIGHUP reloads of kamid.toml, by result (ok or error).",
                ("result",),
            )
        )

    async def handle_get(self, _params: Any, _ctx: Any) -> GetMetricsResult:
        """The ``metrics.get`` handler."""
        return GetMetricsResult(text=self.render())

    # Live values, read duck-typed from the service.
    def _wasmtime(self) -> str:
        engine = getattr(self._service, "engine", None)
        return str(getattr(engine, "wasmtime_version", "unknown"))

    def _scheduler(self) -> SchedulerStatistics:
        scheduler = getattr(self._service, "scheduler", None)
        return scheduler.statistics() if scheduler is not None else SchedulerStatistics()

    def _cache(self) -> CacheStatistics:
        executor = getattr(self._service, "executor", None)
        return executor.statistics() if executor is not None else CacheStatistics()

    def _connections(self) -> int:
        connections = getattr(self._service, "connections", None)
        return int(connections()) if connections is not None else 0

    # CallObserver
    def tool_label(self, tool: str) -> str:
        if tool in self._tool_labels or len(self._tool_labels) < MAX_TOOL_LABELS:
            self._tool_labels.add(tool)
            return tool
        return "_other"

    def call_rejected(self, tool: str, reason: str) -> None:
        self.rejections.inc(reason=reason)
        self.calls.inc(tool=self.tool_label(tool), outcome="busy")

    def call_started(self, tool: str, priority: str, queue_wait_s: float) -> None:
        self.queue_wait.observe(queue_wait_s, priority=priority)

    def call_finished(
        self, tool: str, outcome: str, duration_s: float, usage: Usage | None
    ) -> None:
        label = self.tool_label(tool)
        self.calls.inc(tool=label, outcome=outcome)
        self.call_duration.observe(duration_s, tool=label)
        if usage is not None:
            self.fuel.inc(max(0, usage.fuel_consumed), tool=label)
        now = self._clock()
        ok = outcome == "ok"
        self._total.add(now, duration_s, ok)
        window = self._tools.get(label)
        if window is None:
            window = self._tools[label] = _Window(self._window_s, keep=1024)
        window.add(now, duration_s, ok)

    def activity(self, load: dict[str, tuple[int, int]] | None = None) -> ActivityStatistics:
        """Calls/s and latency percentiles over the window, in total and per tool.

        Args:
            load: tool -> (running, queued) now, from the scheduler.
        """
        load = load or {}
        now = self._clock()
        span = min(float(self._window_s), max(now - self._started, 1e-9))
        _, _, rate, p50, p99 = self._total.summary(now, span)
        tools = []
        for tool in sorted(set(self._tools) | set(load)):
            window = self._tools.get(tool)
            if window is None:
                calls, failed, tool_rate, t50, t99 = 0, 0, 0.0, None, None
            else:
                calls, failed, tool_rate, t50, t99 = window.summary(now, span)
            running, queued = load.get(tool, (0, 0))
            if not (calls or running or queued):
                continue
            tools.append(
                ToolActivity(
                    tool=tool,
                    calls=calls,
                    failed=failed,
                    calls_per_s=tool_rate,
                    p50_ms=t50,
                    p99_ms=t99,
                    running=running,
                    queued=queued,
                )
            )
        return ActivityStatistics(
            window_s=self._window_s, calls_per_s=rate, p50_ms=p50, p99_ms=p99, tools=tools
        )
