"""The method table: the one list of wire methods the daemon, client and docs all read."""

from __future__ import annotations

from typing import Any

import attrs

from . import _mcp, _metrics
from . import _messages as m
from . import _profiles as prof
from . import _registry as reg
from . import _secrets as secrets
from . import _security as sec

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
        MethodSpec(
            "metrics.get",
            _metrics.GetMetricsParams,
            _metrics.GetMetricsResult,
            "Counters, gauges and histograms in the Prometheus text exposition format.",
        ),
        MethodSpec(
            "tools.grant",
            sec.GrantToolParams,
            sec.GrantToolResult,
            "Operator only: add filesystem, environment, network, kv, invoke or limit grants.",
        ),
        MethodSpec(
            "tools.revoke",
            sec.RevokeToolParams,
            sec.GrantToolResult,
            "Operator only: remove grants (or all of them); calls after it run without them.",
        ),
        MethodSpec(
            "audit.list",
            sec.AuditListParams,
            sec.AuditListResult,
            "Operator only: the audit log of execs, installs, uninstalls, grants and revokes.",
        ),
        MethodSpec(
            "limits.get",
            sec.GetLimitsParams,
            sec.LimitsResult,
            "The daemon's default limits and ceilings.",
        ),
        MethodSpec(
            "limits.set",
            sec.SetLimitsParams,
            sec.LimitsResult,
            "Operator only: change default limits or ceilings in kamid.toml, applied at once.",
        ),
        MethodSpec(
            "mcp.attach",
            _mcp.AttachMcpParams,
            _mcp.AttachMcpResult,
            "Turn this connection into one agent's MCP session (the `kamictl mcp` handshake).",
        ),
        MethodSpec(
            "profiles.create",
            prof.CreateProfileParams,
            prof.Profile,
            "Create (or replace) a named set of tools that an MCP agent may see and call.",
        ),
        MethodSpec(
            "profiles.list",
            prof.ListProfilesParams,
            prof.ListProfilesResult,
            "Every profile with its tools, and which of them are not installed.",
        ),
        MethodSpec(
            "profiles.delete",
            prof.DeleteProfileParams,
            prof.DeleteProfileResult,
            "Delete a profile; agents using it see no tools from then on.",
        ),
        MethodSpec(
            "secrets.set",
            secrets.SetSecretParams,
            secrets.SetSecretResult,
            "Store a secret a tool declares; the only message that ever carries a value.",
        ),
        MethodSpec(
            "secrets.list",
            secrets.ListSecretsParams,
            secrets.ListSecretsResult,
            "Secret names per tool: declared, set, where they go. Never values.",
        ),
        MethodSpec(
            "secrets.delete",
            secrets.DeleteSecretParams,
            secrets.DeleteSecretResult,
            "Delete a stored secret.",
        ),
        MethodSpec(
            "registry.list",
            reg.ListRegistriesParams,
            reg.ListRegistriesResult,
            "The registries tools are installed and updated from (the configured default too).",
        ),
        MethodSpec(
            "registry.add",
            reg.AddRegistryParams,
            reg.AddRegistryResult,
            "Add a registry by the URL of its index; the index is fetched and checked first.",
            timeout_s=120.0,
        ),
        MethodSpec(
            "registry.remove",
            reg.RemoveRegistryParams,
            reg.RemoveRegistryResult,
            "Forget a registry (tools installed from it stay, but no longer update).",
        ),
        MethodSpec(
            "registry.search",
            reg.SearchRegistryParams,
            reg.SearchRegistryResult,
            "Search the registries' indexes by words, category and tag.",
            timeout_s=120.0,
        ),
        MethodSpec(
            "tools.update",
            reg.UpdateToolsParams,
            reg.UpdateToolsResult,
            "Update tools from their registry within their pin; asks again before widening.",
            timeout_s=600.0,
        ),
        MethodSpec(
            "tools.pin",
            reg.PinToolParams,
            reg.PinToolResult,
            "Pin a tool to a version or range (or remove the pin); updates stay within it.",
        ),
        MethodSpec(
            "tools.outdated",
            reg.OutdatedToolsParams,
            reg.OutdatedToolsResult,
            "Installed vs newest matching vs newest version of each tool.",
            timeout_s=120.0,
        ),
        MethodSpec(
            "tools.verify",
            reg.VerifyToolParams,
            reg.VerifyToolResult,
            "Check an installed tool's or a package's signature and whether its key is trusted.",
            timeout_s=300.0,
        ),
        MethodSpec(
            "trust.add",
            reg.AddTrustParams,
            reg.TrustKeyResult,
            "Trust an Ed25519 publisher key.",
        ),
        MethodSpec(
            "trust.list",
            reg.ListTrustParams,
            reg.ListTrustResult,
            "The trusted keys, and whether signatures are required.",
        ),
        MethodSpec(
            "trust.remove",
            reg.RemoveTrustParams,
            reg.TrustKeyResult,
            "Stop trusting a key; under require_signatures its tools stop running.",
        ),
    ]
}

#: Notifications the daemon may send on a connection (no ``id``, no answer).
NOTIFICATIONS: dict[str, type[Any]] = {"progress": m.ProgressParams}
