"""The one cattrs converter for wire messages (the envelopes are in ``_envelope``)."""

from __future__ import annotations

from typing import Any, TypeVar

import cattrs

from ._errors import InvalidParams

__all__ = ["converter", "structure_params"]

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
