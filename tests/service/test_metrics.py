"""The metrics registry and its Prometheus text format."""

from __future__ import annotations

import math

import pytest

from kamid.metrics import (
    MAX_TOOL_LABELS,
    Counter,
    DaemonMetrics,
    Gauge,
    Histogram,
    Registry,
    format_value,
)
from kamid.protocol import Usage

from ._exposition import parse


def test_counters_render_with_help_type_and_escaped_labels() -> None:
    registry = Registry()
    counter = registry.add(Counter("x_total", 'Counts "things".\nTwo lines \\ here.', ("tool",)))
    counter.inc(tool='we"ird\\na\nme')
    counter.inc(2, tool="plain")
    text = registry.render()
    assert text.splitlines()[:2] == [
        '# HELP x_total Counts "things".\\nTwo lines \\\\ here.',
        "# TYPE x_total counter",
    ]
    assert 'x_total{tool="we\\"ird\\\\na\\nme"} 1' in text
    family = parse(text)["x_total"]
    assert family.value(tool='we"ird\\na\nme') == 1
    assert family.value(tool="plain") == 2


def test_counters_only_go_up_and_end_in_total() -> None:
    with pytest.raises(ValueError, match="_total"):
        Counter("calls", "x")
    counter = Counter("calls_total", "x", ("a",))
    with pytest.raises(ValueError, match="cannot go down"):
        counter.inc(-1, a="b")
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(b="c")


def test_histograms_are_cumulative_with_sum_count_and_inf() -> None:
    registry = Registry()
    histogram = registry.add(Histogram("t_seconds", "x", ("tool",), buckets=(0.1, 1.0)))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value, tool="a")
    text = registry.render()
    assert 't_seconds_bucket{tool="a",le="0.1"} 2' in text  # le is inclusive
    assert 't_seconds_bucket{tool="a",le="1.0"} 3' in text
    assert 't_seconds_bucket{tool="a",le="+Inf"} 4' in text
    assert 't_seconds_count{tool="a"} 4' in text
    family = parse(text)["t_seconds"]
    assert family.value("t_seconds_sum", tool="a") == pytest.approx(3.65)
    with pytest.raises(ValueError, match="le"):
        Histogram("h", "x", ("le",))


def test_values_are_formatted_as_prometheus_reads_them() -> None:
    assert [format_value(v) for v in (3.0, 0.25, math.inf, -math.inf)] == [
        "3",
        "0.25",
        "+Inf",
        "-Inf",
    ]
    assert format_value(math.nan) == "NaN"


def test_gauges_can_be_set_or_sampled() -> None:
    registry = Registry()
    gauge = registry.add(Gauge("g", "x"))
    gauge.inc()
    gauge.inc()
    gauge.dec()
    registry.add(Gauge("s", "x", ("k",), sample=lambda: [(("v",), 7)]))
    families = parse(registry.render())
    assert families["g"].value() == 1
    assert families["s"].value(k="v") == 7


def test_daemon_metrics_render_every_family_even_without_a_daemon() -> None:
    metrics = DaemonMetrics()
    metrics.call_started("dev.kami.echo", "interactive", 0.002)
    metrics.call_finished(
        "dev.kami.echo", "ok", 0.004, Usage(wall_ms=1, fuel_consumed=500, peak_memory_bytes=0)
    )
    metrics.call_rejected("dev.kami.echo", "rate_limited")
    metrics.mcp_sessions.inc()
    families = parse(metrics.render())
    assert {
        "kami_build_info",
        "kami_calls_total",
        "kami_call_duration_seconds",
        "kami_call_queue_wait_seconds",
        "kami_fuel_consumed_total",
        "kami_scheduler_rejections_total",
        "kami_scheduler_running",
        "kami_scheduler_queued",
        "kami_cache_hits_total",
        "kami_cache_misses_total",
        "kami_cache_evictions_total",
        "kami_compile_seconds",
        "kami_connections",
        "kami_mcp_sessions",
    } <= set(families)
    calls = families["kami_calls_total"]
    assert calls.value(tool="dev.kami.echo", outcome="ok") == 1
    assert calls.value(tool="dev.kami.echo", outcome="busy") == 1
    assert families["kami_fuel_consumed_total"].value(tool="dev.kami.echo") == 500
    assert families["kami_mcp_sessions"].value() == 1
    assert families["kami_compile_seconds"].type == "summary"


def test_tool_labels_are_capped() -> None:
    metrics = DaemonMetrics()
    for i in range(MAX_TOOL_LABELS + 5):
        metrics.call_finished(f"file-{i}.wasm", "ok", 0.001, None)
    tools = {labels["tool"] for _, labels, _ in parse(metrics.render())["kami_calls_total"].samples}
    assert len(tools) == MAX_TOOL_LABELS + 1
    assert "_other" in tools


def test_activity_is_calls_per_second_and_percentiles_over_the_window() -> None:
    now = [1000.0]
    metrics = DaemonMetrics(window_s=60, clock=lambda: now[0])
    now[0] += 100  # up for 100 s
    for i in range(100):
        metrics.call_finished("a", "ok" if i % 10 else "tool_failed", (i + 1) / 1000, None)
    activity = metrics.activity({"a": (1, 2), "b": (0, 1)})
    assert activity.calls_per_s == pytest.approx(100 / 60, abs=0.001)
    assert activity.p50_ms == pytest.approx(50)
    assert activity.p99_ms == pytest.approx(99)
    a, b = activity.tools
    assert (a.tool, a.calls, a.failed, a.running, a.queued) == ("a", 100, 10, 1, 2)
    assert (b.tool, b.calls, b.queued, b.p50_ms) == ("b", 0, 1, None)
    now[0] += 61  # the window moved past every call
    later = metrics.activity()
    assert (later.calls_per_s, later.p50_ms, later.tools) == (0.0, None, [])
