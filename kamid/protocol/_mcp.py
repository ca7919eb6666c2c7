"""MCP facts shared by the ``kamictl mcp`` shim and the daemon's MCP sessions.

Pure data and functions: the protocol revisions KAMI speaks in each era, what it declares
as capabilities, the answers to ``initialize`` and ``server/discover`` (which the shim gives
by itself, before the daemon is even up), the per-request ``_meta`` envelope check of the
2026-07-28 era, and the ``mcp.attach`` handshake that turns a daemon connection into an
MCP session.

Two eras: the *legacy* one negotiates a revision once with ``initialize``; the *modern*
one (2026-07-28) has no handshake and every request carries its revision and client
capabilities in ``params._meta``. The first request of a session decides its era.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from kamid import __version__

__all__ = [
    "CLIENT_CAPABILITIES_KEY",
    "CLIENT_INFO_KEY",
    "KNOWN_VERSIONS",
    "LATEST_LEGACY",
    "LEGACY_VERSIONS",
    "LOG_LEVELS",
    "LOG_LEVEL_KEY",
    "MODERN_VERSIONS",
    "PROTOCOL_VERSION_KEY",
    "SERVER_INFO_KEY",
    "UNSUPPORTED_VERSION",
    "AttachMcpParams",
    "AttachMcpResult",
    "Envelope",
    "ListenSpec",
    "check_envelope",
    "discover_result",
    "has_modern_envelope",
    "initialize_result",
    "instructions",
    "negotiate_legacy",
    "rpc_error",
    "server_capabilities",
    "server_info",
    "version_at_least",
]

#: Revisions negotiated with ``initialize``, oldest first.
LEGACY_VERSIONS: tuple[str, ...] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
#: Revisions of the handshake-free era, where each request carries its envelope.
MODERN_VERSIONS: tuple[str, ...] = ("2026-07-28",)
KNOWN_VERSIONS: tuple[str, ...] = (*LEGACY_VERSIONS, *MODERN_VERSIONS)
LATEST_LEGACY = LEGACY_VERSIONS[-1]

PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"

#: JSON-RPC error code of a request whose protocol revision the server does not speak.
UNSUPPORTED_VERSION = -32022

#: MCP log levels (RFC 5424), least severe first.
LOG_LEVELS: tuple[str, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)

#: How long a client may cache the ``server/discover`` answer: it only changes with kamid.
DISCOVER_TTL_MS = 3_600_000

Era = Literal["legacy", "modern"]


def version_at_least(version: str, minimum: str) -> bool:
    """Whether ``version`` is a known revision no older than ``minimum``."""
    if version not in KNOWN_VERSIONS:
        return False
    return KNOWN_VERSIONS.index(version) >= KNOWN_VERSIONS.index(minimum)


def negotiate_legacy(requested: object) -> str:
    """The revision to answer ``initialize`` with: the client's if KAMI speaks it, else the
    newest legacy one (the client then decides whether it can go on)."""
    return (
        requested if isinstance(requested, str) and requested in LEGACY_VERSIONS else LATEST_LEGACY
    )


def server_info() -> dict[str, Any]:
    return {"name": "kami", "title": "KAMI", "version": __version__}


def server_capabilities() -> dict[str, Any]:
    """What KAMI implements, in both eras; nothing it does not (no completions)."""
    return {
        "tools": {"listChanged": True},
        "resources": {"listChanged": True, "subscribe": True},
        "prompts": {"listChanged": True},
        "logging": {},
    }


def instructions(profile: str | None = None, tools: list[str] | None = None) -> str:
    scope = "every tool installed in this kamid"
    if profile:
        scope = f'the tools of the KAMI profile "{profile}"'
    elif tools:
        scope = "the tools " + ", ".join(tools)
    return (
        f"KAMI serves {scope}. Each call runs in a fresh WebAssembly sandbox with only the "
        "network, files and limits its operator granted; a tool error or a limit hit comes "
        "back as an error result whose text says what went wrong. Each tool's README and "
        "manifest are resources (kami://tools/<id>/readme, kami://tools/<id>/manifest)."
    )


def initialize_result(
    version: str, *, profile: str | None, tools: list[str] | None
) -> dict[str, Any]:
    """The ``initialize`` result for a negotiated legacy ``version``."""
    info = server_info()
    if not version_at_least(version, "2025-06-18"):
        info.pop("title")
    return {
        "protocolVersion": version,
        "capabilities": server_capabilities(),
        "serverInfo": info,
        "instructions": instructions(profile, tools),
    }


def discover_result(*, profile: str | None, tools: list[str] | None) -> dict[str, Any]:
    """The ``server/discover`` result (2026-07-28)."""
    return {
        "supportedVersions": list(MODERN_VERSIONS),
        "capabilities": server_capabilities(),
        "instructions": instructions(profile, tools),
        "resultType": "complete",
        "ttlMs": DISCOVER_TTL_MS,
        "cacheScope": "private",
        "_meta": {SERVER_INFO_KEY: server_info()},
    }


def rpc_error(code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC ``error`` member."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return error


def has_modern_envelope(params: object) -> bool:
    """Whether a request claims the 2026-07-28 era: its ``_meta`` names a protocol version.

    Legacy requests carry ``_meta`` too (``progressToken``), so only this reserved key is
    evidence.
    """
    if not isinstance(params, dict):
        return False
    meta = params.get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta


@attrs.frozen(kw_only=True)
class Envelope:
    """The per-request fields of a 2026-07-28 request, checked."""

    version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any] | None = None
    #: The level the client opted in to for this request's log notifications (None: none).
    log_level: str | None = None


def check_envelope(params: object) -> Envelope | dict[str, Any]:
    """Checks a modern request's ``params._meta``.

    Returns:
        The envelope, or the JSON-RPC error to answer with: -32602 when the envelope is
        missing or malformed, -32022 (with the supported revisions) when its revision is
        not one KAMI speaks.
    """
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return rpc_error(
            -32602,
            "params._meta must be an object carrying the required "
            f"{PROTOCOL_VERSION_KEY!r} and {CLIENT_CAPABILITIES_KEY!r} keys "
            "(every 2026-07-28 request carries its own protocol version and capabilities)",
        )
    missing = [k for k in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if k not in meta]
    if missing:
        return rpc_error(
            -32602, f"params._meta is missing the required key(s): {', '.join(missing)}"
        )
    version = meta[PROTOCOL_VERSION_KEY]
    if not isinstance(version, str):
        return rpc_error(-32602, f"params._meta[{PROTOCOL_VERSION_KEY!r}] must be a string")
    if version not in MODERN_VERSIONS:
        return rpc_error(
            UNSUPPORTED_VERSION,
            f"Unsupported protocol version {version!r}; this server speaks "
            f"{', '.join(MODERN_VERSIONS)} without a handshake, and "
            f"{', '.join(LEGACY_VERSIONS)} through initialize",
            {"supported": list(MODERN_VERSIONS), "requested": version},
        )
    capabilities = meta[CLIENT_CAPABILITIES_KEY]
    if not isinstance(capabilities, dict):
        return rpc_error(-32602, f"params._meta[{CLIENT_CAPABILITIES_KEY!r}] must be an object")
    level = meta.get(LOG_LEVEL_KEY)
    if level is not None and level not in LOG_LEVELS:
        return rpc_error(
            -32602, f"params._meta[{LOG_LEVEL_KEY!r}] must be one of {', '.join(LOG_LEVELS)}"
        )
    info = meta.get(CLIENT_INFO_KEY)
    return Envelope(
        version=version,
        capabilities=capabilities,
        client_info=info if isinstance(info, dict) else None,
        log_level=level,
    )


# mcp.attach: the handshake that turns a daemon connection into one agent's MCP session.
@attrs.frozen(kw_only=True)
class ListenSpec:
    """A ``subscriptions/listen`` stream to carry over into a re-attached session."""

    #: The JSON-RPC id of the listen request (the stream's subscription id): a string or
    #: an integer.
    id: Any = attrs.field(validator=attrs.validators.instance_of((int, str)))
    #: Its ``params.notifications`` filter.
    notifications: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class AttachMcpParams:
    """``mcp.attach``: after its answer, the connection carries raw MCP JSON-RPC lines."""

    era: Era
    #: Legacy era: the revision the shim negotiated with ``initialize``.
    protocol_version: str | None = None
    #: Legacy era: the client's ``initialize`` params (``clientInfo``, ``capabilities``).
    client_info: dict[str, Any] | None = None
    client_capabilities: dict[str, Any] | None = None
    #: Legacy era: ``notifications/initialized`` arrived (change notifications may flow).
    initialized: bool = False
    #: Legacy era: the level from ``logging/setLevel`` (None: no log notifications).
    log_level: str | None = None
    #: Legacy era: URIs from ``resources/subscribe``.
    resource_subscriptions: list[str] = attrs.Factory(list)
    #: Modern era: listen streams to resume without acknowledging them again.
    listens: list[ListenSpec] = attrs.Factory(list)
    #: Show only this profile's tools.
    profile: str | None = None
    #: Show only these tools (ids or unique names); not together with ``profile``.
    tools: list[str] | None = None
    #: A re-attach after the daemon restarted: the session tells the client to refetch.
    resumed: bool = False
    #: Who is on the other end, for the daemon's log.
    client_name: str | None = None
    #: Tool calls this session may run at once (1-64).
    max_in_flight: int = 16
    #: A tools/call result larger than this (serialized) is cut, with a note (>= 1024).
    max_result_bytes: int = 1024 * 1024
    #: Entries per page of tools/list, resources/list and prompts/list (1-1000).
    page_size: int = 100


@attrs.frozen(kw_only=True)
class AttachMcpResult:
    session: str
    #: Tool ids this session sees now (a profile's set can change later).
    tools: list[str]
    profile: str | None = None
    #: The daemon's frame limit: no MCP message may be longer.
    max_frame_bytes: int = 0
