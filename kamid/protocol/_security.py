"""Wire types of the operator's security surface: grants, revocations, the audit log.

``tools.grant`` and ``tools.revoke`` change what a tool may do; ``audit.list`` reads what
happened. All three are operator methods (:data:`OPERATOR_METHODS`): the daemon answers
them only for a peer running as its own uid, and nothing a tool or an MCP client can
reach dispatches to them.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

# Imported at run time: cattrs resolves these annotations when it builds the classes.
from ._grants import FsGrant, NetGrant  # noqa: TC001

__all__ = [
    "OPERATOR_METHODS",
    "AuditEntry",
    "AuditListParams",
    "AuditListResult",
    "Capability",
    "GetLimitsParams",
    "GrantToolParams",
    "GrantToolResult",
    "LimitsResult",
    "RevokeToolParams",
    "SetLimitsParams",
]

#: Methods that change or reveal what tools may do. Only the owner's CLI reaches them; an
#: MCP session must never dispatch to them.
OPERATOR_METHODS = frozenset({"tools.grant", "tools.revoke", "audit.list", "limits.set"})


@attrs.frozen(kw_only=True)
class Capability:
    """One capability a manifest requests (or a grant holds), as the approval table shows it."""

    #: ``network``, ``filesystem``, ``path``, ``environment``, ``kv``, ``invoke``, ``limit``.
    kind: str
    #: What exactly: a host pattern, a mode, a variable name, ``memory_bytes = 536870912``.
    detail: str
    #: Whether the component imports what it needs to use it (None: always usable).
    used: bool | None = None
    #: Why it is unused, or what granting it means.
    note: str = ""


@attrs.frozen(kw_only=True)
class GrantToolParams:
    """Adds to a tool's grants. Every field is optional; what is given is granted."""

    tool: str
    #: Filesystem mode: ``sandbox`` (per-tool /data) or ``read-only`` (its assets at /assets).
    fs: Literal["sandbox", "read-only"] | None = None
    #: Host directories mounted into the guest; host paths are canonicalized by the daemon.
    paths: tuple[FsGrant, ...] = ()
    #: Variable -> value; ``None`` passes kamid's own value of the variable.
    env: dict[str, str | None] = attrs.Factory(dict)
    #: Hosts (with methods) for ``kami:tool/http``; replaces the entry for the same host.
    net: tuple[NetGrant, ...] = ()
    kv: bool = False
    invoke: tuple[str, ...] = ()
    #: Limit name -> value, raising (or lowering) the daemon default for this tool only.
    limits: dict[str, int] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class RevokeToolParams:
    """Removes from a tool's grants; naming something not granted is an error."""

    tool: str
    #: Drops the filesystem mode (back to ``none``).
    fs: bool = False
    #: Path grants to drop, by guest path (``/work``) or host path.
    paths: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    #: Network grants to drop, by host pattern.
    net: tuple[str, ...] = ()
    kv: bool = False
    invoke: tuple[str, ...] = ()
    #: Per-tool limits to drop (back to the daemon default).
    limits: tuple[str, ...] = ()
    #: Revoke everything: the tool runs with deny-all grants.
    all: bool = False


@attrs.frozen(kw_only=True)
class GrantToolResult:
    """The result of both ``tools.grant`` and ``tools.revoke``."""

    tool: str
    #: The grants now in force (the JSON form of :class:`~kamid.protocol.Grants`).
    grants: dict[str, Any]
    #: False when nothing changed (granting what was already granted).
    changed: bool
    #: Lines describing what changed, for the CLI and the audit log.
    changes: list[str] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class AuditListParams:
    #: Only entries of this tool (id or unique name, or a ``wasm.run`` file name).
    tool: str | None = None
    #: Only entries at or after this Unix time.
    since: float | None = None
    #: Newest entries first, at most this many.
    limit: int = 100


@attrs.frozen(kw_only=True)
class AuditEntry:
    seq: int
    #: Unix time the action finished.
    time: float
    #: ``exec``, ``run``, ``install``, ``uninstall``, ``grant`` or ``revoke``.
    action: str
    tool: str
    version: str
    sha256: str
    #: The peer's uid and pid (SO_PEERCRED) and, when the client said, its name and profile.
    uid: int | None = None
    pid: int | None = None
    client: str | None = None
    profile: str | None = None
    #: sha256 of the input JSON text (the input itself is never stored).
    input_sha256: str | None = None
    #: ``ok``, or the error kind (``limit_exceeded``, ``policy_denied``, ...).
    outcome: str = "ok"
    #: The error message, cut to 500 characters.
    error: str | None = None
    #: ``{wall_ms, fuel_consumed, peak_memory_bytes, host_calls}`` for calls that ran.
    usage: dict[str, Any] | None = None
    #: Hosts the call contacted or was denied (filled by the network layer).
    hosts: list[Any] = attrs.Factory(list)
    #: Action details: the grant changes, ``limit`` for a limit hit, ``purged``.
    detail: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class AuditListResult:
    entries: list[AuditEntry]


@attrs.frozen(kw_only=True)
class GetLimitsParams:
    pass


@attrs.frozen(kw_only=True)
class SetLimitsParams:
    """Changes the daemon-wide defaults and ceilings, in ``kamid.toml`` and at once."""

    #: ``[limits]`` name -> new default.
    limits: dict[str, int] = attrs.Factory(dict)
    #: ``[ceilings]`` name -> new ceiling.
    ceilings: dict[str, int] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class LimitsResult:
    """The daemon's limits now (the result of ``limits.get`` and ``limits.set``)."""

    defaults: dict[str, int]
    ceilings: dict[str, int]
    #: The file ``limits.set`` edits.
    config_file: str
    #: What ``limits.set`` changed, one line each.
    changes: list[str] = attrs.Factory(list)
