"""The JSON-RPC 2.0 envelopes: plain dicts, ready for :func:`encode_frame`.

Kept out of ``_convert`` so that a client can build a request without importing cattrs.
"""

from __future__ import annotations

from typing import Any

from ._errors import KamiError, error_to_wire

__all__ = ["make_error", "make_notification", "make_request", "make_result"]


def make_request(request_id: int | str, method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def make_notification(method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def make_result(request_id: int | str | None, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def make_error(request_id: int | str | None, exc: KamiError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error_to_wire(exc)}
