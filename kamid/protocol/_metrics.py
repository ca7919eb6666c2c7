"""Wire types of the daemon's operational view: ``metrics.get`` and the scheduler and
activity sections of ``daemon.status``.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = [
    "PRIORITIES",
    "ActivityStatistics",
    "GetMetricsParams",
    "GetMetricsResult",
    "Priority",
    "SchedulerStatistics",
    "ToolActivity",
]

#: ``interactive`` calls (MCP sessions, ``kamictl exec``) are admitted ahead of ``batch``.
Priority = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")


@attrs.frozen(kw_only=True)
class GetMetricsParams:
    pass


@attrs.frozen(kw_only=True)
class GetMetricsResult:
    #: Prometheus text exposition format, version 0.0.4.
    text: str
    content_type: str = "text/plain; version=0.0.4; charset=utf-8"


@attrs.frozen(kw_only=True)
class SchedulerStatistics:
    """What the scheduler is doing now, and its limits."""

    #: Calls running (admitted and not finished).
    running: int = 0
    #: Calls waiting for a slot, by priority.
    queued_interactive: int = 0
    queued_batch: int = 0
    #: Calls allowed to run at once (all tools together).
    max_concurrent: int = 0
    #: Calls allowed to wait; past this a call is refused with ``busy``.
    max_queue: int = 0
    queue_timeout_s: float = 0.0
    #: Calls refused since start, by reason: ``queue_full``, ``queue_timeout``,
    #: ``rate_limited``, ``displaced``.
    rejected: dict[str, int] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class ToolActivity:
    """One tool's calls over the recent window."""

    tool: str
    calls: int = 0
    failed: int = 0
    #: Calls finished per second over the window.
    calls_per_s: float = 0.0
    #: Latency percentiles (queue wait included) of recent calls, milliseconds.
    p50_ms: float | None = None
    p99_ms: float | None = None
    running: int = 0
    queued: int = 0


@attrs.frozen(kw_only=True)
class ActivityStatistics:
    """Calls over the last ``window_s`` seconds (or since start, if that is shorter)."""

    window_s: float = 60.0
    calls_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    tools: list[ToolActivity] = attrs.Factory(list)
