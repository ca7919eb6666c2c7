"""The one cattrs converter for wire messages, and the JSON-RPC envelope helpers."""

from __future__ import annotations

from typing import Any, TypeVar

import cattrs

from ._errors import InvalidParams, KamiError, error_to_wire

__all__ = [
    "converter",
    "make_error",
    "make_notification",
    "make_request",
    "make_result",
    "structure_params",
]

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=True, omit_if_default=False)


def structure_params(params: Any, cls: type[T], *, method: str) -> T:
    """Builds ``cls`` from JSON params.

    Raises:
        InvalidParams: naming each bad field, with cattrs' paths in ``data.errors``.
    """
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParams(f"{method}: params must be a JSON object (got {type(params).__name__})")
    try:
        return converter.structure(params, cls)
    except cattrs.BaseValidationError as exc:
        errors = cattrs.transform_error(exc, path=method)
        raise InvalidParams(
            f"{method}: invalid params: " + "; ".join(errors), data={"errors": errors}
        ) from exc


def make_request(request_id: int | str, method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def make_notification(method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def make_result(request_id: int | str | None, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def make_error(request_id: int | str | None, exc: KamiError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error_to_wire(exc)}
