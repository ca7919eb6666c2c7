"""The method table: the one list of wire methods the daemon, client and docs all read."""

from __future__ import annotations

from typing import Any

import attrs

from . import _messages as m

__all__ = ["METHODS", "NOTIFICATIONS", "MethodSpec"]


@attrs.frozen
class MethodSpec:
    name: str
    params: type[Any]
    result: type[Any]
    summary: str
    #: Seconds the daemon gives a request of this method before answering with a timeout.
    timeout_s: float = 30.0


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in [
        MethodSpec(
            "daemon.status",
            m.DaemonStatusParams,
            m.DaemonStatusResult,
            "Version, pid, socket, uptime, tool count, call and cache counters.",
        ),
        MethodSpec(
            "daemon.stop",
            m.DaemonStopParams,
            m.DaemonStopResult,
            "Stop accepting, let in-flight calls finish under a grace deadline, exit.",
        ),
        MethodSpec(
            "tools.install",
            m.InstallToolParams,
            m.InstallToolResult,
            "Validate, store and precompile a tool from a directory with tool.toml.",
            timeout_s=600.0,
        ),
        MethodSpec("tools.list", m.ListToolsParams, m.ListToolsResult, "Installed tools."),
        MethodSpec(
            "tools.inspect",
            m.InspectToolParams,
            m.InspectToolResult,
            "Manifest, sha256, size, requested capabilities, grants, imports, cache state.",
        ),
        MethodSpec(
            "tools.uninstall",
            m.UninstallToolParams,
            m.UninstallToolResult,
            "Remove a tool and its grants; its blob goes when nothing else uses it.",
        ),
        MethodSpec(
            "tools.exec",
            m.ExecToolParams,
            m.ExecToolResult,
            "Run an installed tool on one JSON input, under its grants and limits.",
            timeout_s=600.0,
        ),
        MethodSpec(
            "wasm.run",
            m.RunWasmParams,
            m.ExecToolResult,
            "Run a component file once with deny-all grants, without installing it.",
            timeout_s=600.0,
        ),
    ]
}

#: Notifications the daemon may send on a connection (no ``id``, no answer).
NOTIFICATIONS: dict[str, type[Any]] = {"progress": m.ProgressParams}
