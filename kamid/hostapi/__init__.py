"""The host side of the ``kami:tool`` imports (log, http, kv, invoke), without wasmtime."""

from ._context import (
    DEFAULT_MAX_LINE_CHARS,
    DEFAULT_MAX_LOG_LINES,
    HostContext,
    HostError,
    HttpRequest,
    HttpResponse,
)
from ._http import NetSession, Network, Redactor, system_resolver

__all__ = [
    "DEFAULT_MAX_LINE_CHARS",
    "DEFAULT_MAX_LOG_LINES",
    "HostContext",
    "HostError",
    "HttpRequest",
    "HttpResponse",
    "NetSession",
    "Network",
    "Redactor",
    "system_resolver",
]
