"""TrioInbox: callbacks from call threads run on trio, without a wake-up when one is due."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from kamid.inbox import TrioInbox

if TYPE_CHECKING:
    import pytest

GRACE = 0.02


async def test_a_posted_callback_waits_for_the_next_delivery() -> None:
    inbox = TrioInbox(60.0)  # real time: the thread's post is not delivered by the backstop
    ran: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(inbox.run)
        inbox.expect()
        await trio.to_thread.run_sync(inbox.post, lambda: ran.append("call"))
        await trio.sleep(0.05)
        assert ran == []  # nothing woke the trio thread for it
        inbox.deliver()  # what the server does when a request comes in
        assert ran == ["call"]
        nursery.cancel_scope.cancel()
    assert inbox.wakeups == 0


async def test_with_no_request_the_callback_runs_within_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = TrioInbox(GRACE)
    ran: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(inbox.run)
        started = trio.current_time()
        inbox.expect()
        inbox.post(lambda: ran.append(trio.current_time() - started))
        await trio.sleep(GRACE * 0.75)
        inbox.expect()  # another call starts: the delivery moves with it
        await trio.sleep(GRACE * 0.5)
        assert ran == []
        await trio.sleep(GRACE)
        assert ran == [GRACE * 1.75]
        nursery.cancel_scope.cancel()
    assert inbox.wakeups == 0


async def test_a_callback_posted_after_the_due_delivery_wakes_trio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = TrioInbox(GRACE)
    ran = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(inbox.run)
        inbox.expect()
        await trio.sleep(GRACE * 3)  # a call longer than the grace: the delivery was empty
        await trio.to_thread.run_sync(inbox.post, ran.set)
        with trio.fail_after(1):
            await ran.wait()
        nursery.cancel_scope.cancel()
    assert inbox.wakeups == 1


async def test_without_the_backstop_task_every_post_wakes_trio() -> None:
    inbox = TrioInbox(GRACE)
    ran = trio.Event()
    inbox.expect()
    await trio.to_thread.run_sync(inbox.post, ran.set)
    with trio.fail_after(5):
        await ran.wait()
    assert inbox.wakeups == 1


async def test_callbacks_run_in_order_and_one_that_fails_is_logged(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = TrioInbox(GRACE)
    ran: list[int] = []

    def fail() -> None:
        raise RuntimeError("boom")

    async with trio.open_nursery() as nursery:
        await nursery.start(inbox.run)
        inbox.expect()
        inbox.post(lambda: ran.append(1))
        inbox.post(fail)
        inbox.post(lambda: ran.append(2))
        with caplog.at_level(logging.ERROR, logger="kamid.inbox"):
            inbox.deliver()
        nursery.cancel_scope.cancel()
    assert ran == [1, 2]
    assert "failed" in caplog.text
    assert "boom" in caplog.text


async def test_stopping_the_backstop_delivers_what_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = TrioInbox(GRACE)
    ran: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(inbox.run)
        inbox.expect()
        inbox.post(lambda: ran.append("left"))
        nursery.cancel_scope.cancel()
    assert ran == ["left"]
