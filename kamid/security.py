"""The operator's security surface inside the daemon: grants, the audit log, call sandboxes.

:class:`Security` implements ``tools.grant``, ``tools.revoke`` and ``audit.list`` and gives
:class:`~kamid.service.KamiService` what it needs around installs and calls: the limits
and ceilings a manifest is checked against, the capability table the operator approves,
the WASI sandbox of each call, and the audit rows.

Operator methods answer only a peer running as the daemon's own uid: ``allowed_uids`` and
``allowed_gids`` let other users *run* tools, never change what tools may do.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from kamid.audit import AuditRecorder
from kamid.capabilities import capabilities, check_ceilings, requested_limits
from kamid.configfile import set_values
from kamid.fsbox import FsBox
from kamid.grants import apply_grant, apply_revoke
from kamid.protocol import (
    AuditEntry,
    AuditListResult,
    Grants,
    GrantToolResult,
    InvalidParams,
    KamiError,
    LimitsResult,
    NetGrant,
    NotFound,
    PolicyDenied,
    converter,
    grants_from_requests,
)
from kamid.sandbox import LIMIT_NAMES, limits_for, raise_limits

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from kamid.config import DaemonConfig
    from kamid.dispatch import Handler
    from kamid.fsbox import AssetsInfo, CallPlan
    from kamid.protocol import (
        AuditListParams,
        Capability,
        GetLimitsParams,
        GrantToolParams,
        Manifest,
        Paths,
        RevokeToolParams,
        SetLimitsParams,
        Usage,
    )
    from kamid.sandbox import Limits
    from kamid.server import Peer, RequestContext
    from kamid.store import AuditRow, Store, ToolRecord

__all__ = ["Security"]

log = logging.getLogger("kamid.security")
T = TypeVar("T")

#: Most audit entries one ``audit.list`` returns.
MAX_AUDIT_ENTRIES = 10_000


class Security:
    """Grants, audit and sandboxes for one daemon.

    Args:
        paths: the daemon's layout (sandboxes and assets live under ``paths.data``).
        config: limits, ceilings.
        store: the store (tools, grants, audit and assets tables).
        io: runs a blocking store function off the loop (the service's store thread).
    """

    def __init__(
        self,
        *,
        paths: Paths,
        config: DaemonConfig,
        store: Store,
        io: Callable[..., Awaitable[Any]],
    ) -> None:
        self.paths = paths
        self.config = config
        self.store = store
        self.fsbox = FsBox(paths)
        self.audit = AuditRecorder(store.security)
        self._io = io
        self._config_lock = trio.Lock()
        #: Told the new config after ``limits.set`` (the service keeps its own reference).
        self.config_changed: Callable[[DaemonConfig], None] = lambda _config: None
        #: Called with a tool id after its grants changed (MCP sessions hear of it).
        self.grants_changed: Callable[[str], Awaitable[None]] = _nothing

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Writes the audit log until cancelled (then writes what is left). Started at once."""
        await self.audit.run(task_status=task_status)

    def handlers(self) -> dict[str, Handler]:
        return {
            "tools.grant": self.tools_grant,
            "tools.revoke": self.tools_revoke,
            "audit.list": self.audit_list,
            "limits.get": self.limits_get,
            "limits.set": self.limits_set,
        }

    def audit_failures(self, action: str, handler: Handler) -> Handler:
        """``handler``, with a refused or failed request recorded in the audit log.

        (Successful installs and uninstalls are recorded by the service itself, which
        knows the tool's version and hash.)
        """

        async def audited(p: Any, ctx: RequestContext) -> Any:
            try:
                return await handler(p, ctx)
            except KamiError as exc:
                # The tool as the request named it: an id, a directory, a package or a ref.
                names = (getattr(p, key, None) for key in ("tool", "path", "package", "ref"))
                tool = next((str(n) for n in names if n), "")
                self.audit.record_action(action=action, tool=tool, peer=ctx.peer, error=exc)
                raise

        return audited

    # Operator methods.

    def require_operator(self, ctx: RequestContext, method: str) -> None:
        """Refuses peers other than the daemon's own uid.

        Raises:
            PolicyDenied: the peer is another (allowed) user.
        """
        uid = ctx.peer.uid
        if uid != os.getuid():
            raise PolicyDenied(
                f"{method} is reserved to the operator (uid {os.getuid()}, who runs kamid); "
                f"uid {uid} may run tools but not change or read what they may do",
                data={"uid": uid},
            )

    async def tools_grant(self, p: GrantToolParams, ctx: RequestContext) -> Any:
        def change(grants: Grants) -> tuple[Grants, list[str]]:
            return apply_grant(grants, p, paths=self.paths, ceilings=self.config.ceilings)

        return await self._change_grants("grant", p.tool, change, ctx)

    async def tools_revoke(self, p: RevokeToolParams, ctx: RequestContext) -> Any:
        revoke = functools.partial(apply_revoke, p=p)
        return await self._change_grants("revoke", p.tool, revoke, ctx)

    async def _change_grants(
        self,
        action: str,
        tool: str,
        change: Callable[[Grants], tuple[Grants, list[str]]],
        ctx: RequestContext,
    ) -> GrantToolResult:
        changes: list[str] = []

        def update(current: dict[str, Any]) -> dict[str, Any]:
            new, lines = change(Grants.from_dict(current))
            changes[:] = lines
            return new.to_dict()

        record: ToolRecord | None = None
        try:
            # Inside the try: a refused stranger is worth an audit row too.
            self.require_operator(ctx, f"tools.{action}")
            record = await self._io(self.store.resolve, tool)
            before, after = await self._io(self.store.security.update_grants, record.id, update)
        except KamiError as exc:
            self.audit.record_action(
                action=action,
                tool=record.id if record else tool,
                version=record.version if record else "",
                sha256=record.sha256 if record else "",
                peer=ctx.peer,
                error=exc,
            )
            raise
        self.audit.record_action(
            action=action,
            tool=record.id,
            version=record.version,
            sha256=record.sha256,
            peer=ctx.peer,
            detail={"changes": changes},
        )
        log.info("%s %s: %s", action, record.id, "; ".join(changes) or "no change")
        if before != after:
            # Annotations (read-only, open-world) follow the grants: agents refetch.
            await self.grants_changed(record.id)
        return GrantToolResult(
            tool=record.id, grants=after, changed=before != after, changes=changes
        )

    async def audit_list(self, p: AuditListParams, ctx: RequestContext) -> Any:
        self.require_operator(ctx, "audit.list")
        await self.audit.flush()
        tool_ids: list[str] = []
        if p.tool:
            tool_ids.append(p.tool)
            try:
                record = await self._io(self.store.resolve, p.tool)
                tool_ids.append(record.id)
            except NotFound:
                pass  # an uninstalled tool, or a wasm.run file name: match it as given
        limit = max(1, min(p.limit, MAX_AUDIT_ENTRIES))
        rows: list[AuditRow] = await self._io(
            functools.partial(
                self.store.security.audit, tool_ids=tool_ids, since=p.since, limit=limit
            )
        )
        return AuditListResult(entries=[_entry(row) for row in rows])

    async def limits_get(self, _p: GetLimitsParams, _ctx: RequestContext) -> Any:
        return self._limits_result([])

    async def limits_set(self, p: SetLimitsParams, ctx: RequestContext) -> Any:
        changes = {k: dict(v) for k, v in (("limits", p.limits), ("ceilings", p.ceilings)) if v}
        lines = [f"[{s}].{n} = {v}" for s, values in changes.items() for n, v in values.items()]
        try:
            self.require_operator(ctx, "limits.set")
            if not changes:
                raise InvalidParams("limits.set: give limits or ceilings to change")
            for name in (n for values in changes.values() for n in values):
                if name not in LIMIT_NAMES:
                    known = ", ".join(LIMIT_NAMES)
                    raise InvalidParams(
                        f"limits.set: unknown limit {name!r}; the limits are {known}"
                    )
            async with self._config_lock:
                edit = functools.partial(set_values, self.paths.config_file, changes)
                loaded = await trio.to_thread.run_sync(edit)
                new = attrs.evolve(self.config, limits=loaded.limits, ceilings=loaded.ceilings)
                self.config = new
                self.config_changed(new)
        except KamiError as exc:
            self.audit.record_action(action="limits", tool="kamid", peer=ctx.peer, error=exc)
            raise
        self.audit.record_action(
            action="limits", tool="kamid", peer=ctx.peer, detail={"changes": lines}
        )
        log.info("limits changed in %s: %s", self.paths.config_file, "; ".join(lines))
        return self._limits_result(lines)

    def _limits_result(self, changes: list[str]) -> LimitsResult:
        return LimitsResult(
            defaults=attrs.asdict(self.config.limits),
            ceilings=attrs.asdict(self.config.ceilings),
            config_file=str(self.paths.config_file),
            changes=changes,
        )

    # Installs.

    def install_requests(self, manifest: Manifest) -> tuple[dict[str, int], list[str]]:
        """What installing ``manifest`` asks the operator for.

        Returns:
            (limits asked above the defaults, one line per requested capability).

        Raises:
            PolicyDenied: the manifest asks for more than the daemon's ceilings.
        """
        check_ceilings(manifest.id, manifest.security, self.config.ceilings)
        raised = requested_limits(manifest.security, self.config.limits)
        lines = manifest.security.summary() + [
            f"limit: {name} = {value} (daemon default {getattr(self.config.limits, name)})"
            for name, value in sorted(raised.items())
        ]
        return raised, lines

    def install_capabilities(
        self, manifest: Manifest, imports: list[str], raised: dict[str, int]
    ) -> list[Capability]:
        """The approval table: each request, marked used or unused by the component."""
        return capabilities(manifest.security, imports, raised=raised, defaults=self.config.limits)

    def refuse_unapproved(
        self, manifest: Manifest, requested: list[str], raised: dict[str, int], imports: list[str]
    ) -> None:
        """Refuses an install whose requests the operator has not approved.

        Raises:
            PolicyDenied: always; ``data`` has the requests and the capability table.
        """
        table = self.install_capabilities(manifest, imports, raised)
        raise PolicyDenied(
            f"{manifest.id} requests: {'; '.join(requested)}. Nothing was installed; "
            "review these and approve with `kamictl install --yes`",
            data={"requested": requested, "capabilities": converter.unstructure(table)},
        )

    def granted_capabilities(self, grants: dict[str, Any], imports: list[str]) -> list[Capability]:
        return capabilities(
            None, imports, grants=Grants.from_dict(grants), defaults=self.config.limits
        )

    def install_grants(
        self, manifest: Manifest, raised: dict[str, int], existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The grants of an approved install: the requests, added to what the tool had.

        A reinstall keeps the operator's grants (only ``kamictl revoke`` takes them away)
        and adds what the new manifest requested and the operator just approved.
        """
        requested = attrs.evolve(grants_from_requests(manifest.security), limits=raised)
        if existing is None:
            return requested.to_dict()
        old = Grants.from_dict(existing)
        net = {n.host: n for n in old.net}
        for n in requested.net:
            have = net.get(n.host)
            methods = tuple(dict.fromkeys((*(have.methods if have else ()), *n.methods)))
            net[n.host] = NetGrant(host=n.host, methods=methods)
        merged = attrs.evolve(
            old,
            net=tuple(net.values()),
            fs=requested.fs if requested.fs != "none" else old.fs,
            env={**dict.fromkeys(requested.env), **old.env},
            limits={**old.limits, **{k: max(v, old.limits.get(k, 0)) for k, v in raised.items()}},
        )
        return merged.to_dict()

    async def import_assets(self, tool_dir: Path) -> AssetsInfo | None:
        """Copies the tool's ``assets/`` into the store (content-addressed), off the loop.

        Raises:
            InvalidTool: a symlink or special file in it, or too large.
        """
        return await trio.to_thread.run_sync(self.fsbox.import_assets, tool_dir)

    async def installed(
        self, record: ToolRecord, assets: AssetsInfo | None, peer: Peer | None
    ) -> None:
        """Records the tool's assets (dropping unused ones) and audits the install."""
        if assets is None:
            await self._io(self.store.security.set_assets, record.id, None)
        else:
            await self._io(
                self.store.security.set_assets, record.id, assets.digest, assets.size, assets.files
            )
        await self._collect_assets()
        self.audit.record_action(
            action="install",
            tool=record.id,
            version=record.version,
            sha256=record.sha256,
            peer=peer,
            detail={"grants": record.grants, "assets": assets.digest if assets else None},
        )

    async def uninstalled(self, record: ToolRecord, *, purge: bool, peer: Peer | None) -> bool:
        """Drops the tool's assets, deletes its sandbox when ``purge``; audits. True if purged."""
        await self._io(self.store.security.set_assets, record.id, None)
        await self._collect_assets()
        purged = False
        if purge:
            purged = await trio.to_thread.run_sync(self.fsbox.purge, record.id)
        self.audit.record_action(
            action="uninstall",
            tool=record.id,
            version=record.version,
            sha256=record.sha256,
            peer=peer,
            detail={"purged": purged},
        )
        return purged

    async def _collect_assets(self) -> None:
        keep = await self._io(self.store.security.asset_digests)
        await trio.to_thread.run_sync(self.fsbox.collect_assets, keep)

    # Calls.

    def limits_for(self, manifest: Manifest, grants: Grants) -> Limits:
        """Daemon defaults, replaced by the operator's per-tool limits (never above the
        ceilings), then lowered by whatever the manifest asks."""
        base = raise_limits(self.config.limits, grants.limits, self.config.ceilings)
        return limits_for(manifest.security, base)

    @staticmethod
    def needs_plan(grants: Grants) -> bool:
        """Calls under ``grants`` get directories or environment (:meth:`plan_call`)."""
        return grants.fs != "none" or bool(grants.paths) or bool(grants.env)

    async def plan_call(
        self, record: ToolRecord, grants: Grants, limits: Limits, peer: Peer | None
    ) -> CallPlan | None:
        """The call's WASI context; None when its grants give it nothing (no work at all).

        Raises:
            PolicyDenied: a path grant no longer points at the granted directory.
        """
        if not self.needs_plan(grants):
            return None
        digest = None
        if grants.fs == "read-only":
            digest = await self._io(self.store.security.assets_of, record.id)
        plan = functools.partial(
            self.fsbox.plan, record.id, grants, quota=limits.sandbox_bytes, assets_digest=digest
        )
        try:
            result: CallPlan = await trio.to_thread.run_sync(plan)
        except KamiError as exc:
            self.audit.record_action(
                action="exec",
                tool=record.id,
                version=record.version,
                sha256=record.sha256,
                peer=peer,
                error=exc,
            )
            raise
        return result

    async def check_after(self, tool_id: str, plan: CallPlan | None, usage: Usage) -> None:
        """Fails a call that left its sandbox over quota (LimitExceeded ``sandbox_bytes``)."""
        if plan is not None and plan.check_dir is not None:
            data = {"usage": attrs.asdict(usage)}
            await trio.to_thread.run_sync(self.fsbox.check_after, tool_id, plan, data)


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        time=row.at,
        action=row.action,
        tool=row.tool_id,
        version=row.version,
        sha256=row.sha256,
        uid=row.uid,
        pid=row.pid,
        client=row.client,
        profile=row.profile,
        input_sha256=row.input_sha256,
        outcome=row.outcome,
        error=row.error,
        usage=row.usage,
        hosts=list(row.hosts),
        detail=row.detail,
    )


async def _nothing(_tool_id: str) -> None:
    return None
