"""The scheduler's admission logic, on trio's virtual clock (no real sleeps)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from kamid.metrics import DaemonMetrics
from kamid.protocol import Busy, ToolFailed, Usage
from kamid.scheduler import Scheduler, SchedulerConfig, ToolSchedule

if TYPE_CHECKING:
    from kamid.protocol import Priority


class Calls:
    """Calls held open in a nursery: each is admitted, then waits until released."""

    def __init__(self, scheduler: Scheduler, nursery: trio.Nursery) -> None:
        self.scheduler = scheduler
        self.nursery = nursery
        self.started: list[str] = []
        self.refused: dict[str, Busy] = {}
        self._release: dict[str, trio.Event] = {}
        self.scopes: dict[str, trio.CancelScope] = {}

    def start(self, name: str, tool: str = "t", priority: Priority = "interactive") -> None:
        self._release[name] = trio.Event()
        self.nursery.start_soon(self._call, name, tool, priority)

    async def _call(self, name: str, tool: str, priority: Priority) -> None:
        with trio.CancelScope() as scope:
            self.scopes[name] = scope
            try:
                async with self.scheduler.admit(tool, priority=priority):
                    self.started.append(name)
                    await self._release[name].wait()
            except Busy as exc:
                self.refused[name] = exc

    async def enter(self, name: str, tool: str = "t", priority: Priority = "interactive") -> None:
        """Starts a call and lets it reach the scheduler (trio may run new tasks in any order)."""
        self.start(name, tool, priority)
        await settle()

    def finish(self, name: str) -> None:
        self._release[name].set()


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_global_limit_queues_and_admits_in_order() -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=2), workers=8)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        for name in "abcd":
            await calls.enter(name)
        assert calls.started == ["a", "b"]
        stats = scheduler.statistics()
        assert (stats.running, stats.queued_interactive) == (2, 2)
        calls.finish("a")
        await settle()
        assert calls.started == ["a", "b", "c"]
        for name in "bcd":
            calls.finish(name)
    assert scheduler.statistics().running == 0


async def test_zero_means_the_engines_worker_count() -> None:
    assert Scheduler(SchedulerConfig(), workers=3).max_concurrent == 3


async def test_a_tool_at_its_limit_does_not_hold_up_other_tools() -> None:
    config = SchedulerConfig(max_concurrent=4, tools={"slow": ToolSchedule(max_concurrent=1)})
    scheduler = Scheduler(config, workers=1)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        await calls.enter("slow-1", "slow")
        await calls.enter("slow-2", "slow")
        await calls.enter("fast", "fast")
        assert calls.started == ["slow-1", "fast"]
        assert scheduler.tool_load() == {"slow": (1, 1), "fast": (1, 0)}
        calls.finish("slow-1")
        await settle()
        assert calls.started[-1] == "slow-2"
        calls.finish("slow-2")
        calls.finish("fast")


async def test_default_per_tool_limit_applies_to_every_tool() -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=4, tool_max_concurrent=1), workers=1)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        for name, tool in (("a1", "a"), ("a2", "a"), ("b1", "b")):
            await calls.enter(name, tool)
        assert calls.started == ["a1", "b1"]
        for name in ("a1", "a2", "b1"):
            calls.finish(name)


async def test_a_full_queue_refuses_at_once() -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=1, max_queue=2), workers=1)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        for name in "abcd":
            await calls.enter(name)
        assert calls.started == ["a"]
        assert list(calls.refused) == ["d"]
        refusal = calls.refused["d"]
        assert refusal.message == "busy: 2 calls waiting; retry"
        assert refusal.data["reason"] == "queue_full"
        assert scheduler.statistics().rejected == {"queue_full": 1}
        for name in "abc":
            calls.finish(name)


async def test_waiting_past_the_queue_timeout_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=1, queue_timeout_s=5), workers=1)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        await calls.enter("a")
        started = trio.current_time()
        with pytest.raises(Busy) as refused:
            async with scheduler.admit("t"):
                pytest.fail("admitted while the only slot was taken")
        assert trio.current_time() - started == pytest.approx(5)
        assert refused.value.data["reason"] == "queue_timeout"
        assert "waited 5 s for a free slot (1 calls running, 0 waiting)" in refused.value.message
        assert scheduler.statistics().queued_interactive == 0
        calls.finish("a")


async def test_interactive_calls_go_ahead_of_batch_calls() -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=1), workers=1)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        await calls.enter("running")
        await calls.enter("batch-1", priority="batch")
        await calls.enter("batch-2", priority="batch")
        await calls.enter("interactive", priority="interactive")
        stats = scheduler.statistics()
        assert (stats.queued_interactive, stats.queued_batch) == (1, 2)
        for name in ("running", "interactive", "batch-1"):
            calls.finish(name)
            await settle()
        assert calls.started == ["running", "interactive", "batch-1", "batch-2"]
        calls.finish("batch-2")


async def test_an_interactive_call_takes_the_place_of_the_newest_batch_call() -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=1, max_queue=2), workers=1)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        await calls.enter("running")
        await calls.enter("batch-old", priority="batch")
        await calls.enter("batch-new", priority="batch")
        await calls.enter("interactive", priority="interactive")
        assert list(calls.refused) == ["batch-new"]
        assert calls.refused["batch-new"].data["reason"] == "displaced"
        calls.start("batch-late", priority="batch")  # the queue is full again: refused
        await settle()
        assert calls.refused["batch-late"].data["reason"] == "queue_full"
        for name in ("running", "interactive", "batch-old"):
            calls.finish(name)
            await settle()
        assert calls.started == ["running", "interactive", "batch-old"]


async def test_a_cancelled_waiter_leaves_the_queue_at_once() -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=1, max_queue=1), workers=1)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        await calls.enter("running")
        await calls.enter("gone")
        assert scheduler.statistics().queued_interactive == 1
        calls.scopes["gone"].cancel()  # what the server does when the client disconnects
        await settle()
        assert scheduler.statistics().queued_interactive == 0
        calls.start("next")  # its place is free: queued, not refused
        await settle()
        assert not calls.refused
        calls.finish("running")
        await settle()
        assert calls.started == ["running", "next"]
        calls.finish("next")
    assert scheduler.statistics().running == 0


async def test_a_slot_granted_to_a_call_being_cancelled_is_given_back() -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=1), workers=1)
    running = scheduler.admit("t")
    await running.__aenter__()
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        await calls.enter("waiting")
        # In one tick, with no checkpoint between: the waiter is cancelled, then the slot
        # frees and is granted to it before it runs again.
        calls.scopes["waiting"].cancel()
        await running.__aexit__(None, None, None)
        assert scheduler.statistics().running == 1  # granted to the cancelled waiter
    stats = scheduler.statistics()
    assert (stats.running, stats.queued_interactive) == (0, 0)
    assert calls.started == []


async def test_rate_limits_refuse_with_the_time_to_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SchedulerConfig(tools={"t": ToolSchedule(calls_per_minute=3)})
    scheduler = Scheduler(config, workers=4)
    for _ in range(3):  # a minute's worth at once (the default burst)
        async with scheduler.admit("t"):
            pass
    with pytest.raises(Busy) as refused:
        async with scheduler.admit("t"):
            pass
    assert refused.value.data["reason"] == "rate_limited"
    assert refused.value.data["retry_after_s"] == pytest.approx(20)
    assert refused.value.message == (
        "busy: rate limit reached (t may be called 3 times per minute); retry in 20 s"
    )
    async with scheduler.admit("other"):  # other tools are not limited
        pass
    await trio.sleep(20)
    async with scheduler.admit("t"):  # one token back after 20 s
        pass
    with pytest.raises(Busy):
        async with scheduler.admit("t"):
            pass


async def test_the_global_rate_counts_every_tool_and_a_refusal_costs_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SchedulerConfig(
        calls_per_minute=60, burst=2, tools={"t": ToolSchedule(calls_per_minute=1)}
    )
    scheduler = Scheduler(config, workers=4)
    async with scheduler.admit("t"):
        pass
    with pytest.raises(Busy):  # t's own rate: refused without taking a global token
        async with scheduler.admit("t"):
            pass
    async with scheduler.admit("u"):
        pass
    with pytest.raises(Busy) as refused:
        async with scheduler.admit("u"):
            pass
    assert refused.value.message == (
        "busy: rate limit reached (kamid allows 60 calls per minute); retry in 1 s"
    )
    await trio.sleep(1)
    async with scheduler.admit("u"):
        pass


async def test_reconfigure_applies_to_waiting_calls() -> None:
    scheduler = Scheduler(SchedulerConfig(max_concurrent=1), workers=1)
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        for name in "abc":
            await calls.enter(name)
        assert len(calls.started) == 1
        scheduler.reconfigure(SchedulerConfig(max_concurrent=3))
        await settle()
        assert sorted(calls.started) == ["a", "b", "c"]
        for name in "abc":
            calls.finish(name)


async def test_every_call_is_reported_to_the_metrics(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = DaemonMetrics()
    scheduler = Scheduler(
        SchedulerConfig(max_concurrent=1, max_queue=0), workers=1, observer=metrics
    )
    async with scheduler.admit("t") as ticket:
        await trio.sleep(0.2)
        ticket.usage = Usage(wall_ms=1, fuel_consumed=1234, peak_memory_bytes=0)
    with pytest.raises(ToolFailed):
        async with scheduler.admit("t"):
            raise ToolFailed(
                "boom",
                data={
                    "usage": {
                        "wall_ms": 1.0,
                        "fuel_consumed": 66,
                        "peak_memory_bytes": 0,
                        "host_calls": 0,
                    }
                },
            )
    async with trio.open_nursery() as nursery:
        calls = Calls(scheduler, nursery)
        await calls.enter("held")
        with pytest.raises(Busy):
            async with scheduler.admit("t"):
                pass
        calls.scopes["held"].cancel()
    assert metrics.calls.get(tool="t", outcome="ok") == 1
    assert metrics.calls.get(tool="t", outcome="tool_failed") == 1
    assert metrics.calls.get(tool="t", outcome="busy") == 1
    assert metrics.calls.get(tool="t", outcome="cancelled") == 1
    assert metrics.fuel.get(tool="t") == 1234 + 66
    assert metrics.rejections.get(reason="queue_full") == 1
    assert metrics.call_duration.count(tool="t") == 3
    assert metrics.queue_wait.count(priority="interactive") == 3
