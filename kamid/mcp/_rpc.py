"""JSON-RPC pieces an MCP session builds its answers from."""

from __future__ import annotations

from typing import Any

import attrs

from kamid.protocol import mcp as wire

__all__ = ["Call", "RpcError", "error", "notification", "response"]


class RpcError(Exception):
    """Answer the request with this JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@attrs.frozen(kw_only=True)
class Call:
    """What one request asked for beyond its params: revision, logging, progress."""

    version: str
    modern: bool
    log_level: str | None = None
    progress_token: int | str | None = None
    #: The client's name from this request's envelope (2026-07-28), for the audit log.
    client: str | None = None


def response(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": wire.rpc_error(code, message, data)}


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message
