"""Params and results of every wire method, as attrs classes.

Names follow ``<Verb><Noun>Params`` / ``<Verb><Noun>Result``. JSON values the daemon only
passes through (tool input and output, manifests) are typed ``Any``.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = [
    "CacheStatistics",
    "DaemonStatusParams",
    "DaemonStatusResult",
    "DaemonStopParams",
    "DaemonStopResult",
    "ExecToolParams",
    "ExecToolResult",
    "InspectToolParams",
    "InspectToolResult",
    "InstallToolParams",
    "InstallToolResult",
    "ListToolsParams",
    "ListToolsResult",
    "LogLine",
    "ProgressParams",
    "RunWasmParams",
    "ToolSummary",
    "UninstallToolParams",
    "UninstallToolResult",
    "Usage",
]

CacheState = Literal["memory", "disk", "none"]


# daemon.*
@attrs.frozen(kw_only=True)
class DaemonStatusParams:
    pass


@attrs.frozen(kw_only=True)
class CacheStatistics:
    #: Components served from the in-memory LRU.
    memory_hits: int = 0
    #: Components deserialized from the AOT disk cache.
    disk_hits: int = 0
    #: Components compiled from wasm (cache misses).
    compiles: int = 0
    evictions: int = 0
    #: AOT files refused because their hash did not match what was recorded.
    rejected: int = 0
    entries: int = 0
    capacity: int = 0
    compile_ms_total: float = 0.0


@attrs.frozen(kw_only=True)
class DaemonStatusResult:
    version: str
    wasmtime_version: str
    pid: int
    home: str
    socket: str
    started_at: float
    uptime_s: float
    tools: int
    calls_served: int
    calls_failed: int
    calls_in_flight: int
    connections: int
    cache: CacheStatistics


@attrs.frozen(kw_only=True)
class DaemonStopParams:
    #: Seconds in-flight calls get to finish; the daemon's default when absent.
    grace_s: float | None = None


@attrs.frozen(kw_only=True)
class DaemonStopResult:
    stopping: bool = True
    in_flight: int = 0


# tools.*
@attrs.frozen(kw_only=True)
class ProgressParams:
    """The ``progress`` notification a long request sends when given a progress token."""

    token: str
    stage: str
    message: str


@attrs.frozen(kw_only=True)
class ToolSummary:
    id: str
    name: str
    version: str
    description: str
    sha256: str
    size: int
    installed_at: float
    #: Capabilities the manifest asked for, one human-readable line each.
    requested: list[str] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class InstallToolParams:
    #: A directory with a ``tool.toml`` (absolute, on the daemon's host).
    path: str
    #: The operator approves the capabilities the manifest requests (``--yes``).
    approve: bool = False
    #: Send ``progress`` notifications tagged with this token while installing.
    progress_token: str | None = None


@attrs.frozen(kw_only=True)
class InstallToolResult:
    tool: ToolSummary
    #: False when this exact version and component were already installed.
    changed: bool
    #: The version it replaced, if any.
    replaced: str | None = None
    compile_ms: float = 0.0
    cache: CacheState = "none"


@attrs.frozen(kw_only=True)
class ListToolsParams:
    pass


@attrs.frozen(kw_only=True)
class ListToolsResult:
    tools: list[ToolSummary]


@attrs.frozen(kw_only=True)
class InspectToolParams:
    tool: str


@attrs.frozen(kw_only=True)
class InspectToolResult:
    tool: ToolSummary
    manifest: dict[str, Any]
    input_schema: dict[str, Any]
    grants: dict[str, Any]
    imports: list[str]
    cache: CacheState
    blob_path: str


@attrs.frozen(kw_only=True)
class UninstallToolParams:
    tool: str


@attrs.frozen(kw_only=True)
class UninstallToolResult:
    id: str
    version: str


@attrs.frozen(kw_only=True)
class Usage:
    wall_ms: float
    fuel_consumed: int
    #: Linear memory the component declares at instantiation (the sum of its core modules'
    #: memory minimums). Exact for calls that do not grow memory, otherwise a lower bound:
    #: wasmtime-py exposes no component memory size. The memory *limit* is always enforced.
    peak_memory_bytes: int
    host_calls: int = 0


@attrs.frozen(kw_only=True)
class LogLine:
    level: str
    message: str


@attrs.frozen(kw_only=True)
class ExecToolParams:
    #: Tool id (``dev.kami.echo``) or its unique short name (``echo``).
    tool: str
    #: Any JSON value; handed to the tool as JSON text.
    input: Any
    #: Lower the wall-clock deadline for this call; never raises it.
    timeout_ms: int | None = None


@attrs.frozen(kw_only=True)
class ExecToolResult:
    #: The tool's output, parsed from the JSON text it returned.
    output: Any
    usage: Usage
    #: Log lines and captured stdout/stderr of this call (capped).
    logs: list[LogLine] = attrs.Factory(list)
    tool: str = ""
    version: str = ""


@attrs.frozen(kw_only=True)
class RunWasmParams:
    #: A component file (absolute, on the daemon's host); runs with deny-all grants.
    path: str
    input: Any
    timeout_ms: int | None = None
