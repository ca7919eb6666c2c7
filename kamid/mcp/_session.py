"""One agent's MCP session, on a daemon connection that ``mcp.attach`` took over.

The shim (``kamictl mcp``) answers ``initialize`` and ``server/discover`` itself and tells
the daemon what it negotiated; everything else arrives here as raw MCP JSON-RPC lines.
Requests run as tasks, answered as each finishes (``tools/call`` often on the fast lane,
without a task: see :meth:`McpSession.offer`); ``notifications/cancelled`` drops the
request's answer, frees its call slot at once, and stops its wasm at the next epoch tick.
Changes to what the agent can see are announced as ``list_changed`` notifications in the
legacy era and on ``subscriptions/listen`` streams in the modern one.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio

from kamid.protocol import CallerInfo, KamiError
from kamid.protocol import mcp as wire

from ._events import Change
from ._features import Features
from ._rpc import Call, RpcError, error, notification, response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from kamid.protocol import AttachMcpParams, ExecToolResult
    from kamid.server import RequestContext

    from ._hub import McpHub

    Sink = Callable[[dict[str, Any]], Awaitable[None]]

__all__ = ["McpSession", "ToolScope"]

log = logging.getLogger("kamid.mcp")

#: Requests one session may have open (in flight or waiting for a call slot).
MAX_OPEN_REQUESTS = 1024
SUBSCRIPTION_ID_KEY = "io.modelcontextprotocol/subscriptionId"
_LEGACY_ONLY = frozenset(
    {"ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
_MODERN_ONLY = frozenset({"server/discover", "subscriptions/listen"})
_INTERNAL = "Internal error in kamid; the details are in its log"
#: Lines without it are never offered to the fast lane.
_FAST_METHOD = b'"tools/call"'


def _resource_uris(tool_id: str) -> set[str]:
    return {f"kami://tools/{tool_id}/manifest", f"kami://tools/{tool_id}/readme"}


class _FastCall:
    """A ``tools/call`` on the fast lane, as :attr:`McpSession._open` holds it:
    cancelling it stops the call, drops its answer and frees its session slot at once."""

    def __init__(self, slots: trio.Semaphore) -> None:
        self._slots: trio.Semaphore | None = slots
        self.cancelled = False
        #: Stops the running call (set once it started).
        self.stop: Callable[[], None] | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.stop is not None:
            self.stop()
        self.release()

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()
            self._slots = None


class ToolScope:
    """Which tools a session may see and call: all, a profile's (as it is now), or a list."""

    def __init__(
        self, hub: McpHub, *, profile: str | None = None, ids: frozenset[str] | None = None
    ) -> None:
        self.hub = hub
        self.profile = profile
        self.ids = ids

    def visible(self, tool_id: str) -> bool:
        if self.profile is not None:
            return tool_id in self.hub.cached_profile_tools(self.profile)
        return self.ids is None or tool_id in self.ids


class McpSession:
    """Serves one agent's MCP messages; created by ``mcp.attach``.

    Args:
        hub: the daemon's shared MCP state.
        attach: what the shim negotiated with the client.
        session_id: for logs.
        scope: the tools this agent sees.
    """

    def __init__(
        self, hub: McpHub, attach: AttachMcpParams, *, session_id: str, scope: ToolScope
    ) -> None:
        self.hub = hub
        self.attach = attach
        self.id = session_id
        self.scope = scope
        self.modern = attach.era == "modern"
        self.version = attach.protocol_version or "2026-07-28"
        self.initialized = attach.initialized
        self.log_level = attach.log_level
        self.resource_subscriptions = set(attach.resource_subscriptions)
        self.caller = CallerInfo(client=attach.client_name or "mcp", profile=attach.profile)
        #: Open listen streams: request id -> honored filter.
        self.listens: dict[int | str, dict[str, Any]] = {}
        self._open: dict[int | str, trio.CancelScope | _FastCall] = {}
        #: Lines handed to serve() and not through _accept yet; the fast lane keeps out
        #: while there are any, so that it never overtakes what came before.
        self._queued = 0
        self.slots = trio.Semaphore(attach.max_in_flight)
        self.ctx: RequestContext | None = None
        self.nursery: trio.Nursery | None = None
        self.features = features = Features(self)
        self._methods: dict[str, Callable[[dict[str, Any], Call, Any], Awaitable[Any]]] = {
            "ping": self._ping,
            "logging/setLevel": self._set_level,
            "server/discover": self._discover,
            "tools/list": features.tools_list,
            "tools/call": features.tools_call,
            "resources/list": features.resources_list,
            "resources/read": features.resources_read,
            "resources/templates/list": features.templates_list,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "prompts/list": features.prompts_list,
            "prompts/get": features.prompts_get,
            "subscriptions/listen": self._listen,
        }

    async def serve(self, lines: trio.MemoryReceiveChannel[bytes], ctx: RequestContext) -> None:
        """Serves until the connection closes (the shim exited); its running calls are
        cancelled (each stops at its next epoch tick)."""
        self.ctx = ctx
        self.hub.sessions[self.id] = self
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._announce_changes)
                for spec in self.attach.listens:
                    notifications = (
                        spec.notifications if isinstance(spec.notifications, dict) else {}
                    )
                    self.listens[spec.id] = _honored(notifications)
                    nursery.start_soon(self._hold_listen, spec.id)
                if self.attach.resumed:
                    # Whatever changed while the daemon was away: have the client refetch.
                    await self._announce(Change(everything=True))
                async for line in lines:
                    try:
                        await self._on_line(line)
                    finally:
                        self._queued -= 1
                nursery.cancel_scope.cancel()
        finally:
            self.hub.sessions.pop(self.id, None)
            for request in list(self._open.values()):
                if isinstance(request, _FastCall):
                    request.cancel()  # as the requests with a task were
            log.info("MCP session %s closed", self.id)

    async def send(self, message: Any) -> None:
        """Sends one frame (a message, or a batch answer) on the connection."""
        assert self.ctx is not None
        await self.ctx.send(message)

    # Messages in.
    def offer(self, line: bytes) -> bool:
        """Takes a ``tools/call`` the service can start at once (see
        :meth:`KamiService.try_fast`): no task is started, and the call thread sends the
        progress and log notifications and the answer itself. Anything else, and
        anything behind a line still waiting for :meth:`serve`, goes there in order."""
        taken = self._queued == 0 and _FAST_METHOD in line and self._try_fast(line)
        if not taken:
            self._queued += 1
        return taken

    def _try_fast(self, line: bytes) -> bool:
        ctx = self.ctx
        if ctx is None or ctx.draining:
            return False
        try:
            message = json.loads(line)
        except ValueError:  # UnicodeDecodeError included: serve() answers it
            return False
        if not (
            isinstance(message, dict)
            and message.get("jsonrpc") == "2.0"
            and message.get("method") == "tools/call"
        ):
            return False
        request_id = message.get("id")
        params = message.get("params")
        if (
            isinstance(request_id, bool)
            or not isinstance(request_id, (int, str))
            or request_id in self._open
            or len(self._open) >= MAX_OPEN_REQUESTS
            or not isinstance(params, dict)
        ):
            return False
        try:
            call = self._call_for("tools/call", params)
        except RpcError:
            return False
        features = self.features
        name, arguments = params.get("name"), params.get("arguments")
        arguments = {} if arguments is None else arguments
        entry = features.cached_tool(name) if isinstance(name, str) else None
        if entry is None or features.argument_problem(entry, arguments) is not None:
            return False
        try:
            self.slots.acquire_nowait()
        except trio.WouldBlock:
            return False
        fast = _FastCall(self.slots)
        held: list[Callable[[], None]] = []

        def admitted() -> None:  # trio thread, before the call runs
            held.append(ctx.hold())  # a stopping daemon waits for it
            self._open[request_id] = fast
            note = features.progress(call, 0, f"running {entry.id}")
            if note is not None:
                ctx.reply_from_thread(note)

        def answer(result: ExecToolResult | None, failure: KamiError | None) -> None:  # thread
            if fast.cancelled:
                return  # a cancelled request gets no answer
            # Answered is no longer open: the client may reuse the id once it has the
            # answer, before done() runs. (Only this request can be under its id now.)
            if self._open.get(request_id) is fast:
                self._open.pop(request_id, None)
            outcome = failure if failure is not None else result
            assert outcome is not None
            try:
                notes, reply = features.conclude(entry, call, outcome)
                frame = response(request_id, _complete(reply, call))
            except RpcError as exc:
                notes, frame = [], error(request_id, exc.code, exc.message, exc.data)
            except Exception:
                log.exception("session %s: answering tools/call %s failed", self.id, entry.id)
                notes, frame = [], error(request_id, -32603, _INTERNAL)
            ctx.reply_from_thread(*notes, frame)

        def done() -> None:  # trio thread
            fast.release()
            if self._open.get(request_id) is fast:
                del self._open[request_id]
            for release in held:
                release()

        params_ = features.exec_params(entry, arguments, call)
        stop = self.hub.service.try_fast(params_, ctx.peer, answer, done, admitted=admitted)
        if stop is None:
            fast.release()
            return False
        fast.stop = stop
        return True

    async def _on_line(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (UnicodeDecodeError, ValueError) as exc:
            await self.send(error(None, -32700, f"Parse error: the message is not JSON ({exc})"))
            return
        assert self.nursery is not None
        if isinstance(message, list):
            self.nursery.start_soon(self._batch, message)
        else:
            await self._accept(message, self.send, self.nursery)

    async def _batch(self, items: list[Any]) -> None:
        if not items:
            await self.send(error(None, -32600, "Invalid Request: an empty batch"))
            return
        if self.modern or self.version != "2025-03-26":
            await self.send(
                error(
                    None,
                    -32600,
                    "Invalid Request: JSON-RPC batches are only accepted with protocol "
                    f"revision 2025-03-26 (this session speaks {self.version}); send the "
                    "messages one by one",
                )
            )
            return
        responses: list[dict[str, Any]] = []

        async def collect(answer: dict[str, Any]) -> None:
            responses.append(answer)

        async with trio.open_nursery() as nursery:
            for item in items:
                await self._accept(item, collect, nursery)
        if responses:
            await self.send(responses)

    async def _accept(self, message: Any, sink: Sink, nursery: trio.Nursery) -> None:
        """Starts a request, handles a notification, or answers what is neither."""
        if not isinstance(message, dict):
            await sink(error(None, -32600, "Invalid Request: a message must be a JSON object"))
            return
        request_id = message.get("id")
        method = message.get("method")
        if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
            if "method" not in message and ("result" in message or "error" in message):
                return  # an answer to a request this server never sends
            valid_id = request_id if isinstance(request_id, (int, str)) else None
            await sink(
                error(valid_id, -32600, 'Invalid Request: needs "jsonrpc": "2.0" and a "method"')
            )
            return
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            if "id" in message:
                await sink(error(request_id, -32602, f"{method}: params must be an object"))
            return
        if "id" not in message:
            await self._notify(method, params or {})
            return
        if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
            await sink(error(None, -32600, "Invalid Request: id must be a string or an integer"))
            return
        if request_id in self._open:
            await sink(
                error(
                    request_id,
                    -32600,
                    f"Invalid Request: id {request_id!r} is in use by a request in flight",
                )
            )
            return
        if len(self._open) >= MAX_OPEN_REQUESTS:
            await sink(
                error(
                    request_id,
                    -32005,
                    f"Busy: {MAX_OPEN_REQUESTS} requests are open; wait for some",
                )
            )
            return
        scope = trio.CancelScope()
        self._open[request_id] = scope
        nursery.start_soon(self._request, request_id, method, params or {}, sink, scope)

    async def _notify(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled":
            scope = self._open.get(params.get("requestId"))  # type: ignore[arg-type]
            if scope is not None:
                scope.cancel()
        else:
            log.debug("session %s: ignoring notification %s", self.id, method)

    async def _request(
        self,
        request_id: int | str,
        method: str,
        params: dict[str, Any],
        sink: Sink,
        scope: trio.CancelScope,
    ) -> None:
        try:
            with scope:
                response = await self._respond(request_id, method, params)
        finally:
            if self._open.get(request_id) is scope:
                del self._open[request_id]
        if scope.cancel_called:
            return  # a cancelled request gets no answer, even one that finished meanwhile
        await sink(response)

    async def _respond(
        self, request_id: int | str, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            return response(request_id, await self._dispatch(request_id, method, params))
        except RpcError as exc:
            return error(request_id, exc.code, exc.message, exc.data)
        except KamiError as exc:
            return error(request_id, exc.code, exc.message, exc.data or None)
        except Exception:
            log.exception("session %s: %s failed", self.id, method)
            return error(request_id, -32603, _INTERNAL)

    async def _dispatch(
        self, request_id: int | str, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        call = self._call_for(method, params)
        handler = self._methods.get(method)
        if handler is None or method in (_LEGACY_ONLY if self.modern else _MODERN_ONLY):
            raise RpcError(-32601, f"Method not found: {method}", method)
        return _complete(await handler(params, call, request_id), call)

    def _call_for(self, method: str, params: dict[str, Any]) -> Call:
        """What a request asks for beyond its params (revision, logging, progress).

        Raises:
            RpcError: the session's era refuses the request as sent.
        """
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        token = token if isinstance(token, (int, str)) and not isinstance(token, bool) else None
        if self.modern:
            if method == "initialize":
                requested = params.get("protocolVersion")
                raise RpcError(
                    wire.UNSUPPORTED_VERSION,
                    "this session speaks 2026-07-28, which has no initialize handshake",
                    {"supported": ["2026-07-28"], "requested": str(requested)},
                )
            envelope = wire.check_envelope(params)
            if not isinstance(envelope, wire.Envelope):
                raise RpcError(envelope["code"], envelope["message"], envelope.get("data"))
            name = (envelope.client_info or {}).get("name")
            call = Call(
                version=envelope.version,
                modern=True,
                log_level=envelope.log_level,
                progress_token=token,
                client=str(name) if name else None,
            )
        else:
            if method == "initialize":
                raise RpcError(-32600, "Invalid Request: this session is already initialized")
            if wire.has_modern_envelope(params):
                raise RpcError(
                    -32600,
                    f"Invalid Request: this session speaks {self.version} (it began with "
                    "initialize); requests carrying the 2026-07-28 envelope are not accepted on it",
                )
            call = Call(
                version=self.version, modern=False, log_level=self.log_level, progress_token=token
            )
        return call

    # Utilities.
    async def _ping(self, _params: dict[str, Any], _call: Call, _id: Any) -> dict[str, Any]:
        return {}

    async def _set_level(self, params: dict[str, Any], _call: Call, _id: Any) -> dict[str, Any]:
        level = params.get("level")
        if level not in wire.LOG_LEVELS:
            raise RpcError(
                -32602, f"logging/setLevel: level must be one of {', '.join(wire.LOG_LEVELS)}"
            )
        self.log_level = level
        return {}

    async def _discover(self, _params: dict[str, Any], _call: Call, _id: Any) -> dict[str, Any]:
        return wire.discover_result(profile=self.attach.profile, tools=self.attach.tools)

    async def _subscribe(self, params: dict[str, Any], _call: Call, _id: Any) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise RpcError(-32602, 'resources/subscribe needs "uri"')
        self.resource_subscriptions.add(uri)
        return {}

    async def _unsubscribe(self, params: dict[str, Any], _call: Call, _id: Any) -> dict[str, Any]:
        self.resource_subscriptions.discard(str(params.get("uri")))
        return {}

    # Change notifications.
    async def _listen(self, params: dict[str, Any], _call: Call, request_id: Any) -> dict[str, Any]:
        notifications = params.get("notifications")
        if not isinstance(notifications, dict):
            raise RpcError(
                -32602, 'subscriptions/listen needs "notifications": the kinds to receive'
            )
        honored = _honored(notifications)
        self.listens[request_id] = honored
        try:
            await self.send(
                notification(
                    "notifications/subscriptions/acknowledged",
                    {"notifications": honored, "_meta": {SUBSCRIPTION_ID_KEY: request_id}},
                )
            )
            await trio.sleep_forever()
        finally:
            self.listens.pop(request_id, None)

    async def _hold_listen(self, request_id: int | str) -> None:
        """Keeps a resumed listen stream open until cancelled like any request."""
        scope = trio.CancelScope()
        self._open[request_id] = scope
        try:
            with scope:
                await trio.sleep_forever()
        finally:
            self._open.pop(request_id, None)
            self.listens.pop(request_id, None)

    async def _announce_changes(self) -> None:
        with self.hub.events.subscribe() as subscription:
            while True:
                await self._announce(await subscription.wait())

    async def _announce(self, change: Change) -> None:
        seen = [t for t in change.tools if self.scope.visible(t)]
        if self.scope.profile is not None and self.scope.profile in change.profiles:
            change = Change(everything=True)
        if not (change.everything or seen):
            return
        prompts = change.prompts or change.everything
        uris = set().union(*(_resource_uris(t) for t in seen)) if seen else set()
        if self.modern:
            for listen_id, honored in list(self.listens.items()):
                meta = {SUBSCRIPTION_ID_KEY: listen_id}
                kinds = [("toolsListChanged", "tools"), ("resourcesListChanged", "resources")]
                if prompts:
                    kinds.append(("promptsListChanged", "prompts"))
                for flag, kind in kinds:
                    if honored.get(flag):
                        await self.send(
                            notification(f"notifications/{kind}/list_changed", {"_meta": meta})
                        )
                wanted = set(honored.get("resourceSubscriptions", []))
                for uri in sorted(wanted if change.everything else wanted & uris):
                    await self.send(
                        notification("notifications/resources/updated", {"uri": uri, "_meta": meta})
                    )
            return
        if not self.initialized:
            return
        await self.send(notification("notifications/tools/list_changed"))
        await self.send(notification("notifications/resources/list_changed"))
        if prompts:
            await self.send(notification("notifications/prompts/list_changed"))
        subscribed = (
            self.resource_subscriptions if change.everything else self.resource_subscriptions & uris
        )
        for uri in sorted(subscribed):
            await self.send(notification("notifications/resources/updated", {"uri": uri}))


def _complete(result: dict[str, Any], call: Call) -> dict[str, Any]:
    """``result`` as its era wants it: 2026-07-28 results say they are complete and who
    answered."""
    if call.modern:
        result.setdefault("resultType", "complete")
        meta_out = result.setdefault("_meta", {})
        meta_out.setdefault(wire.SERVER_INFO_KEY, wire.server_info())
    return result


def _honored(requested: dict[str, Any]) -> dict[str, Any]:
    """The part of a listen filter KAMI delivers: every kind it has, nothing it lacks."""
    honored: dict[str, Any] = {
        flag: True
        for flag in ("toolsListChanged", "promptsListChanged", "resourcesListChanged")
        if requested.get(flag) is True
    }
    uris = requested.get("resourceSubscriptions")
    if isinstance(uris, list) and uris:
        honored["resourceSubscriptions"] = [u for u in uris if isinstance(u, str)]
    return honored
