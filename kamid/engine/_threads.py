"""The threads that run wasm: a fixed pool, usable from trio and from plain callbacks;
and the reaper, which closes stores when a CPU is idle.

``trio.to_thread.run_sync`` costs ~0.1 ms per round trip here (thread cache, limiter,
context copy, two wake-ups); a call of the JS example is ~0.9 ms, so that was a tenth of
it. These threads are started once; trio code awaits a job with one reschedule, and the
daemon's fast path hands a job over without any trio task at all (the job answers the
client itself). A job goes to the thread that went idle last (a queue woke the one idle
longest, alternating calls between threads and CPUs: 3-8 % slower for the JS example).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Reaper", "WorkerThreads"]

log = logging.getLogger("kamid.engine")

T = TypeVar("T")


class _Job:
    __slots__ = ("cancelled", "fn", "started")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.started = False
        self.cancelled = False


class _Waiter:
    """An idle thread's mailbox: a lock released to wake it, and the job it gets."""

    __slots__ = ("item", "wake")

    def __init__(self) -> None:
        self.item: _Job | None = None
        self.wake = threading.Lock()


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
        #: Jobs no thread was idle for, in order; and the idle threads, last idle on top.
        self._jobs: collections.deque[_Job | None] = collections.deque()
        self._idle: list[_Waiter] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        #: Jobs waiting or running.
        self.pending = 0
        #: Called (on the submitting thread) when a job has to wait for a thread.
        self.on_backlog: Callable[[], None] | None = None

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

    @property
    def queued(self) -> bool:
        """Jobs wait for a thread (any thread: a hint, read without the lock)."""
        return bool(self._jobs)

    def close(self) -> None:
        """Stops the threads once the queued jobs ran (idempotent)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._hand_over(None)

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
        self._hand_over(item)

    def _hand_over(self, item: _Job | None) -> None:
        # To the thread that went idle last: it is likely still on a CPU that is awake,
        # with the caches of the call before (a queue would wake the one idle longest).
        with self._lock:
            if self._idle:
                waiter = self._idle.pop()
                waiter.item = item
                waiter.wake.release()
                return
            self._jobs.append(item)
        if item is not None and self.on_backlog is not None:
            self.on_backlog()

    def _next(self, me: _Waiter) -> _Job | None:
        with self._lock:
            if self._jobs:
                return self._jobs.popleft()
            me.wake.acquire(blocking=False)  # armed: the next release is for us
            self._idle.append(me)
        me.wake.acquire()
        return me.item

    def _work(self) -> None:
        me = _Waiter()
        while (item := self._next(me)) is not None:
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


class Reaper:
    """Runs cleanup that no one waits for (closing a call's store: with pooling, copying
    its memory image back) on one thread of the lowest CPU priority, ``SCHED_IDLE``.

    It runs only when a CPU would otherwise be idle, so it never delays the client
    reading its answer, the next request, or the next call. It holds at most
    ``capacity`` jobs (waiting or running); past that :meth:`dispose` runs the job at once
    on the caller's thread. So a backlog stays bounded, and under a load that keeps every
    CPU busy the callers reset their own stores, as they did without it.

    Measured on 2 vCPUs with pooling (JS example, ``tools.exec`` round trip): 1.3-1.5 ms
    with the reaper at ``SCHED_IDLE``, 1.6 ms closing on the call thread, 1.9 ms with
    the reaper at normal priority (it then competes with the next call).
    """

    def __init__(self, *, capacity: int = 2, name: str = "kami-reaper") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 (got {capacity})")
        self.capacity = capacity
        self._name = name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: collections.deque[Sequence[Callable[[], object]]] = collections.deque()
        self._running = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def dispose(self, jobs: Sequence[Callable[[], object]]) -> None:
        """Runs ``jobs`` in order: on the reaper if it has room, else here and now.
        Exceptions are logged."""
        with self._lock:
            if not self._closed and len(self._waiting) + self._running < self.capacity:
                self._waiting.append(jobs)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                    self._thread.start()
                self._wake.notify()
                return
        _run_all(jobs)

    def close(self) -> None:
        """Runs the waiting jobs here, waits for a running one, and stops the thread; later
        jobs run on their callers (idempotent)."""
        with self._lock:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
            thread = self._thread
            self._wake.notify()
        for jobs in waiting:
            _run_all(jobs)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _work(self) -> None:
        _lowest_priority()
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if not self._waiting:
                    return  # closed
                jobs = self._waiting.popleft()
                self._running = 1
            try:
                _run_all(jobs)
            finally:
                with self._lock:
                    self._running = 0


def _run_all(jobs: Sequence[Callable[[], object]]) -> None:
    for job in jobs:
        try:
            job()
        except Exception:
            log.exception("a deferred cleanup job failed")


def _lowest_priority() -> None:
    """Puts the calling thread (only it, on Linux) at SCHED_IDLE, or at least nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError) as exc:
            log.debug("the reaper thread keeps its priority: %s", exc)
