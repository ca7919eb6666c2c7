"""What confines one tool call: its limits, how a breach is reported, its captured stdio.

The engine enforces every limit here (fuel, epoch deadline, store memory limit, output
caps, host-call budget); this module decides their values and words their errors. The
daemon's defaults come from ``[limits]`` in ``kamid.toml``; a manifest and a single call
can only lower them.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import InvalidParams, LimitExceeded

if TYPE_CHECKING:
    from kamid.hostapi import HostContext
    from kamid.protocol import SecurityRequests

__all__ = [
    "CEILINGS",
    "DEFAULTS",
    "DENY_ALL",
    "FIXED_LIMITS",
    "LIMIT_NAMES",
    "GuestOutput",
    "Limits",
    "MiB",
    "Preopen",
    "SandboxSpec",
    "check_ceilings",
    "epoch_ticks",
    "exceeded",
    "limits_for",
    "raise_limits",
    "with_timeout",
]

MiB = 1024 * 1024


def _positive(_inst: object, attr: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{attr.name} must be a positive integer (got {value!r})")


def _field(default: int) -> Any:
    return attrs.field(default=default, validator=_positive)


@attrs.frozen(kw_only=True)
class Limits:
    """Every limit one call runs under.

    The fuel default comes from measuring real tools (wasmtime 50, 2 cores): a
    componentize-py echo call burns ~123,000 units (6,000 to instantiate, 117,000 to
    run), one that parses and dumps JSON ~220,000, the componentize-js hello example
    ~1.2 million; CPython-in-wasm burns about 7 million units per millisecond of CPU
    (the sum of 1,000,000 squares: 2.3e9 units in 334 ms). 10e9 is therefore ~1.4 s of
    interpreted Python: 8,000x the JS call, 20x a call doing 70 ms of real work, and a
    runaway loop still stops within seconds. (An empty wasm loop burns no fuel at all:
    the deadline is what stops that one.)
    """

    #: CPU budget in wasmtime fuel units (about one per wasm instruction).
    fuel: int = _field(10_000_000_000)
    #: Wall-clock deadline, enforced through epoch interruption.
    timeout_ms: int = _field(10_000)
    #: Largest size any one linear memory may grow to (componentize-py starts at ~12.4 MiB).
    memory_bytes: int = _field(256 * MiB)
    #: UTF-8 bytes of JSON input; checked before anything runs.
    max_input_bytes: int = _field(4 * MiB)
    #: UTF-8 bytes of JSON output the tool may return.
    max_output_bytes: int = _field(4 * MiB)
    #: Captured guest stdout + stderr; the rest is dropped and counted.
    max_guest_output_bytes: int = _field(64 * 1024)
    #: Calls into kami:tool interfaces (log included) per call.
    max_host_calls: int = _field(10_000)
    #: Table elements per store (componentize-py needs 5,678).
    table_elements: int = _field(100_000)
    #: Core instances per store (componentize-py needs 12).
    instances: int = _field(100)
    #: Bytes a tool's persistent sandbox directory (/data) may hold; checked before and
    #: after each call (see docs/security.md for the granularity).
    sandbox_bytes: int = _field(64 * MiB)


#: The built-in defaults, used when ``kamid.toml`` has no ``[limits]``.
DEFAULTS = Limits()
#: Every limit name (the keys of ``[limits]``, ``[ceilings]`` and ``kamictl grant --limit``).
LIMIT_NAMES: tuple[str, ...] = tuple(a.name for a in attrs.fields(Limits))
#: The built-in ceilings (``[ceilings]`` in ``kamid.toml``): no manifest, approval or
#: operator grant takes a tool above these.
CEILINGS = Limits(
    fuel=200_000_000_000,
    timeout_ms=600_000,
    memory_bytes=4096 * MiB,
    max_input_bytes=16 * MiB,
    max_output_bytes=16 * MiB,
    max_guest_output_bytes=16 * MiB,
    max_host_calls=1_000_000,
    table_elements=10_000_000,
    instances=1_000,
    sandbox_bytes=16 * 1024 * MiB,
)


def check_ceilings(defaults: Limits, ceilings: Limits) -> list[str]:
    """Problems with a config whose defaults exceed its ceilings (empty when consistent)."""
    return [
        f"[limits].{name} = {getattr(defaults, name)} is above [ceilings].{name} = "
        f"{getattr(ceilings, name)}; lower the default or raise the ceiling"
        for name in LIMIT_NAMES
        if getattr(defaults, name) > getattr(ceilings, name)
    ]


def raise_limits(defaults: Limits, granted: dict[str, int], ceilings: Limits) -> Limits:
    """``defaults`` with the operator's per-tool limits (``Grants.limits``) applied.

    A granted value replaces the default (up or down) but never passes the ceiling, and
    unknown names are ignored (a grant stored by a newer kamid).
    """
    changes = {
        name: min(int(value), getattr(ceilings, name))
        for name, value in granted.items()
        if name in LIMIT_NAMES and isinstance(value, int) and value > 0
    }
    return attrs.evolve(defaults, **changes) if changes else defaults


@attrs.frozen(kw_only=True)
class Preopen:
    """A host directory a call sees at ``guest`` (read-only unless ``writable``)."""

    host: str
    guest: str
    writable: bool = False


@attrs.frozen(kw_only=True)
class SandboxSpec:
    """The WASI context of one call: directories and environment. Default: nothing at all."""

    preopens: tuple[Preopen, ...] = ()
    #: (name, value) pairs, exactly what the guest's environment holds.
    env: tuple[tuple[str, str], ...] = ()


#: No files, no environment: what a call gets without grants.
DENY_ALL = SandboxSpec()

#: Not configurable: the memory limit applies to each memory and the element limit to each
#: table, so their counts must stay small (componentize-py/-js use 1 and 2).
FIXED_LIMITS: dict[str, int] = {"memories": 4, "tables": 8}


def limits_for(requests: SecurityRequests, defaults: Limits) -> Limits:
    """The limits a tool runs under: ``defaults``, lowered by what its manifest asks.

    A manifest asking for more than the daemon allows gets the daemon's value: a tool
    can never raise its own limits.
    """
    changes: dict[str, int] = {}
    if requests.max_memory_mb is not None:
        changes["memory_bytes"] = min(defaults.memory_bytes, requests.max_memory_mb * MiB)
    if requests.max_fuel is not None:
        changes["fuel"] = min(defaults.fuel, requests.max_fuel)
    if requests.timeout_ms is not None:
        changes["timeout_ms"] = min(defaults.timeout_ms, requests.timeout_ms)
    return attrs.evolve(defaults, **changes) if changes else defaults


def with_timeout(limits: Limits, timeout_ms: int | None) -> Limits:
    """``limits`` with a per-call deadline, which can only lower the tool's own.

    Raises:
        InvalidParams: ``timeout_ms`` is not a positive integer.
    """
    if timeout_ms is None:
        return limits
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise InvalidParams(
            f"timeout_ms must be a positive number of milliseconds (got {timeout_ms!r})"
        )
    return attrs.evolve(limits, timeout_ms=min(limits.timeout_ms, timeout_ms))


def epoch_ticks(timeout_ms: int, tick_ms: int) -> int:
    """Epoch ticks to allow for ``timeout_ms``: one more than needed, never fewer.

    The first tick may come at once (the ticker does not start when the call does), so
    the extra one keeps the deadline from firing early; it can fire up to a tick late.
    """
    return math.ceil(timeout_ms / tick_ms) + 1


_ADVICE = {
    "fuel": (
        "used all {value} units of fuel (its CPU budget) before finishing; if it "
        "legitimately needs more, raise max_fuel in its tool.toml (up to [limits].fuel "
        "in kamid.toml)"
    ),
    "timeout_ms": (
        "did not finish within its {value} ms deadline; if it legitimately needs longer, "
        "raise timeout_ms in its tool.toml (up to [limits].timeout_ms in kamid.toml)"
    ),
    "memory_bytes": (
        "ran out of memory: it needs more than its {mib} MiB limit; raise max_memory_mb in "
        "its tool.toml (up to [limits].memory_bytes in kamid.toml)"
    ),
    "input_bytes": (
        "input is larger than the {value}-byte limit; pass large data in a file the tool "
        "is granted, or raise [limits].max_input_bytes in kamid.toml"
    ),
    "output_bytes": (
        "returned more than the {value}-byte output limit; make the tool return less, or "
        "raise [limits].max_output_bytes in kamid.toml"
    ),
    "host_calls": (
        "made more than {value} host calls (log, http, kv, invoke) in one call; make it "
        "call the host less often, or raise [limits].max_host_calls in kamid.toml"
    ),
    "instances": ("needs more than {value} wasm instances; raise [limits].instances in kamid.toml"),
    "table_elements": (
        "needs a table of more than {value} elements; raise [limits].table_elements in kamid.toml"
    ),
    "memories": "declares more than {value} linear memories, which KAMI does not allow",
    "sandbox_bytes": (
        "filled its sandbox directory past its {value}-byte quota; its /data is read-only "
        "until the operator frees space (or runs `kamictl uninstall --purge`) or raises the "
        "quota with `kamictl grant TOOL --limit sandbox_bytes=N`"
    ),
    "tables": "declares more than {value} tables, which KAMI does not allow",
}


def exceeded(
    tool: str, limit: str, value: int, *, detail: str = "", data: dict[str, Any] | None = None
) -> LimitExceeded:
    """The error for ``tool`` hitting ``limit`` (a key of ``data.limit``) set at ``value``.

    Args:
        tool: the tool id, named first in the message.
        limit: ``fuel``, ``timeout_ms``, ``memory_bytes``, ``input_bytes``,
            ``output_bytes``, ``host_calls``, ``instances``, ``table_elements``,
            ``memories`` or ``tables``.
        value: the limit that was in force.
        detail: evidence to append, e.g. what the guest printed before it failed.
        data: more structured details (``usage``); ``limit`` and ``value`` are added.
    """
    message = f"{tool} " + _ADVICE[limit].format(value=value, mib=f"{value / MiB:g}")
    if detail:
        message += f" ({detail})"
    return LimitExceeded(message, data={"limit": limit, "value": value, **(data or {})})


class GuestOutput:
    """Captures a guest's stdout and stderr as log lines, up to a byte budget.

    wasmtime calls :meth:`write` from its I/O threads, possibly after the call has
    finished; it must never raise, and bytes past the budget are dropped and counted
    rather than refused, so a chatty tool keeps running. Complete lines go to
    ``host.output`` as they arrive, which keeps them in order with ``host.log`` lines.

    Args:
        host: receives each line as ``host.output("stdout" | "stderr", text)``.
        budget: bytes accepted across both streams.
    """

    def __init__(self, host: HostContext, budget: int) -> None:
        self._host = host
        self._left = budget
        self._budget = budget
        self._dropped = 0
        self._pending: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._closed = False
        self._lock = threading.Lock()

    def stdout(self, data: bytes) -> None:
        self.write("stdout", data)

    def stderr(self, data: bytes) -> None:
        self.write("stderr", data)

    def write(self, stream: str, data: bytes) -> None:
        """Accepts ``data`` for ``stream``; returns nothing so wasmtime sees it all written."""
        with self._lock:
            if self._closed:
                return
            keep = data[: max(self._left, 0)]
            self._dropped += len(data) - len(keep)
            self._left -= len(keep)
            buf = self._pending[stream]
            buf += keep
            *lines, rest = buf.split(b"\n")
            self._pending[stream] = bytearray(rest)
        for line in lines:
            self._host.output(stream, line.rstrip(b"\r").decode("utf-8", "replace"))

    def close(self) -> None:
        """Emits unterminated last lines and the dropped-bytes count; ignores later writes."""
        with self._lock:
            self._closed = True
            pending = [(s, bytes(b)) for s, b in self._pending.items() if b]
        for stream, line in pending:
            self._host.output(stream, line.decode("utf-8", "replace"))
        if self._dropped:
            self._host.log(
                "warn",
                f"[kami] {self._dropped} bytes of guest stdout/stderr dropped "
                f"(limit {self._budget} bytes per call)",
            )
