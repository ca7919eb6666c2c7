"""A small trio pub/sub for "what agents see changed": installs, uninstalls, profiles.

Every change is a level trigger ("refetch if you care"), so a subscriber that falls behind
does not queue events: its pending changes merge into one, and memory stays bounded no
matter how slowly it reads.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Change", "EventBus", "Subscription"]


@attrs.frozen(kw_only=True)
class Change:
    """What changed. Empty sets and false flags mean "not this"."""

    #: Tools installed, updated or removed (their ids).
    tools: frozenset[str] = frozenset()
    #: The prompts of these tools may have changed.
    prompts: bool = False
    #: Profiles whose tool set changed (their sessions refetch everything).
    profiles: frozenset[str] = frozenset()
    #: Everything changed: a session resumed after a daemon restart.
    everything: bool = False

    def merge(self, other: Change) -> Change:
        return Change(
            tools=self.tools | other.tools,
            prompts=self.prompts or other.prompts,
            profiles=self.profiles | other.profiles,
            everything=self.everything or other.everything,
        )


class Subscription:
    """One subscriber's pending change; :meth:`wait` hands it over and starts afresh."""

    def __init__(self) -> None:
        self._pending: Change | None = None
        self._ready = trio.Event()

    def _deliver(self, change: Change) -> None:
        self._pending = change if self._pending is None else self._pending.merge(change)
        self._ready.set()

    async def wait(self) -> Change:
        """The changes since the last call, merged; waits for one if there is none.

        Cancellation leaves pending changes for the next call.
        """
        await self._ready.wait()
        change, self._pending = self._pending, None
        self._ready = trio.Event()
        assert change is not None
        return change


class EventBus:
    """Fans changes out to subscribers. Publishing never blocks and never fails."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, change: Change) -> None:
        for subscriber in self._subscribers:
            subscriber._deliver(change)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the life of the block."""
        subscription = Subscription()
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def statistics(self) -> int:
        """How many subscribers there are."""
        return len(self._subscribers)
