"""The epoch ticker: what turns a call's wall-clock deadline into an interruption."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["EpochTicker"]


class EpochTicker:
    """Calls ``tick`` every ``interval_s`` from its own thread while anything is busy.

    Deadlines of running guests count these ticks. The thread sleeps while nothing is
    busy, so an idle daemon does not wake up every tick, and it never touches the trio
    loop (ticking from trio cost the loop a timer wake-up every tick while calls ran).
    The thread holds no reference to the ticker: dropping the ticker stops it.
    """

    def __init__(self, tick: Callable[[], None], interval_s: float) -> None:
        self._state = _State(tick, interval_s)
        self._thread: threading.Thread | None = None
        weakref.finalize(self, self._state.stop)

    @property
    def ticks(self) -> int:
        """Ticks made so far (none while nothing was busy)."""
        return self._state.ticks

    def enter(self) -> None:
        """Something started that needs ticks (calls may overlap, in any thread)."""
        state = self._state
        with state.cond:
            state.busy += 1
            if self._thread is None:
                self._thread = threading.Thread(target=state.run, name="kami-epoch", daemon=True)
                self._thread.start()
            if state.busy == 1:
                state.cond.notify()

    def leave(self) -> None:
        """What :meth:`enter` started is over."""
        with self._state.cond:
            self._state.busy -= 1

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Ticks while the block runs."""
        self.enter()
        try:
            yield
        finally:
            self.leave()


class _State:
    def __init__(self, tick: Callable[[], None], interval_s: float) -> None:
        # A weak reference: the engine the tick belongs to can go away while we sleep.
        self._tick = weakref.WeakMethod(tick) if hasattr(tick, "__self__") else lambda: tick
        self._interval_s = interval_s
        self.cond = threading.Condition()
        self.busy = 0
        self.stopped = False
        self.ticks = 0

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.busy and not self.stopped:
                    self.cond.wait()
                if self.stopped:
                    return
            time.sleep(self._interval_s)
            tick = self._tick()
            if tick is None:
                return
            tick()
            self.ticks += 1
