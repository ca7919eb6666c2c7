"""Routes a wire method to its handler: params in through the converter, result out."""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kamid.protocol import METHODS, MethodNotFound, converter, structure_params

if TYPE_CHECKING:
    from kamid.server import RequestContext

__all__ = ["Dispatcher", "Handler"]

Handler = Callable[[Any, "RequestContext"], Awaitable[Any]]


class Dispatcher:
    """Looks a method up in :data:`METHODS` and calls the handler registered for it.

    Args:
        handlers: one coroutine function per method name, taking the structured params and
            the request context and returning the method's result type.
    """

    def __init__(self, handlers: dict[str, Handler]) -> None:
        missing = set(METHODS) - set(handlers)
        if missing:
            raise ValueError(f"no handler for {sorted(missing)}")
        self._handlers = handlers

    async def handle(self, method: str, params: Any, ctx: RequestContext) -> Any:
        """Runs ``method``.

        Raises:
            MethodNotFound: unknown method; the message suggests the closest one.
            InvalidParams: params do not fit the method.
            KamiError: whatever the handler raises.
        """
        spec = METHODS.get(method)
        handler = self._handlers.get(method)
        if spec is None or handler is None:
            close = difflib.get_close_matches(method, list(self._handlers), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise MethodNotFound(
                f'unknown method "{method}"{hint} Known methods: {", ".join(sorted(METHODS))}'
            )
        structured = structure_params(params, spec.params, method=method)
        result = await handler(structured, ctx)
        return converter.unstructure(result)
