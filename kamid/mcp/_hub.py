"""The daemon's MCP side: sessions attach here, and so do the events they announce.

:class:`McpHub` owns what every agent's session shares: the catalog of tools as agents see
them, the profiles, the change bus, and the handlers of ``mcp.attach`` and
``profiles.*``. The service calls :meth:`McpHub.tools_changed` after each install and
uninstall.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from kamid.protocol import (
    AttachMcpResult,
    DeleteProfileResult,
    InvalidParams,
    ListProfilesResult,
    NotFound,
    PolicyDenied,
    Profile,
)
from kamid.protocol import mcp as wire

from ._catalog import Catalog, build_catalog
from ._events import Change, EventBus
from ._session import McpSession, ToolScope

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from kamid.dispatch import Handler
    from kamid.protocol import (
        AttachMcpParams,
        CreateProfileParams,
        DeleteProfileParams,
        ListProfilesParams,
    )
    from kamid.server import RequestContext
    from kamid.service import KamiService
    from kamid.store import ProfileRow

__all__ = ["McpHub"]

log = logging.getLogger("kamid.mcp")
T = TypeVar("T")

#: The largest README kept for a tool; longer ones are cut with a note.
MAX_README_BYTES = 256 * 1024
#: Tool ids look like this (the manifest's rule); a profile may name one not installed yet.
_TOOL_ID = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
_PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class McpHub:
    """Shared state of every MCP session in this daemon.

    Args:
        service: the daemon's service; tool calls go through its ``tools_exec``, so an
            agent's calls meet the same grants, limits, scheduler and audit as any other.
    """

    def __init__(self, service: KamiService) -> None:
        self.service = service
        self.events = EventBus()
        self.sessions: dict[str, McpSession] = {}
        self._catalog: Catalog | None = None
        self._profiles: dict[str, frozenset[str]] | None = None
        self._ids = itertools.count(1)
        # The store serializes its own work; this only bounds the threads MCP takes.
        self._limiter = trio.CapacityLimiter(2)

    def handlers(self) -> dict[str, Handler]:
        return {
            "mcp.attach": self.attach,
            "profiles.create": self.profiles_create,
            "profiles.list": self.profiles_list,
            "profiles.delete": self.profiles_delete,
        }

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # The catalog.
    async def catalog(self, *, refresh: bool = False) -> Catalog:
        """Every installed tool as agents see it; ``refresh`` rereads the store first
        (``tools/list`` does, so grants changed since are reflected)."""
        if self._catalog is None or refresh:
            store = self.service.store
            records = await self.io(store.list)
            readmes = await self.io(store.mcp.readme_ids)
            self._catalog = build_catalog(records, readmes)
        return self._catalog

    @property
    def cached_catalog(self) -> Catalog | None:
        """The catalog as last built (None before the first build); no store read."""
        return self._catalog

    async def readme(self, tool_id: str) -> str | None:
        return await self.io(self.service.store.mcp.readme, tool_id)

    async def tools_changed(self, tool_id: str, tool_dir: Path | None = None) -> None:
        """Called after ``tool_id`` was installed, updated (from ``tool_dir``) or removed;
        never raises.

        Keeps the README that came with an install, rebuilds the catalog and tells the
        sessions that can see the tool.
        """
        try:
            old = self._catalog.by_id.get(tool_id) if self._catalog else None
            if tool_dir is not None:
                text = await self.io(_read_readme, tool_dir)
                await self.io(self.service.store.mcp.put_readme, tool_id, text)
            catalog = await self.catalog(refresh=True)
            new = catalog.by_id.get(tool_id)
            prompts = bool((old and old.prompts) or (new and new.prompts))
            self.events.publish(Change(tools=frozenset({tool_id}), prompts=prompts))
        except Exception:
            log.exception("could not announce the change of %s to MCP sessions", tool_id)

    # Profiles.
    async def profile_tools(self, name: str) -> frozenset[str] | None:
        """The tool ids of profile ``name``, or None if there is no such profile."""
        if self._profiles is None:
            await self._reload_profiles()
        assert self._profiles is not None
        return self._profiles.get(name)

    async def _reload_profiles(self) -> None:
        rows = await self.io(self.service.store.mcp.profiles)
        self._profiles = {r.name: frozenset(r.tools) for r in rows}

    def cached_profile_tools(self, name: str) -> frozenset[str]:
        """Like :meth:`profile_tools` from memory; empty for a profile that is gone."""
        return (self._profiles or {}).get(name, frozenset())

    async def profiles_create(self, p: CreateProfileParams, ctx: RequestContext) -> Profile:
        _operator(ctx, "profiles.create")
        if not _PROFILE_NAME.match(p.name):
            raise InvalidParams(
                f'profile name "{p.name}" is not valid; use lower-case letters, digits, "-" '
                'and "_" (at most 64 characters), e.g. "research"'
            )
        if not p.tools:
            raise InvalidParams(
                "a profile needs at least one tool: pass tool ids or names, e.g. "
                "`kamictl profile create research --tools echo,dev.kami.hello`"
            )
        ids = await self._resolve_tools(p.tools, allow_missing=True)
        row = await self.io(self._put_profile, p.name, ids, p.replace)
        if row is None:
            raise InvalidParams(
                f'profile "{p.name}" already exists; delete it first (`kamictl profile delete '
                f"{p.name}`) or replace it with --replace",
                data={"profile": p.name},
            )
        await self._reload_profiles()
        self.events.publish(Change(profiles=frozenset({p.name}), prompts=True))
        log.info("profile %s: %s", p.name, ", ".join(row.tools))
        return await self._profile(row)

    def _put_profile(self, name: str, ids: list[str], replace: bool) -> ProfileRow | None:
        return self.service.store.mcp.put_profile(name, ids, replace=replace)

    async def profiles_list(self, _p: ListProfilesParams, _ctx: RequestContext) -> Any:
        rows = await self.io(self.service.store.mcp.profiles)
        return ListProfilesResult(profiles=[await self._profile(r) for r in rows])

    async def profiles_delete(self, p: DeleteProfileParams, ctx: RequestContext) -> Any:
        _operator(ctx, "profiles.delete")
        if not await self.io(self.service.store.mcp.delete_profile, p.name):
            raise NotFound(
                f'no profile "{p.name}"; `kamictl profile list` shows the profiles',
                data={"profile": p.name},
            )
        await self._reload_profiles()
        self.events.publish(Change(profiles=frozenset({p.name}), prompts=True))
        users = sum(1 for s in self.sessions.values() if s.scope.profile == p.name)
        log.info("profile %s deleted (%d session(s) used it)", p.name, users)
        return DeleteProfileResult(name=p.name, sessions=users)

    async def _profile(self, row: ProfileRow) -> Profile:
        catalog = await self.catalog()
        return Profile(
            name=row.name,
            tools=row.tools,
            created_at=row.created_at,
            updated_at=row.updated_at,
            missing=[t for t in row.tools if t not in catalog.by_id],
        )

    async def _resolve_tools(self, names: list[str], *, allow_missing: bool) -> list[str]:
        """Tool ids for ids or unique names; unknown ones fail with suggestions."""
        ids = []
        for name in names:
            name = name.strip()
            try:
                record = await self.io(self.service.store.resolve, name)
            except NotFound:
                if allow_missing and _TOOL_ID.match(name):
                    ids.append(name)
                    continue
                raise
            ids.append(record.id)
        return ids

    # Sessions.
    async def attach(self, p: AttachMcpParams, ctx: RequestContext) -> AttachMcpResult:
        """Checks the session's scope, then hands the connection to a new session."""
        if p.profile is not None and p.tools is not None:
            raise InvalidParams("mcp.attach: give profile or tools, not both")
        if not 1 <= p.max_in_flight <= 64:
            raise InvalidParams(f"mcp.attach: max_in_flight must be 1-64 (got {p.max_in_flight})")
        if p.max_result_bytes < 1024:
            raise InvalidParams(
                f"mcp.attach: max_result_bytes must be at least 1024 (got {p.max_result_bytes})"
            )
        if not 1 <= p.page_size <= 1000:
            raise InvalidParams(f"mcp.attach: page_size must be 1-1000 (got {p.page_size})")
        if p.log_level is not None and p.log_level not in wire.LOG_LEVELS:
            raise InvalidParams(
                f"mcp.attach: log_level must be one of {', '.join(wire.LOG_LEVELS)}"
            )
        if p.era == "legacy" and p.protocol_version is None:
            raise InvalidParams(
                "mcp.attach: a legacy session needs its negotiated protocol_version"
            )
        if p.profile is not None:
            tools = await self.profile_tools(p.profile)
            if tools is None:
                raise NotFound(
                    f'no profile "{p.profile}"; create it with `kamictl profile create '
                    f"{p.profile} --tools ...` (`kamictl profile list` shows the profiles)",
                    data={"profile": p.profile},
                )
            scope = ToolScope(self, profile=p.profile)
        elif p.tools is not None:
            scope = ToolScope(
                self, ids=frozenset(await self._resolve_tools(p.tools, allow_missing=False))
            )
        else:
            scope = ToolScope(self)
        catalog = await self.catalog()
        session_id = f"mcp-{next(self._ids)}"
        session = McpSession(self, p, session_id=session_id, scope=scope)
        ctx.upgrade(session)
        log.info(
            "MCP session %s attached (pid %d, client %s, %s era%s%s)",
            session_id,
            ctx.peer.pid,
            p.client_name or "?",
            p.protocol_version or p.era,
            f", profile {p.profile}" if p.profile else "",
            ", resumed" if p.resumed else "",
        )
        return AttachMcpResult(
            session=session_id,
            tools=[e.id for e in catalog.entries if scope.visible(e.id)],
            profile=p.profile,
            max_frame_bytes=self.service.config.server.max_frame_bytes,
        )


def _operator(ctx: RequestContext, method: str) -> None:
    """Profiles decide what other agents see: only kamid's own user changes them.

    Raises:
        PolicyDenied: another (allowed) user; they may run tools, not reshape profiles.
    """
    if ctx.peer.uid != os.getuid():
        raise PolicyDenied(
            f"{method} is reserved to the operator (uid {os.getuid()}, who runs kamid); "
            f"uid {ctx.peer.uid} may use profiles but not change them",
            data={"uid": ctx.peer.uid},
        )


def _read_readme(tool_dir: Path) -> str | None:
    for name in ("README.md", "README.markdown", "README.txt", "README"):
        path = tool_dir / name
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if len(data) > MAX_README_BYTES:
            cut = data[:MAX_README_BYTES].decode("utf-8", "ignore")
            return cut + f"\n\n[kami: README cut at {MAX_README_BYTES} bytes of {len(data)}]\n"
        return data.decode("utf-8", "replace")
    return None
