"""The executor: wasm runs in worker threads, the trio loop keeps going, epochs tick."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import attrs
import pytest
import trio

from kamid.engine import Engine, Executor
from kamid.hostapi import HostContext
from kamid.protocol import Cancelled, LimitExceeded

from .conftest import FAST, host

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .conftest import DictIndex, Wasm


@pytest.fixture
def quiet_engine(aot_dir: Path, index: DictIndex) -> Engine:
    """An engine of its own for the executor under test."""
    return Engine(aot_dir=aot_dir, aot_index=index, tick_ms=5)


class ThreadRecorder(HostContext):
    def log(self, level: str, message: str) -> None:
        self.thread = threading.get_ident()
        super().log(level, message)


async def test_calls_run_in_a_worker_thread(
    quiet_engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    tool = wasm("host")
    executor = Executor(quiet_engine)
    await executor.precompile(tool.sha256, tool.path)
    assert (await executor.inspect(tool.sha256, tool.path)).exports == ["kami:tool/tool@0.1.0"]
    context = ThreadRecorder(tool_id="dev.test.thread")
    outcome = await executor.call(tool.sha256, tool.path, "l", limits=FAST, host=context)
    assert outcome.value == "l:"
    assert context.thread != threading.get_ident()


async def test_the_ticker_enforces_deadlines_while_the_loop_runs(
    quiet_engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    loop = wasm("loop")
    executor = Executor(quiet_engine)
    limits = attrs.evolve(FAST, timeout_ms=200, fuel=10**15)
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await trio.sleep(0.01)
            beats += 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            nursery.start_soon(heartbeat)
            with pytest.raises(LimitExceeded) as info:
                await executor.call(loop.sha256, loop.path, "{}", limits=limits, host=host())
            nursery.cancel_scope.cancel()
    assert info.value.data["limit"] == "timeout_ms"
    assert beats >= 5  # the loop kept running while wasm spun in a thread


async def test_the_engine_ticks_its_own_deadlines(
    quiet_engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    # Nothing else ticks (no executor.run, no test thread): the engine's own ticker ends
    # a spinning call at its deadline, and stops once no call runs.
    loop = wasm("loop")
    limits = attrs.evolve(FAST, timeout_ms=50, fuel=10**15)
    executor = Executor(quiet_engine)
    assert quiet_engine.ticks == 0
    with trio.fail_after(10), pytest.raises(LimitExceeded) as info:
        await executor.call(loop.sha256, loop.path, "{}", limits=limits, host=host())
    assert info.value.data["limit"] == "timeout_ms"
    assert quiet_engine.ticks >= 50 // quiet_engine.tick_ms


async def test_cancelling_a_call_stops_it_at_the_next_tick(
    quiet_engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    loop = wasm("loop")
    executor = Executor(quiet_engine)
    limits = attrs.evolve(FAST, timeout_ms=30_000, fuel=10**15)
    context = host()
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        start = trio.current_time()
        with trio.move_on_after(0.05), pytest.raises(Cancelled) as info:
            # Cancelled after 50 ms, the running call is stopped by the engine (its
            # outcome is delivered before the cancellation takes effect).
            await executor.call(loop.sha256, loop.path, "{}", limits=limits, host=context)
        assert context.cancelled
        assert trio.current_time() - start < 15  # far from its 30 s deadline
        assert info.value.data["usage"]["fuel_consumed"] > 0  # it ran, then was stopped
        # The engine still runs calls afterwards.
        echo = wasm("echo")
        outcome = await executor.call(echo.sha256, echo.path, "[1]", limits=FAST, host=host())
        assert outcome.value == [1]
        nursery.cancel_scope.cancel()


def test_a_cancelled_host_stops_its_call(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    loop = wasm("loop")
    limits = attrs.evolve(FAST, timeout_ms=30_000, fuel=10**15)
    context = host()
    threading.Timer(0.05, context.cancel).start()
    with pytest.raises(Cancelled) as info:
        engine.call(loop.sha256, loop.path, "{}", limits=limits, host=context)
    assert "was cancelled" in info.value.message
    assert info.value.data["usage"]["wall_ms"] < 15_000
