"""Running the engine from trio: calls in worker threads, and the epoch ticker."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from pathlib import Path

    from kamid.hostapi import HostContext
    from kamid.sandbox import Limits

    from ._cache import CompileReport
    from ._component import ComponentInfo
    from ._engine import Engine
    from ._outcome import CallOutcome

__all__ = ["Executor"]


class Executor:
    """Runs blocking engine work off the trio loop, a bounded number at a time.

    This is the one seam between the async daemon and wasm execution, so that a pool of
    worker processes can replace threads later without touching callers.

    Args:
        engine: the engine to drive.
        workers: calls running at once; more wait their turn. Measured on 2 cores: more
            threads than cores gives fewer calls per second, not more.
    """

    def __init__(self, engine: Engine, *, workers: int = 2) -> None:
        self.engine = engine
        self._calls = trio.CapacityLimiter(workers)
        # Compiling takes seconds and uses every core; one at a time, and apart from
        # calls so an install never holds a call slot hostage.
        self._compiles = trio.CapacityLimiter(1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ticks the engine's epoch every ``tick_ms`` until cancelled.

        Started (for ``nursery.start``) as soon as it ticks. Running calls count their
        deadlines in these ticks, so it must run for as long as calls can; cancelling it
        only stops the ticking.
        """
        interval = self.engine.tick_ms / 1000
        task_status.started()
        while True:
            await trio.sleep(interval)
            self.engine.tick()

    async def call(
        self, sha256: str, wasm_path: Path, input: str, *, limits: Limits, host: HostContext
    ) -> CallOutcome:
        """:meth:`Engine.call` in a worker thread.

        Cancellation waits for the call to end rather than abandoning a thread that is
        still running wasm; the wait is bounded by the call's own deadline,
        ``timeout_ms`` (plus compiling, if the component was not compiled yet). The
        call's result or error is then delivered, and the cancellation takes effect at
        the caller's next checkpoint.

        Raises:
            KamiError: as :meth:`Engine.call` does.
        """
        fn = functools.partial(self.engine.call, limits=limits, host=host)
        return await trio.to_thread.run_sync(
            fn, sha256, wasm_path, input, limiter=self._calls, abandon_on_cancel=False
        )

    async def precompile(self, sha256: str, wasm_path: Path) -> CompileReport:
        """:meth:`Engine.precompile` in a worker thread; cancellation waits for it.

        Raises:
            InvalidTool, IntegrityError: as :meth:`Engine.precompile` does.
        """
        return await trio.to_thread.run_sync(
            self.engine.precompile, sha256, wasm_path, limiter=self._compiles
        )

    async def inspect(self, sha256: str, wasm_path: Path) -> ComponentInfo:
        """:meth:`Engine.inspect` in a worker thread; cancellation waits for it.

        Raises:
            InvalidTool, IntegrityError: as :meth:`Engine.inspect` does.
        """
        return await trio.to_thread.run_sync(
            self.engine.inspect, sha256, wasm_path, limiter=self._compiles
        )
