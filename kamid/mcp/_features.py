"""What a session serves: tools (calls included), resources and prompts.

Everything here is scoped by the session's :class:`~._session.ToolScope`: a tool the agent
may not see does not exist for it, whether it lists, calls, reads or asks for a prompt.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import ExecToolParams, InternalError, KamiError, NotFound, render_prompt
from kamid.protocol import mcp as wire

from ._results import cap_result, error_result, success_result
from ._rpc import Call, RpcError, notification

if TYPE_CHECKING:
    from kamid.protocol import ExecToolResult

    from ._catalog import ToolEntry
    from ._session import McpSession

__all__ = ["Features"]

log = logging.getLogger("kamid.mcp")

#: List results change whenever a tool is installed: clients should refetch each time,
#: and list_changed tells them when. Specific to this agent's profile: private.
LIST_CACHE = {"ttlMs": 0, "cacheScope": "private"}
#: Tool log levels (WIT ``host.level`` and captured streams) as MCP log levels.
_LOG_LEVEL = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "stdout": "info",
    "stderr": "warning",
}


class Features:
    """The tools, resources and prompts handlers of one session."""

    def __init__(self, session: McpSession) -> None:
        self.session = session

    def _page(self, items: list[Any], params: dict[str, Any]) -> tuple[list[Any], str | None]:
        cursor = params.get("cursor")
        start = 0
        if cursor is not None:
            try:
                start = int(
                    base64.urlsafe_b64decode(str(cursor).encode()).decode().removeprefix("kami:")
                )
                if start < 0:
                    raise ValueError(start)
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise RpcError(
                    -32602, f"invalid cursor {cursor!r}: pass back a nextCursor this server gave"
                ) from None
        end = start + self.session.attach.page_size
        following = (
            base64.urlsafe_b64encode(f"kami:{end}".encode()).decode() if end < len(items) else None
        )
        return items[start:end], following

    async def _visible(self, *, refresh: bool = False) -> list[ToolEntry]:
        catalog = await self.session.hub.catalog(refresh=refresh)
        return [e for e in catalog.entries if self.session.scope.visible(e.id)]

    # Tools.
    async def tools_list(self, params: dict[str, Any], call: Call, _id: Any) -> dict[str, Any]:
        page, following = self._page(await self._visible(refresh=True), params)
        result: dict[str, Any] = {"tools": [e.describe(call.version) for e in page]}
        if following:
            result["nextCursor"] = following
        return {**result, **LIST_CACHE} if call.modern else result

    def cached_tool(self, name: str) -> ToolEntry | None:
        """The visible tool called ``name`` in the catalog as it is (no store read)."""
        catalog = self.session.hub.cached_catalog
        entry = catalog.by_name.get(name) if catalog is not None else None
        return entry if entry is not None and self.session.scope.visible(entry.id) else None

    async def _tool(self, name: str) -> ToolEntry | None:
        await self.session.hub.catalog()
        entry = self.cached_tool(name)
        if entry is None:  # installed since the catalog was built?
            await self.session.hub.catalog(refresh=True)
            entry = self.cached_tool(name)
        return entry

    @staticmethod
    def argument_problem(entry: ToolEntry, arguments: object) -> dict[str, Any] | None:
        """The ``isError`` result for arguments the tool would refuse, else None."""
        name = entry.name
        if not isinstance(arguments, dict):
            return error_result(
                entry, f'Invalid arguments for {name}: "arguments" must be a JSON object'
            )
        problems = entry.check_arguments(arguments)
        if not problems:
            return None
        required = entry.input_schema.get("required") or []
        hint = f" (required: {', '.join(map(str, required))})" if required else ""
        return error_result(
            entry,
            f"Invalid arguments for {name}: {'; '.join(problems)}. Call {name} again with "
            f"arguments that match its inputSchema{hint}.",
        )

    async def tools_call(self, params: dict[str, Any], call: Call, _id: Any) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise RpcError(-32602, 'tools/call needs "name": the name of a tool from tools/list')
        entry = await self._tool(name)
        if entry is None:
            raise RpcError(
                -32602,
                f'Unknown tool "{name}": this session has no such tool; '
                "tools/list shows the ones it has",
                {"tool": name},
            )
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        problem = self.argument_problem(entry, arguments)
        if problem is not None:
            return problem
        assert self.session.ctx is not None
        if self.session.ctx.draining:
            raise RpcError(-32006, "kamid is restarting; call the tool again in a moment")
        waiting = self.session.slots.value == 0
        note = self.progress(
            call, 0, "waiting for a free call slot" if waiting else f"running {entry.id}"
        )
        if note is not None:
            await self.session.send(note)
        async with self.session.slots:
            with self.session.ctx.in_flight():
                outcome = await self._exec(entry, arguments, call)
        notes, result = self.conclude(entry, call, outcome)
        for note in notes:
            await self.session.send(note)
        return result

    def conclude(
        self, entry: ToolEntry, call: Call, outcome: ExecToolResult | KamiError
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The notifications (progress, tool log lines) and the result of a finished
        call; on any thread.

        Raises:
            RpcError: the tool was uninstalled while the call waited.
        """
        if isinstance(outcome, NotFound):
            raise RpcError(
                -32602, f'Unknown tool "{entry.name}": it was uninstalled', {"tool": entry.name}
            )
        if isinstance(outcome, KamiError):
            notes = [self.progress(call, 1, f"{entry.id} failed")]
            return [n for n in notes if n], error_result(entry, outcome.message, outcome)
        notes = [
            self.progress(call, 1, f"{entry.id} finished in {outcome.usage.wall_ms:.1f} ms"),
            *self._log_lines(call, entry.id, outcome),
        ]
        problems = entry.check_output(outcome.output)
        if problems:
            result = error_result(
                entry,
                f"{entry.id} returned output that does not match its declared outputSchema: "
                f"{'; '.join(problems)}. This is a bug in the tool; tell its author.",
            )
        else:
            result = cap_result(
                success_result(entry, outcome, call.version),
                self.session.attach.max_result_bytes,
                has_output_schema=entry.output_schema is not None,
            )
        return [n for n in notes if n], result

    async def _exec(
        self, entry: ToolEntry, arguments: dict[str, Any], call: Call
    ) -> ExecToolResult | KamiError:
        """Runs the call; cancelling the request stops it (within one epoch tick)."""
        assert self.session.ctx is not None
        try:
            params = self.exec_params(entry, arguments, call)
            result: ExecToolResult = await self.session.hub.service.tools_exec(
                params, self.session.ctx
            )
        except KamiError as exc:
            return exc
        except Exception:
            log.exception("session %s: calling %s failed", self.session.id, entry.id)
            return InternalError("kamid failed running the tool; the details are in its log")
        return result

    def exec_params(
        self, entry: ToolEntry, arguments: dict[str, Any], call: Call
    ) -> ExecToolParams:
        caller = self.session.caller
        if call.client:
            caller = attrs.evolve(caller, client=call.client)
        return ExecToolParams(tool=entry.id, input=arguments, caller=caller)

    @staticmethod
    def progress(call: Call, progress: int, message: str) -> dict[str, Any] | None:
        """The progress notification, if the request asked for progress."""
        if call.progress_token is None:
            return None
        params: dict[str, Any] = {
            "progressToken": call.progress_token,
            "progress": progress,
            "total": 1,
        }
        if wire.version_at_least(call.version, "2025-03-26"):
            params["message"] = message
        return notification("notifications/progress", params)

    @staticmethod
    def _log_lines(call: Call, tool_id: str, outcome: ExecToolResult) -> list[dict[str, Any]]:
        """The tool's log lines the client asked for, as notifications."""
        if call.log_level is None:
            return []
        threshold = wire.LOG_LEVELS.index(call.log_level)
        notes = []
        for line in outcome.logs:
            level = _LOG_LEVEL.get(line.level, "notice")
            if wire.LOG_LEVELS.index(level) >= threshold:
                params = {"level": level, "logger": tool_id, "data": line.message}
                notes.append(notification("notifications/message", params))
        return notes

    # Resources: each visible tool's manifest, and its README when it came with one.
    def _resource(self, entry: ToolEntry, kind: str, call: Call) -> dict[str, Any]:
        is_readme = kind == "readme"
        resource: dict[str, Any] = {
            "uri": f"kami://tools/{entry.id}/{kind}",
            "name": f"{entry.name}-{kind}",
            "description": (
                f"README of {entry.id} {entry.version}, as installed"
                if is_readme
                else f"tool.toml of {entry.id} {entry.version} (as JSON): its arguments, "
                "requested capabilities and limits"
            ),
            "mimeType": "text/markdown" if is_readme else "application/json",
        }
        if wire.version_at_least(call.version, "2025-06-18"):
            resource["title"] = f"{entry.title} {'README' if is_readme else 'manifest'}"
        return resource

    async def resources_list(self, params: dict[str, Any], call: Call, _id: Any) -> dict[str, Any]:
        resources = []
        for entry in await self._visible(refresh=True):
            if entry.has_readme:
                resources.append(self._resource(entry, "readme", call))
            resources.append(self._resource(entry, "manifest", call))
        page, following = self._page(resources, params)
        result: dict[str, Any] = {"resources": page}
        if following:
            result["nextCursor"] = following
        return {**result, **LIST_CACHE} if call.modern else result

    async def resources_read(self, params: dict[str, Any], call: Call, _id: Any) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise RpcError(-32602, 'resources/read needs "uri": one from resources/list')
        prefix, _, rest = uri.partition("kami://tools/")
        tool_id, _, kind = rest.rpartition("/")
        catalog = await self.session.hub.catalog()
        entry = catalog.by_id.get(tool_id)
        text: str | None = None
        if not prefix and entry is not None and self.session.scope.visible(tool_id):
            if kind == "manifest":
                text = json.dumps(entry.manifest, indent=2, ensure_ascii=False)
            elif kind == "readme":
                text = await self.session.hub.readme(tool_id)
        if text is None:
            # -32002 until 2025-11-25; SEP-2164 made it -32602 from 2026-07-28.
            raise RpcError(
                -32602 if call.modern else -32002,
                f"Resource not found: {uri}; resources/list shows the resources of this session",
                {"uri": uri},
            )
        mime = "application/json" if kind == "manifest" else "text/markdown"
        result: dict[str, Any] = {"contents": [{"uri": uri, "mimeType": mime, "text": text}]}
        return {**result, **LIST_CACHE} if call.modern else result

    async def templates_list(self, _params: dict[str, Any], call: Call, _id: Any) -> dict[str, Any]:
        result: dict[str, Any] = {"resourceTemplates": []}
        return {**result, **LIST_CACHE} if call.modern else result

    # Prompts: the ones manifests declare, named <tool>.<prompt>.
    async def _prompt_entries(self) -> list[tuple[str, ToolEntry, str]]:
        return [
            (f"{entry.name}.{key}", entry, key)
            for entry in await self._visible()
            for key in sorted(entry.prompts)
        ]

    async def prompts_list(self, params: dict[str, Any], call: Call, _id: Any) -> dict[str, Any]:
        await self.session.hub.catalog(refresh=True)
        prompts = []
        for name, entry, key in await self._prompt_entries():
            spec = entry.prompts[key]
            prompt: dict[str, Any] = {"name": name, "description": spec.description}
            if spec.title and wire.version_at_least(call.version, "2025-06-18"):
                prompt["title"] = spec.title
            prompt["arguments"] = [
                {"name": arg, "description": a.description, "required": a.required}
                for arg, a in spec.arguments.items()
            ]
            prompts.append(prompt)
        page, following = self._page(prompts, params)
        result: dict[str, Any] = {"prompts": page}
        if following:
            result["nextCursor"] = following
        return {**result, **LIST_CACHE} if call.modern else result

    async def prompts_get(self, params: dict[str, Any], _call: Call, _id: Any) -> dict[str, Any]:
        name = params.get("name")
        found = {n: (e, k) for n, e, k in await self._prompt_entries()}
        if not isinstance(name, str) or name not in found:
            raise RpcError(
                -32602, f"Unknown prompt {name!r}; prompts/list shows the prompts of this session"
            )
        entry, key = found[name]
        spec = entry.prompts[key]
        given = params.get("arguments") or {}
        if not isinstance(given, dict):
            raise RpcError(-32602, f'prompts/get {name}: "arguments" must be an object of strings')
        missing = [a for a, s in spec.arguments.items() if s.required and not given.get(a)]
        if missing:
            wanted = "; ".join(
                f"{a}: {spec.arguments[a].description or 'no description'}" for a in missing
            )
            raise RpcError(
                -32602, f"prompt {name} needs argument(s) {', '.join(missing)} ({wanted})"
            )
        text = render_prompt(
            spec.text, {k: str(v) for k, v in given.items() if k in spec.arguments}
        )
        return {
            "description": spec.description,
            "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
        }
