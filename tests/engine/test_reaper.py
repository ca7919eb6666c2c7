"""The reaper: deferred cleanup on one idle-priority thread, never a backlog."""

from __future__ import annotations

import os
import threading

import pytest

from kamid.engine._threads import Reaper

TIMEOUT = 10


def test_a_job_runs_on_the_reaper_thread() -> None:
    reaper = Reaper(name="test-reaper")
    done = threading.Event()
    seen: list[str] = []
    reaper.dispose([lambda: seen.append(threading.current_thread().name), done.set])
    assert done.wait(TIMEOUT)
    assert seen == ["test-reaper"]
    reaper.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_the_reaper_runs_at_idle_priority() -> None:
    reaper = Reaper()
    done = threading.Event()
    policy: list[int] = []
    reaper.dispose([lambda: policy.append(os.sched_getscheduler(0)), done.set])
    assert done.wait(TIMEOUT)
    assert policy == [os.SCHED_IDLE]
    # ...and only the reaper: the caller's own thread keeps its policy.
    assert os.sched_getscheduler(0) != os.SCHED_IDLE
    reaper.close()


def test_a_full_reaper_hands_the_job_back_to_the_caller() -> None:
    reaper = Reaper(capacity=2, name="test-reaper")
    started, release = threading.Event(), threading.Event()
    seen: list[str] = []
    reaper.dispose([started.set, lambda: release.wait(TIMEOUT)])  # running
    assert started.wait(TIMEOUT)
    reaper.dispose([lambda: seen.append("queued:" + threading.current_thread().name)])
    reaper.dispose([lambda: seen.append("full:" + threading.current_thread().name)])
    # The third job found both places taken: it ran at once, here.
    assert seen == [f"full:{threading.current_thread().name}"]
    release.set()
    reaper.close()  # waits for the running job; the queued one ran on the reaper or here
    assert len(seen) == 2
    assert seen[1].startswith("queued:")


def test_a_failing_job_does_not_stop_the_next_ones(caplog: pytest.LogCaptureFixture) -> None:
    reaper = Reaper()
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    reaper.dispose([fail, done.set])
    assert done.wait(TIMEOUT)
    reaper.close()
    assert "a deferred cleanup job failed" in caplog.text


def test_close_finishes_the_work_and_later_jobs_run_inline() -> None:
    reaper = Reaper(name="test-reaper")
    release = threading.Event()
    ran: list[str] = []
    reaper.dispose([lambda: release.wait(TIMEOUT), lambda: ran.append("first")])
    closer = threading.Thread(target=reaper.close)
    closer.start()
    release.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert ran == ["first"]  # close waited for the running job
    reaper.dispose([lambda: ran.append(threading.current_thread().name)])
    assert ran == ["first", threading.current_thread().name]
