"""The threads that run wasm: a fixed pool fed by a queue, usable from trio and from
plain callbacks.

``trio.to_thread.run_sync`` costs ~0.1 ms per round trip here (thread cache, limiter,
context copy, two wake-ups); a call of the JS example is ~0.9 ms, so that was a tenth of
it. These threads are started once and wait on one queue; trio code awaits a job with
one reschedule, and the daemon's fast path hands a job over without any trio task at all
(the job answers the client itself).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["WorkerThreads"]

log = logging.getLogger("kamid.engine")

T = TypeVar("T")


class _Job:
    __slots__ = ("cancelled", "fn", "started")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.started = False
        self.cancelled = False


class WorkerThreads:
    """``size`` daemon threads running submitted jobs in order of submission.

    Args:
        size: jobs running at once; more wait in the queue.
        name: thread name prefix (shows in profilers and ``ps -L``).
    """

    def __init__(self, size: int, *, name: str = "kami-call") -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1 (got {size})")
        self.size = size
        self._name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        #: Jobs waiting or running.
        self.pending = 0

    def submit(self, fn: Callable[[], None]) -> None:
        """Runs ``fn()`` on a pool thread; it must handle its own exceptions."""
        self._put(_Job(fn))

    async def run(self, fn: Callable[[], T], *, on_cancel: Callable[[], None] | None = None) -> T:
        """``fn()`` on a pool thread; its result or exception, in trio.

        Cancelled while still queued, the job is dropped at once; once it runs,
        cancellation calls ``on_cancel`` (which should make ``fn`` end soon) and waits
        for it to finish (a thread cannot be abandoned mid-call); its result is
        delivered, with the cancellation taking effect at the next checkpoint.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def job() -> None:
            result = outcome.capture(fn)
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        item = _Job(job)

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            with self._lock:
                if not item.started:
                    item.cancelled = True
                    return trio.lowlevel.Abort.SUCCEEDED
            if on_cancel is not None:
                on_cancel()
            return trio.lowlevel.Abort.FAILED

        self._put(item)
        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def close(self) -> None:
        """Stops the threads once the queued jobs ran (idempotent)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)

    def _put(self, item: _Job) -> None:
        with self._lock:
            self.pending += 1
            if len(self._threads) < min(self.size, self.pending):
                thread = threading.Thread(
                    target=self._work,
                    name=f"{self._name}-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
        self._queue.put(item)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            with self._lock:
                skip = item.cancelled
                item.started = True
            try:
                if not skip:
                    item.fn()
            except Exception:
                log.exception("a job on a call thread failed")
            finally:
                with self._lock:
                    self.pending -= 1
