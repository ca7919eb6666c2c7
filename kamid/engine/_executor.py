"""Running the engine from trio: calls in worker threads or worker processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import trio

from kamid.sandbox import DENY_ALL

from ._threads import WorkerThreads

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from kamid.hostapi import HostContext
    from kamid.protocol import CacheStatistics
    from kamid.sandbox import Limits, SandboxSpec

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
        workers: calls running at once in threads; more wait their turn. Measured on 2
            cores: more threads than cores gives fewer calls per second, not more.
        process_workers: when above 0, calls run in this many worker processes instead
            of threads (``[engine] process_workers``); compiling stays in this process.
    """

    def __init__(self, engine: Engine, *, workers: int = 2, process_workers: int = 0) -> None:
        from ._procpool import ProcessPool

        self.engine = engine
        self.pool: ProcessPool | None = None
        if process_workers > 0:
            self.pool = ProcessPool(
                process_workers,
                aot_dir=engine.aot_dir,
                aot_index=engine.aot_index,
                lru_capacity=engine.lru_capacity,
                tick_ms=engine.tick_ms,
                pooling=engine.pooling,
            )
        #: Calls that can run at once.
        self.concurrency = process_workers if self.pool is not None else workers
        self._calls = trio.CapacityLimiter(self.concurrency)
        #: The threads calls run on (without worker processes).
        self.threads = WorkerThreads(workers)
        # Compiling takes seconds and uses every core; one at a time, and apart from
        # calls so an install never holds a call slot hostage.
        self._compiles = trio.CapacityLimiter(1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Owns the worker processes, if any, until cancelled (which closes them and the
        call threads).

        Started (for ``nursery.start``) once the workers are ready. The epoch is not
        ticked here: each engine ticks itself from a thread while it runs calls.
        """
        async with trio.open_nursery() as nursery:
            if self.pool is not None:
                await nursery.start(self.pool.run)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.threads.close()
                self.engine.close()

    def cache_state(self, sha256: str) -> Literal["memory", "disk", "none"]:
        """Where a call would find the component: :meth:`Engine.cache_state`, and with
        worker processes also ``memory`` once a worker has loaded it (no file or database
        lookup on the hot path)."""
        if self.pool is not None and sha256 in self.pool.warm:
            return "memory"
        return self.engine.cache_state(sha256)

    def forget(self, sha256: str) -> None:
        """:meth:`Engine.forget` (blocking: run it in a thread)."""
        if self.pool is not None:
            self.pool.warm.discard(sha256)
        self.engine.forget(sha256)

    def statistics(self) -> CacheStatistics:
        """The component cache counters of this process and of every worker process."""
        own = self.engine.statistics()
        if self.pool is None:
            return own
        from ._procpool import add_statistics

        return add_statistics(own, self.pool.statistics())

    async def call(
        self,
        sha256: str,
        wasm_path: Path,
        input: str,
        *,
        limits: Limits,
        host: HostContext,
        sandbox: SandboxSpec | None = None,
    ) -> CallOutcome:
        """:meth:`Engine.call` in a worker thread, or a worker process if configured.

        Cancellation stops a running call at its next epoch tick (``[engine].tick_ms``;
        it then fails with ``cancelled``) and waits for that rather than abandoning a
        thread still running wasm; a component still compiling finishes compiling
        first. The call's result or error is then delivered, and the cancellation takes
        effect at the caller's next checkpoint. In worker processes the same holds: the
        worker gets a cancel signal (see :mod:`._procpool`).

        Raises:
            KamiError: as :meth:`Engine.call` does.
        """
        if self.pool is not None:
            async with self._calls:
                return await self.pool.call(
                    sha256, wasm_path, input, limits=limits, host=host, sandbox=sandbox
                )
        engine = self.engine

        def call() -> CallOutcome:
            # The store is closed by the reaper, when a CPU is idle (as on the fast lane).
            teardown: list[Callable[[], None]] = []
            try:
                return engine.call(
                    sha256,
                    wasm_path,
                    input,
                    limits=limits,
                    host=host,
                    sandbox=DENY_ALL if sandbox is None else sandbox,
                    teardown=teardown,
                )
            finally:
                engine.dispose(teardown)

        return await self.threads.run(call, on_cancel=host.cancel)

    def submit(self, job: Callable[[], None]) -> bool:
        """Runs ``job`` (which calls :attr:`engine` and reports its own outcome) on a call
        thread, without trio; False when calls run in worker processes instead.

        The caller must have admitted the call (the scheduler bounds how many run).
        """
        if self.pool is not None:
            return False
        self.threads.submit(job)
        return True

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
