"""The error family shared by the daemon and its clients.

One root, :class:`KamiError`, carries a JSON-RPC ``code``. The daemon raises a subclass,
:func:`error_to_wire` turns it into a JSON-RPC error object, and :func:`error_from_wire`
turns it back into the same subclass on the client, so both sides speak one vocabulary.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "Busy",
    "Cancelled",
    "DaemonUnreachable",
    "IntegrityError",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "InvalidTool",
    "KamiError",
    "LimitExceeded",
    "MethodNotFound",
    "NotFound",
    "ParseError",
    "PolicyDenied",
    "RequestTimeout",
    "ShuttingDown",
    "ToolFailed",
    "error_from_wire",
    "error_to_wire",
]


class KamiError(Exception):
    """Root of every error KAMI reports; ``code`` is its JSON-RPC error code.

    Args:
        message: what was wrong and what to do about it, for a human.
        data: structured details (limit names, paths, validation errors), JSON-serializable.
    """

    code: ClassVar[int] = -32000
    kind: ClassVar[str] = "error"

    def __init__(self, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# JSON-RPC 2.0 reserved codes.
class ParseError(KamiError):
    code = -32700
    kind = "parse_error"


class InvalidRequest(KamiError):
    code = -32600
    kind = "invalid_request"


class MethodNotFound(KamiError):
    code = -32601
    kind = "method_not_found"


class InvalidParams(KamiError):
    code = -32602
    kind = "invalid_params"


class InternalError(KamiError):
    code = -32603
    kind = "internal_error"


# KAMI's own codes, in the JSON-RPC server-error range.
class NotFound(KamiError):
    """An unknown tool, version, file or record."""

    code = -32001
    kind = "not_found"


class IntegrityError(KamiError):
    """A hash or signature did not match: a blob, an AOT file, a download."""

    code = -32002
    kind = "integrity"


class PolicyDenied(KamiError):
    """The operator's grants or the daemon's policy forbid this."""

    code = -32003
    kind = "policy_denied"


class LimitExceeded(KamiError):
    """A tool hit a limit; ``data`` names it: ``{"limit": "fuel", "value": ...}``."""

    code = -32004
    kind = "limit_exceeded"


class Busy(KamiError):
    code = -32005
    kind = "busy"


class ShuttingDown(KamiError):
    code = -32006
    kind = "shutting_down"


class ToolFailed(KamiError):
    """The tool ran and returned an error, trapped, or produced output that is not JSON."""

    code = -32007
    kind = "tool_failed"


class InvalidTool(KamiError):
    """A tool that cannot be installed: bad manifest, not a component, wrong world."""

    code = -32008
    kind = "invalid_tool"


class RequestTimeout(KamiError):
    code = -32009
    kind = "timeout"


class Cancelled(KamiError):
    """The call was stopped because its caller gave up on it: MCP
    ``notifications/cancelled``, a request abandoned by its client, or a stop whose grace
    period ran out. Its answer is normally never sent; the audit log records it."""

    code = -32011
    kind = "cancelled"


class DaemonUnreachable(KamiError):
    """Raised on the client only: no daemon answers on the socket."""

    code = -32010
    kind = "unreachable"


_BY_CODE: dict[int, type[KamiError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        NotFound,
        IntegrityError,
        PolicyDenied,
        LimitExceeded,
        Busy,
        ShuttingDown,
        ToolFailed,
        InvalidTool,
        RequestTimeout,
        Cancelled,
        DaemonUnreachable,
    )
}


def error_to_wire(exc: KamiError) -> dict[str, Any]:
    """The JSON-RPC ``error`` member for ``exc``."""
    wire: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data:
        wire["data"] = exc.data
    return wire


def error_from_wire(error: Any) -> KamiError:
    """Rebuilds the daemon's exception from a JSON-RPC ``error`` member.

    Unknown codes become a plain :class:`KamiError` that keeps the code, so a newer daemon's
    errors still surface with their message.
    """
    if not isinstance(error, dict):
        return InternalError(f"the daemon sent a malformed error object: {error!r}")
    code = error.get("code")
    message = str(error.get("message", "unknown error"))
    data = error.get("data")
    data = data if isinstance(data, dict) else None
    cls = _BY_CODE.get(code) if isinstance(code, int) else None
    if cls is None:
        exc = KamiError(message, data=data)
        if isinstance(code, int):
            exc.code = code  # type: ignore[misc]
        return exc
    return cls(message, data=data)
