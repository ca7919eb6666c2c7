"""Params and results of every wire method, as attrs classes.

Names follow ``<Verb><Noun>Params`` / ``<Verb><Noun>Result``. JSON values the daemon only
passes through (tool input and output, manifests) are typed ``Any``.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

# Imported at run time: cattrs resolves these annotations when it builds the classes.
from ._metrics import ActivityStatistics, Priority, SchedulerStatistics  # noqa: TC001
from ._registry import SignerInfo  # noqa: TC001
from ._security import Capability  # noqa: TC001

__all__ = [
    "CacheStatistics",
    "CallerInfo",
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
    #: Of the calls served or failed, those the fast lane ran: answered by their call
    #: thread, without a trio task (``tools.exec`` and MCP ``tools/call``).
    calls_fast: int = 0
    #: Of those, the calls a call thread read itself, from a connection lent to it
    #: after the call before (``kamid.server.ConnectionLease``).
    calls_leased: int = 0
    scheduler: SchedulerStatistics | None = None
    #: Calls/s and latency percentiles over the last minute, in total and per tool.
    activity: ActivityStatistics | None = None
    #: ``host:port`` of the HTTP metrics endpoint (``kamid --metrics-listen``), if any.
    metrics_address: str | None = None


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
    #: Bytes done and expected, for downloads (``total`` None: unknown).
    done: int | None = None
    total: int | None = None


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
    #: A directory with a ``tool.toml`` (absolute, on the daemon's host). Or give one of
    #: ``package`` and ``ref`` instead (docs/supply-chain.md).
    path: str = ""
    #: A packaged tool (``.kami``): an absolute path, or an https/http/file URL.
    package: str | None = None
    #: A registry reference: ``dev.kami.echo`` or ``dev.kami.echo@^1.2`` (a semver range).
    ref: str | None = None
    #: With ``ref``: look only in this registry.
    registry: str | None = None
    #: With ``package`` or ``ref``: allow installing a lower version than the installed one.
    allow_downgrade: bool = False
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
    #: What the tool may do now: its approved requests, each marked used or unused.
    capabilities: list[Capability] = attrs.Factory(list)
    #: Who signed it (the signature was verified); None when it is unsigned.
    signer: SignerInfo | None = None


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
    #: The limits its calls run under (daemon defaults, operator grants, manifest).
    limits: dict[str, int] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class UninstallToolParams:
    tool: str
    #: Also delete the tool's persistent sandbox directory (its /data).
    purge: bool = False


@attrs.frozen(kw_only=True)
class UninstallToolResult:
    id: str
    version: str
    #: True when its sandbox directory was deleted.
    purged: bool = False


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
class CallerInfo:
    """Who is calling, as the client says (recorded in the audit log, not trusted)."""

    #: The client program, e.g. ``kamictl`` or the MCP client's name.
    client: str | None = None
    #: The MCP profile the call came through.
    profile: str | None = None


@attrs.frozen(kw_only=True)
class ExecToolParams:
    #: Tool id (``dev.kami.echo``) or its unique short name (``echo``).
    tool: str
    #: Any JSON value; handed to the tool as JSON text.
    input: Any
    #: Lower the wall-clock deadline for this call; never raises it.
    timeout_ms: int | None = None
    #: ``interactive`` calls are admitted ahead of ``batch`` ones (pipelines, benchmarks).
    priority: Priority = "interactive"
    #: For the audit log: the client and profile the call came through.
    caller: CallerInfo | None = None


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
