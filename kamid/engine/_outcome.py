"""How a finished call is reported: its outcome, or the error that says what happened.

Pure Python: :mod:`._wasm` runs the call and hands over what wasmtime said (the error
text, an exit code) or what ``run`` returned; this module decides which limit, trap or
tool error that was, and words it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import (
    Cancelled,
    InternalError,
    InvalidTool,
    KamiError,
    LogLine,
    ToolFailed,
    Usage,
)
from kamid.sandbox import FIXED_LIMITS, exceeded

if TYPE_CHECKING:
    from kamid.hostapi import HostContext
    from kamid.sandbox import Limits

__all__ = ["CallOutcome", "CallState", "failure", "finish", "utf8_len"]

_RESOURCE_LIMITS = [
    (re.compile(r"memory minimum size of (\d+) pages exceeds memory limits"), "memory_bytes"),
    (re.compile(r"instance count too high"), "instances"),
    (re.compile(r"table minimum size of \d+ elements exceeds table limits"), "table_elements"),
    (re.compile(r"memory count too high"), "memories"),
    (re.compile(r"table count too high"), "tables"),
]
# What guests print, or show in their backtrace, when an allocation failed (CPython's
# MemoryError, Rust's alloc error handler, libc): a refused memory.grow is silent (it
# returns -1), so this evidence is how a trap is recognized as running out of memory.
_OOM_MARKERS = (
    "memoryerror",
    "out of memory",
    "memory allocation of",
    "cannot allocate",
    "handle_alloc_error",
    "rust_oom",
    "__rg_oom",
)


@attrs.frozen(kw_only=True)
class CallOutcome:
    """A call that returned ``ok`` with JSON.

    ``usage.peak_memory_bytes`` is the linear memory the component declares at
    instantiation: the sum of its core modules' memory minimums, exactly what wasmtime
    allocates to start it. wasmtime-py 50 cannot observe a component's memories or their
    growth (components export no core memory, the store limiter has no callback, and a
    custom memory creator aborts the process once copy-on-write memory images are used,
    while turning CoW off makes instantiating a componentize-py tool ~9 ms instead of
    ~1 ms). So growth during the call is not seen: the number is exact for calls that
    never grow memory and a lower bound otherwise. The limit itself is always enforced.
    """

    #: The JSON text the tool returned.
    output: str
    #: ``output`` parsed (the engine validates it, so the caller need not parse it again).
    value: Any
    usage: Usage
    #: host.log lines and captured stdout/stderr, in arrival order, capped.
    logs: list[LogLine]


class CallState:
    """What the host functions of one running call share with the engine."""

    __slots__ = ("budget", "failure", "host", "ticks_left")

    def __init__(self, host: HostContext, budget: int, ticks: int) -> None:
        self.host = host
        #: Host calls allowed.
        self.budget = budget
        #: Epoch ticks before the deadline.
        self.ticks_left = ticks
        #: Why the host stopped the guest: ``"host_calls"``, ``"timeout_ms"``,
        #: ``"cancelled"``, or the exception a host function raised (a daemon bug).
        self.failure: str | BaseException | None = None


def failure(
    text: str,
    *,
    exit_code: int | None,
    linked: bool,
    state: CallState,
    limits: Limits,
    usage: Usage,
) -> KamiError:
    """The error for a call wasmtime stopped.

    Args:
        text: wasmtime's error message, backtrace included.
        exit_code: the status when the guest called WASI ``exit``, else None.
        linked: whether instantiation succeeded (link errors are the component's fault).
        state: the call's host state.
        limits: the limits it ran under.
        usage: what it used, for the error's ``data``.
    """
    data = _data(usage)
    host = state.host
    tool = host.tool_id
    if state.failure == "host_calls":
        return exceeded(tool, "host_calls", limits.max_host_calls, data=data)
    if state.failure == "timeout_ms":
        return exceeded(tool, "timeout_ms", limits.timeout_ms, data=data)
    if state.failure == "cancelled":
        return Cancelled(
            f"{tool} was stopped before it finished: the call was cancelled (by its caller, "
            "or by kamid stopping)",
            data=data,
        )
    if isinstance(state.failure, BaseException):
        return InternalError(
            f"the daemon failed while serving a host call of {tool}: {state.failure!r}; "
            "this is a KAMI bug, please report it",
            data=data,
        )
    cause = text.rsplit("Caused by:", 1)[-1].strip() or text
    if "all fuel consumed" in cause:
        return exceeded(tool, "fuel", limits.fuel, data=data)
    if cause.endswith("wasm trap: interrupt"):
        return exceeded(tool, "timeout_ms", limits.timeout_ms, data=data)
    for pattern, limit in _RESOURCE_LIMITS:
        if match := pattern.search(cause):
            detail = f"it starts with {int(match[1]) / 16:g} MiB" if match.groups() else ""
            value = getattr(limits, limit, FIXED_LIMITS.get(limit, 0))
            return exceeded(tool, limit, value, detail=detail, data=data)
    if not linked and "matching implementation was not found" in cause:
        return InvalidTool(f"{tool} cannot be linked: {cause}", data=data)
    if exit_code is not None:
        message = f"{tool} exited with status {exit_code} instead of returning a result"
        return ToolFailed(message, data=data)
    if evidence := _oom_evidence(text, host.logs):
        detail = f"it reported {evidence!r} and trapped"
        return exceeded(tool, "memory_bytes", limits.memory_bytes, detail=detail, data=data)
    summary = cause.removeprefix("wasm trap: ")
    stderr = [line.message for line in host.logs if line.level == "stderr" and line.message]
    if stderr:
        summary += f" (last stderr line: {stderr[-1][:300]})"
    return ToolFailed(f"{tool} trapped: {summary}", data={**data, "trap": text[:4000]})


def _oom_evidence(text: str, logs: list[LogLine]) -> str | None:
    for line in reversed(logs):
        lowered = line.message.lower()
        if any(marker in lowered for marker in _OOM_MARKERS):
            return line.message[:200]
    lowered = text.lower()
    if any(marker in lowered for marker in _OOM_MARKERS):
        return "an allocation failure in its backtrace"
    return None


def finish(
    tag: str, payload: str, *, usage: Usage, limits: Limits, host: HostContext
) -> CallOutcome:
    """The outcome of ``run`` returning ``tag`` (``ok`` or ``err``) with ``payload``.

    Raises:
        ToolFailed: ``err``, or output that is not JSON.
        LimitExceeded: output over ``max_output_bytes``.
    """
    tool = host.tool_id
    if tag == "err":
        data = _data(usage)
        message = payload or f"{tool} returned an error without a message"
        raise ToolFailed(message, data={**data, "tool_error": payload})
    if utf8_len(payload) > limits.max_output_bytes:
        raise exceeded(tool, "output_bytes", limits.max_output_bytes, data=_data(usage))
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise ToolFailed(
            f"{tool} returned output that is not JSON ({exc}); a tool must return JSON "
            f"text, and it returned {payload[:200]!r}",
            data=_data(usage),
        ) from exc
    return CallOutcome(output=payload, value=value, usage=usage, logs=list(host.logs))


def _data(usage: Usage) -> dict[str, Any]:
    return {"usage": attrs.asdict(usage)}


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8, without encoding it when it is ASCII."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
