"""Admission of tool calls: concurrency limits, a bounded priority queue, rate limits.

Every call asks :meth:`Scheduler.admit` before it runs. A call starts at once when the
global limit and its tool's limit both have room; otherwise it waits in a queue that is
bounded in length and in time, so that an overloaded daemon answers ``busy`` quickly
instead of piling up work nobody will wait for. Waiting calls are served interactive
first (MCP sessions, ``kamictl exec``), then batch, each in arrival order; a call whose
tool is at its own limit does not hold up calls of other tools.

Rate limits are token buckets in calls per minute, one global and one per tool; a call
over a rate is refused at once (it does not wait) with the time after which a retry
can succeed.

All times come from :func:`trio.current_time`, so tests drive this with trio's
``MockClock``.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from kamid.protocol import PRIORITIES, Busy, KamiError, SchedulerStatistics, Usage

if TYPE_CHECKING:
    from collections.abc import Callable

    from kamid.protocol import Priority

__all__ = ["Admission", "CallObserver", "Scheduler", "SchedulerConfig", "Ticket", "ToolSchedule"]


def _not_negative(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{attr.name} must be a number >= 0 (got {value!r})")


def _optional(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None:
        _not_negative(_inst, attr, value)


@attrs.frozen(kw_only=True)
class ToolSchedule:
    """``[scheduler.tools."<tool id>"]``: one tool's limits, overriding the defaults."""

    #: Calls of this tool running at once (0: no limit of its own).
    max_concurrent: int | None = attrs.field(default=None, validator=_optional)
    #: Calls of this tool per minute (0: unlimited).
    calls_per_minute: float | None = attrs.field(default=None, validator=_optional)
    #: Calls that may come at once before the rate applies (default: a minute's worth).
    burst: int | None = attrs.field(default=None, validator=_optional)


_NO_SCHEDULE = ToolSchedule()


@attrs.frozen(kw_only=True)
class SchedulerConfig:
    """``[scheduler]`` in ``kamid.toml``. Every setting applies on SIGHUP, no restart."""

    #: Calls running at once, all tools together (0: the engine's worker count).
    max_concurrent: int = attrs.field(default=0, validator=_not_negative)
    #: Calls allowed to wait for a slot; the next one is refused with ``busy``.
    max_queue: int = attrs.field(default=64, validator=_not_negative)
    #: A call waiting longer than this is refused with ``busy``.
    queue_timeout_s: float = attrs.field(default=30.0, validator=_not_negative)
    #: Calls per minute, all tools together (0: unlimited).
    calls_per_minute: float = attrs.field(default=0.0, validator=_not_negative)
    #: Calls that may come at once before the global rate applies (0: a minute's worth).
    burst: int = attrs.field(default=0, validator=_not_negative)
    #: Default for each tool's own concurrency limit (0: none).
    tool_max_concurrent: int = attrs.field(default=0, validator=_not_negative)
    #: Default for each tool's own rate, in calls per minute (0: unlimited).
    tool_calls_per_minute: float = attrs.field(default=0.0, validator=_not_negative)
    #: Per tool id overrides.
    tools: dict[str, ToolSchedule] = attrs.Factory(dict)

    def for_tool(self, tool: str) -> tuple[int, float, int]:
        """``(max_concurrent, calls_per_minute, burst)`` for ``tool``; 0 means no limit."""
        own = self.tools.get(tool, _NO_SCHEDULE)
        concurrent = own.max_concurrent
        rate = own.calls_per_minute
        return (
            self.tool_max_concurrent if concurrent is None else concurrent,
            self.tool_calls_per_minute if rate is None else rate,
            own.burst or 0,
        )


class CallObserver(Protocol):
    """What the scheduler reports about each call (the metrics implement it)."""

    def call_rejected(self, tool: str, reason: str) -> None: ...

    def call_started(self, tool: str, priority: str, queue_wait_s: float) -> None: ...

    def call_finished(
        self, tool: str, outcome: str, duration_s: float, usage: Usage | None
    ) -> None: ...


class _Quiet:
    def call_rejected(self, tool: str, reason: str) -> None:
        pass

    def call_started(self, tool: str, priority: str, queue_wait_s: float) -> None:
        pass

    def call_finished(
        self, tool: str, outcome: str, duration_s: float, usage: Usage | None
    ) -> None:
        pass


class TokenBucket:
    """``rate_per_minute`` tokens a minute, at most ``burst`` saved up; starts full."""

    def __init__(self, rate_per_minute: float, burst: int, now: float) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst or max(1, math.ceil(rate_per_minute)))
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_s(self, now: float) -> float:
        """Seconds until one token is available (0 when one is there now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


class Ticket:
    """An admitted call; set :attr:`usage` when it ran, for the fuel metrics."""

    __slots__ = ("arrived", "priority", "queue_wait_s", "tool", "usage")

    def __init__(self, tool: str, priority: str, queue_wait_s: float, arrived: float) -> None:
        self.tool = tool
        self.priority = priority
        self.queue_wait_s = queue_wait_s
        #: When the call asked to be admitted (``trio.current_time()``).
        self.arrived = arrived
        self.usage: Usage | None = None


class Admission:
    """``async with scheduler.admit(tool) as ticket``: see :meth:`Scheduler.admit`."""

    __slots__ = ("_priority", "_scheduler", "_ticket", "_tool")

    def __init__(self, scheduler: Scheduler, tool: str, priority: Priority) -> None:
        self._scheduler = scheduler
        self._tool = tool
        self._priority = priority
        self._ticket: Ticket | None = None

    async def __aenter__(self) -> Ticket:
        scheduler, tool, priority = self._scheduler, self._tool, self._priority
        ticket = scheduler.try_admit(tool, priority=priority)
        if ticket is None:
            arrived = trio.current_time()
            buckets = scheduler._rate_check(tool, arrived)
            scheduler._queue_check(tool, priority)
            for bucket in buckets:
                bucket.take()
            try:
                await scheduler._wait(tool, priority)
            except trio.Cancelled:  # the client went away while waiting
                elapsed = trio.current_time() - arrived
                scheduler.observer.call_finished(tool, "cancelled", elapsed, None)
                raise
            ticket = scheduler._started(tool, priority, arrived)
        self._ticket = ticket
        return ticket

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        assert self._ticket is not None
        outcome = "ok"
        if isinstance(exc, KamiError):
            outcome = exc.kind
        elif isinstance(exc, trio.Cancelled):
            outcome = "cancelled"
        elif exc is not None:
            outcome = "internal_error"
        self._scheduler.finished(self._ticket, outcome, exc)


class _Waiter:
    __slots__ = ("event", "granted", "priority", "refusal", "tool")

    def __init__(self, tool: str, priority: str) -> None:
        self.tool = tool
        self.priority = priority
        self.event = trio.Event()
        self.granted = False
        self.refusal: Busy | None = None


class Scheduler:
    """Admits tool calls under the limits of a :class:`SchedulerConfig`.

    Args:
        config: the limits; :meth:`reconfigure` swaps them while calls run.
        workers: what ``max_concurrent = 0`` means (the engine's parallelism).
        observer: told about every admission, rejection and finished call.
    """

    def __init__(
        self, config: SchedulerConfig, *, workers: int, observer: CallObserver | None = None
    ) -> None:
        self.config = config
        self.workers = max(1, workers)
        self.observer: CallObserver = observer or _Quiet()
        self._running: Counter[str] = Counter()
        self._running_total = 0
        self._queues: dict[str, list[_Waiter]] = {p: [] for p in PRIORITIES}
        self._buckets: dict[str, TokenBucket] = {}
        self._rejected: Counter[str] = Counter()
        #: Called when a call starts waiting for a slot (that a lease may be keeping).
        self.on_wait: Callable[[], None] | None = None

    @property
    def max_concurrent(self) -> int:
        return self.config.max_concurrent or self.workers

    def reconfigure(self, config: SchedulerConfig) -> None:
        """Applies new limits now: rate buckets restart full, waiting calls get a chance."""
        self.config = config
        self._buckets.clear()
        self._dispatch()

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            running=self._running_total,
            queued_interactive=len(self._queues["interactive"]),
            queued_batch=len(self._queues["batch"]),
            max_concurrent=self.max_concurrent,
            max_queue=self.config.max_queue,
            queue_timeout_s=self.config.queue_timeout_s,
            rejected=dict(self._rejected),
        )

    def tool_load(self) -> dict[str, tuple[int, int]]:
        """Tool -> (running, queued), for tools with either."""
        load = {tool: (n, 0) for tool, n in self._running.items() if n}
        for queue in self._queues.values():
            for waiter in queue:
                running, queued = load.get(waiter.tool, (0, 0))
                load[waiter.tool] = (running, queued + 1)
        return load

    def admit(self, tool: str, *, priority: Priority = "interactive") -> Admission:
        """Waits for a slot for one call of ``tool`` and holds it for the ``async with``,
        whose value is the call's :class:`Ticket`.

        Cancellation while waiting leaves the queue at once (a client that disconnects
        frees its place); cancellation while running is the caller's to bound (the
        executor stops the call at its next epoch tick and waits for that).

        Raises (on entering):
            Busy: over a rate limit (``data.retry_after_s`` says when to retry), the queue
                is full, the call waited ``queue_timeout_s``, or an interactive call took
                its queue place; ``data.reason`` names which.
        """
        return Admission(self, tool, priority)

    def try_admit(self, tool: str, *, priority: Priority = "interactive") -> Ticket | None:
        """Admits a call at once if it needs no waiting and no refusal, else None (then
        :meth:`admit` waits or refuses, with the reason). Give the ticket back with
        :meth:`finished`."""
        now = trio.current_time()
        if not self._has_room(tool):
            return None
        buckets = self._rate_buckets(tool, now)
        if any(bucket.wait_s(now) > 0 for bucket, _ in buckets):
            return None
        for bucket, _ in buckets:
            bucket.take()
        self._occupy(tool)
        return self._started(tool, priority, now)

    def finished(
        self,
        ticket: Ticket,
        outcome: str,
        error: BaseException | None = None,
        *,
        release: bool = True,
    ) -> None:
        """Gives an admitted call's slot back; ``outcome`` is ``ok``, an error kind,
        ``cancelled`` or ``internal_error`` (for the metrics). A call that failed
        after it ran reports its usage in ``error.data`` (when the ticket has none).

        ``release=False`` keeps the slot for more calls of the same tool (a connection
        lease's): each is reported with :meth:`ran`, and :meth:`release` gives it back.
        """
        if ticket.usage is None and isinstance(error, KamiError):
            usage = error.data.get("usage") if error.data else None
            if isinstance(usage, dict):
                with contextlib.suppress(TypeError):
                    ticket.usage = Usage(**usage)
        if release:
            self._release(ticket.tool)
        duration = trio.current_time() - ticket.arrived
        self.observer.call_finished(ticket.tool, outcome, duration, ticket.usage)

    def leasable(self, tool: str) -> bool:
        """Calls of ``tool`` may run in a slot kept by ``finished(release=False)``: no
        rate limit applies to them (every call must take its tokens here)."""
        return not self.config.calls_per_minute and not self.config.for_tool(tool)[1]

    def ran(
        self,
        tool: str,
        priority: str,
        duration_s: float,
        usage: Usage | None,
        outcome: str,
        error: BaseException | None = None,
    ) -> None:
        """Reports a call that ran in a kept slot (see :meth:`finished`), as admitted
        at once and finished ``duration_s`` after it started."""
        ticket = Ticket(tool, priority, 0.0, trio.current_time() - duration_s)
        ticket.usage = usage
        self.observer.call_started(tool, priority, 0.0)
        self.finished(ticket, outcome, error, release=False)

    def release(self, tool: str) -> None:
        """Gives back a slot kept by ``finished(release=False)``."""
        self._release(tool)

    @property
    def waiting(self) -> bool:
        """Calls wait for a slot (any thread: a read of list lengths, a hint)."""
        return any(self._queues.values())

    def _started(self, tool: str, priority: str, arrived: float) -> Ticket:
        ticket = Ticket(tool, priority, trio.current_time() - arrived, arrived)
        self.observer.call_started(tool, priority, ticket.queue_wait_s)
        return ticket

    # Rate limits
    def _bucket(self, key: str, rate: float, burst: int, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        return bucket

    def _rate_buckets(self, tool: str, now: float) -> list[tuple[TokenBucket, str]]:
        """The buckets a call of ``tool`` takes a token from, each with what it limits."""
        config = self.config
        _, tool_rate, tool_burst = config.for_tool(tool)
        checks: list[tuple[TokenBucket, str]] = []
        if config.calls_per_minute:
            bucket = self._bucket("", config.calls_per_minute, config.burst, now)
            checks.append((bucket, f"kamid allows {config.calls_per_minute:g} calls per minute"))
        if tool_rate:
            bucket = self._bucket(f"tool:{tool}", tool_rate, tool_burst, now)
            checks.append((bucket, f"{tool} may be called {tool_rate:g} times per minute"))
        return checks

    def _rate_check(self, tool: str, now: float) -> list[TokenBucket]:
        """The buckets this call takes a token from; refuses it if one is empty."""
        checks = self._rate_buckets(tool, now)
        # All are checked before any is taken: a refused call costs no token anywhere.
        for bucket, what in checks:
            wait = bucket.wait_s(now)
            if wait > 0:
                self._refuse_now(
                    tool,
                    "rate_limited",
                    f"busy: rate limit reached ({what}); retry in {math.ceil(wait)} s",
                    retry_after_s=round(wait, 3),
                )
        return [bucket for bucket, _ in checks]

    # Concurrency and the queue
    def _has_room(self, tool: str) -> bool:
        if self._running_total >= self.max_concurrent:
            return False
        tool_limit = self.config.for_tool(tool)[0]
        return not tool_limit or self._running[tool] < tool_limit

    def _occupy(self, tool: str) -> None:
        self._running[tool] += 1
        self._running_total += 1

    def _release(self, tool: str) -> None:
        self._running[tool] -= 1
        if not self._running[tool]:
            del self._running[tool]
        self._running_total -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Grants free slots to waiting calls: interactive first, each queue in order."""
        for queue in self._queues.values():
            for waiter in list(queue):
                if self._running_total >= self.max_concurrent:
                    return
                if self._has_room(waiter.tool):
                    queue.remove(waiter)
                    self._occupy(waiter.tool)
                    waiter.granted = True
                    waiter.event.set()

    def _queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _queue_check(self, tool: str, priority: Priority) -> None:
        waiting = self._queued()
        if waiting >= self.config.max_queue and not self._displace_batch(priority):
            message = f"busy: {waiting} calls waiting; retry"
            if not self.config.max_queue:
                message = (
                    f"busy: {self._running_total} calls running and no queue "
                    "([scheduler].max_queue = 0); retry"
                )
            self._refuse_now(
                tool,
                "queue_full",
                message,
                hint="raise [scheduler].max_queue or max_concurrent if this is normal load",
            )

    async def _wait(self, tool: str, priority: Priority) -> None:
        timeout = self.config.queue_timeout_s
        waiter = _Waiter(tool, priority)
        queue = self._queues[priority]
        queue.append(waiter)
        if self.on_wait is not None:
            self.on_wait()
        try:
            with trio.move_on_after(timeout):
                await waiter.event.wait()
        except BaseException:
            # Cancelled (the client went away): leave the queue, or give back a slot
            # granted between the cancellation and this task running again.
            if waiter.granted:
                self._release(tool)
            elif waiter in queue:
                queue.remove(waiter)
            raise
        if waiter.refusal is not None:
            raise waiter.refusal
        if not waiter.granted:
            queue.remove(waiter)
            self._refuse_now(
                tool,
                "queue_timeout",
                f"busy: waited {timeout:g} s for a free slot "
                f"({self._running_total} calls running, {self._queued()} waiting); retry",
            )

    def _displace_batch(self, priority: Priority) -> bool:
        """Makes room for an interactive call by refusing the newest waiting batch call."""
        batch = self._queues["batch"]
        if priority != "interactive" or not batch:
            return False
        victim = batch.pop()
        self._rejected["displaced"] += 1
        self.observer.call_rejected(victim.tool, "displaced")
        victim.refusal = Busy(
            "busy: the queue is full and interactive calls go first; retry the batch call",
            data={"reason": "displaced"},
        )
        victim.event.set()
        return True

    def _refuse_now(
        self, tool: str, reason: str, message: str, *, hint: str = "", **data: Any
    ) -> None:
        self._rejected[reason] += 1
        self.observer.call_rejected(tool, reason)
        raise Busy(message, data={"reason": reason, **data, **({"hint": hint} if hint else {})})
