"""Call threads: a job goes to the thread that went idle last."""

from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING

from kamid.engine._threads import WorkerThreads

if TYPE_CHECKING:
    from collections.abc import Callable

TIMEOUT = 10


def _recorder(into: list[str], wait: threading.Event | None = None) -> Callable[[], None]:
    def job() -> None:
        if wait is not None:
            wait.wait(TIMEOUT)
        into.append(threading.current_thread().name)

    return job


def _wait_idle(threads: WorkerThreads) -> None:
    deadline = time.monotonic() + TIMEOUT
    while threads.pending:
        assert time.monotonic() < deadline, "the jobs did not finish"
        time.sleep(0.005)


def test_the_thread_idle_last_takes_the_next_job() -> None:
    threads = WorkerThreads(2, name="test-call")
    names: list[str] = []
    release = threading.Event()
    threads.submit(_recorder(names, release))
    threads.submit(_recorder(names))
    deadline = time.monotonic() + TIMEOUT
    while len(names) < 1:  # the second job ran on the other thread, which is idle now
        assert time.monotonic() < deadline
        time.sleep(0.005)
    release.set()  # the first thread finishes and goes idle after it
    _wait_idle(threads)
    first, second = names[1], names[0]
    assert first != second
    for _ in range(3):
        threads.submit(_recorder(names))
        _wait_idle(threads)
    # Each time, the thread that just finished (the first one) took it again.
    assert names[2:] == [first] * 3
    threads.close()


def test_jobs_queue_in_order_when_every_thread_is_busy() -> None:
    threads = WorkerThreads(1, name="test-call")
    order: list[str] = []
    release = threading.Event()
    threads.submit(_recorder(order, release))
    for i in range(1, 5):
        threads.submit(functools.partial(order.append, str(i)))
    release.set()
    _wait_idle(threads)
    assert order == ["test-call-0", "1", "2", "3", "4"]
    threads.close()
