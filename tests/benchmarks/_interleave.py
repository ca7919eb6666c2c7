"""Running several samplers in alternating blocks, so that they share the same conditions.

On a shared 2-core machine the background load drifts over seconds. Timing the floor for
a while and then the socket for a while would compare two different machines; alternating
blocks of calls (and rotating who goes first) spreads any drift over every sampler alike,
which is what makes their ratio meaningful.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Sampler", "Samples", "interleave"]


class Sampler(Protocol):
    #: Key of its samples in the result of :func:`interleave`.
    name: str

    def warm_up(self, n: int) -> None:
        """Makes ``n`` untimed calls."""

    def sample(self, n: int) -> list[int]:
        """Makes ``n`` timed calls; returns each one's nanoseconds."""


@dataclass
class Samples:
    #: Sampler name -> nanoseconds of each timed call.
    latency_ns: dict[str, list[int]] = field(default_factory=dict)
    #: Sampler name -> CPU this process used during its timed calls (all threads).
    process_cpu_ns: dict[str, int] = field(default_factory=dict)


def interleave(samplers: Sequence[Sampler], *, warmup: int, calls: int, block: int) -> Samples:
    """``calls`` samples from each sampler, taken in blocks of at most ``block`` calls.

    Every sampler warms up first (``warmup`` calls). Then round after round each takes
    one block; the sampler that starts a round rotates, so none always follows another.
    The CPU time of this process is accounted to the sampler whose block it was.

    Raises:
        ValueError: ``block`` is not positive, or two samplers share a name.
    """
    if block < 1:
        raise ValueError(f"block must be at least 1 (got {block})")
    names = [s.name for s in samplers]
    if len(set(names)) != len(names):
        raise ValueError(f"sampler names must be unique (got {names})")
    for sampler in samplers:
        sampler.warm_up(warmup)
    out = Samples(latency_ns={name: [] for name in names}, process_cpu_ns=dict.fromkeys(names, 0))
    done = 0
    round_ = 0
    while done < calls:
        n = min(block, calls - done)
        for i in range(len(samplers)):
            sampler = samplers[(round_ + i) % len(samplers)]
            cpu = time.process_time_ns()
            out.latency_ns[sampler.name].extend(sampler.sample(n))
            out.process_cpu_ns[sampler.name] += time.process_time_ns() - cpu
        done += n
        round_ += 1
    return out
