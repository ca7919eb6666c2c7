"""``[engine] process_workers``: calls in worker processes behave as calls in threads."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from kamid.engine import Engine, Executor
from kamid.hostapi import HostContext, HttpRequest, HttpResponse
from kamid.protocol import Cancelled, InternalError, KamiError, LimitExceeded
from tests._engine import FAST, DictIndex, compile_wat
from tests._engine import Granted as Recorder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


async def wait_busy(executor: Executor, n: int) -> list[int]:
    """The pids of the workers running calls, once ``n`` are."""
    assert executor.pool is not None
    for _ in range(6000):
        busy = [pid for pid, state in executor.pool.workers().items() if state == "busy"]
        if len(busy) >= n:
            return busy
        await trio.sleep(0.01)
    raise AssertionError(f"not {n} busy workers: {executor.pool.workers()}")


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[Executor]:
    engine = Engine(aot_dir=tmp_path / "aot", aot_index=DictIndex(), tick_ms=5)
    executor = Executor(engine, process_workers=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        yield executor
        nursery.cancel_scope.cancel()


class Granted(Recorder):
    """Answers every host call in the daemon, remembering what it was asked."""

    def http_fetch(self, request: HttpRequest) -> HttpResponse:
        self.asked.append(request)
        self.log("info", "fetched by the daemon")  # a line the daemon's side adds
        return HttpResponse(status=201, headers=(("x-a", "1"),), body=b"pong")

    def invoke(self, tool: str, input: str) -> str:
        self.asked.append((tool, input))
        return "{}"


async def test_host_calls_are_served_by_the_daemon(executor: Executor, tmp_path: Path) -> None:
    tool = compile_wat(tmp_path, "host")
    await executor.precompile(tool.sha256, tool.path)
    context = Granted()
    results = []
    for command in "lhksdKi":
        outcome = await executor.call(tool.sha256, tool.path, command, limits=FAST, host=context)
        results.append(outcome.value)
    assert results == ["l:", "R:pong", "S:stored", "U:", "D:", "L:key-1", "O:{}"]
    assert context.asked[0] == HttpRequest(
        method="GET",
        url="https://example.com/x",
        headers=(("accept", "text/plain"),),
        body=b"\x01\x02\x03",
        timeout_ms=1500,
    )
    assert context.asked[1:] == [
        "key",
        ("key", b"\x01\x02\x03"),
        "key",
        "key",
        ("other.tool", "{}"),
    ]
    # The last call's log and counters are the context's, as with a thread.
    assert context.host_calls == 1
    first = HostContext(tool_id="dev.test.log")
    outcome = await executor.call(tool.sha256, tool.path, "l", limits=FAST, host=first)
    assert [(line.level, line.message) for line in first.logs] == [("info", "hello from wat")]
    assert outcome.logs == first.logs
    fetching = Granted()
    await executor.call(tool.sha256, tool.path, "h", limits=FAST, host=fetching)
    assert [line.message for line in fetching.logs] == ["fetched by the daemon"]


async def test_denied_host_calls_reach_the_tool_as_typed_errors(
    executor: Executor, tmp_path: Path
) -> None:
    tool = compile_wat(tmp_path, "host")
    context = HostContext(tool_id="dev.test.nogrant")
    outcome = await executor.call(tool.sha256, tool.path, "k", limits=FAST, host=context)
    assert outcome.value.startswith("0:dev.test.nogrant has no key-value store grant")


async def test_limits_are_enforced_in_the_workers(executor: Executor, tmp_path: Path) -> None:
    tool = compile_wat(tmp_path, "loop")
    limits = attrs.evolve(FAST, fuel=10**15)
    with pytest.raises(LimitExceeded) as exceeded:
        await executor.call(
            tool.sha256, tool.path, "x", limits=limits, host=HostContext(tool_id="t")
        )
    assert exceeded.value.data["limit"] == "timeout_ms"
    assert exceeded.value.data["usage"]["wall_ms"] >= 300


async def test_calls_run_in_parallel_processes(executor: Executor, tmp_path: Path) -> None:
    tool = compile_wat(tmp_path, "loop")
    assert executor.pool is not None
    limits = attrs.evolve(FAST, timeout_ms=2000, fuel=10**15)

    async def call() -> None:
        with pytest.raises(LimitExceeded):
            await executor.call(
                tool.sha256, tool.path, "x", limits=limits, host=HostContext(tool_id="t")
            )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        nursery.start_soon(call)
        busy = await wait_busy(executor, 2)
    assert len(set(busy)) == 2
    assert os.getpid() not in busy
    stats = executor.statistics()
    assert stats.memory_hits + stats.disk_hits + stats.compiles >= 2


async def test_a_worker_that_dies_fails_its_call_and_is_replaced(
    executor: Executor, tmp_path: Path
) -> None:
    tool = compile_wat(tmp_path, "loop")
    echo = compile_wat(tmp_path, "echo")
    assert executor.pool is not None
    limits = attrs.evolve(FAST, timeout_ms=60_000, fuel=10**15)
    failure: list[BaseException] = []

    async def doomed() -> None:
        try:
            await executor.call(
                tool.sha256, tool.path, "x", limits=limits, host=HostContext(tool_id="t")
            )
        except InternalError as exc:
            failure.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(doomed)
        (victim,) = await wait_busy(executor, 1)
        os.kill(victim, signal.SIGKILL)
    (error,) = failure
    assert isinstance(error, KamiError)
    assert f"(pid {victim}) died during the call: it was killed by signal SIGKILL" in error.message
    outcome = await executor.call(
        echo.sha256, echo.path, '"ok"', limits=FAST, host=HostContext(tool_id="e")
    )
    assert outcome.value == "ok"
    assert victim not in executor.pool.workers()


async def test_a_cancelled_call_is_stopped_and_its_worker_kept(
    executor: Executor, tmp_path: Path
) -> None:
    tool = compile_wat(tmp_path, "loop")
    assert executor.pool is not None
    limits = attrs.evolve(FAST, timeout_ms=60_000, fuel=10**15)
    failure: list[BaseException] = []

    async def looping(scope: trio.CancelScope) -> None:
        with scope:
            try:
                context = HostContext(tool_id="t")
                await executor.call(tool.sha256, tool.path, "x", limits=limits, host=context)
            except KamiError as exc:
                failure.append(exc)  # delivered before the cancellation takes effect

    scope = trio.CancelScope()
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(looping, scope)
        await wait_busy(executor, 1)
        workers = set(executor.pool.workers())
        await trio.sleep(0.3)  # the worker runs the loop
        scope.cancel()
    # The worker got the cancel signal and stopped the guest, long before its deadline;
    # the error says so, and the same worker is idle again (not killed and replaced).
    assert trio.current_time() - started < 30
    (error,) = failure
    assert isinstance(error, Cancelled), error
    assert set(executor.pool.workers()) == workers
    assert list(executor.pool.workers().values()) == ["idle", "idle"]
    with pytest.raises(LimitExceeded):  # the workers serve calls as before
        await executor.call(tool.sha256, tool.path, "x", limits=FAST, host=HostContext(tool_id="t"))


async def test_an_idle_executor_does_not_tick(tmp_path: Path) -> None:
    # A daemon runs for weeks, mostly idle: it must not wake up every tick_ms for nothing.
    engine = Engine(aot_dir=tmp_path / "aot", aot_index=DictIndex(), tick_ms=2)
    executor = Executor(engine)
    echo, loop = compile_wat(tmp_path, "echo"), compile_wat(tmp_path, "loop")
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        await trio.sleep(0.2)  # 100 ticks' worth
        assert engine.ticks == 0
        # A call that runs into its deadline: the engine ticked while it ran.
        with pytest.raises(LimitExceeded):
            await executor.call(
                loop.sha256,
                loop.path,
                "x",
                limits=attrs.evolve(FAST, fuel=10**15),
                host=HostContext(tool_id="t"),
            )
        assert engine.ticks > 0
        await executor.call(echo.sha256, echo.path, "1", limits=FAST, host=HostContext(tool_id="e"))
        await trio.sleep(0.05)  # lets a tick that was already sleeping land
        after_calls = engine.ticks
        await trio.sleep(0.2)
        assert engine.ticks == after_calls
        nursery.cancel_scope.cancel()
