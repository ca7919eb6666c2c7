"""``kamictl mcp``: one agent's MCP server on stdin/stdout, a thin pipe to kamid.

The shim answers ``initialize`` (legacy era) and ``server/discover`` (2026-07-28) by itself,
at once, even while kamid is starting; it starts kamid if it is not running; then it
attaches to the daemon with ``mcp.attach`` (profile, client, what it negotiated), after
which the daemon connection carries raw MCP JSON-RPC lines both ways. If kamid restarts,
the shim reconnects and attaches again with the session's state (revision, capabilities,
log level, subscriptions); calls that were in flight get an error, nothing else is lost.

stdout carries protocol messages only: fd 1 is duplicated for the protocol and then
pointed at stderr, so a stray print cannot corrupt the stream. Stdlib only, two threads
(stdin -> daemon in the main thread, daemon -> stdout in a reader thread), so it starts
in the time Python does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

import attrs

from kamid.protocol import (
    DEFAULT_MAX_FRAME,
    DaemonUnreachable,
    KamiError,
    encode_frame,
)
from kamid.protocol import mcp as wire

from ._mcp_link import Link

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kamid.protocol import Paths

__all__ = ["ShimOptions", "guard_stdout", "run_shim"]

log = logging.getLogger("kamictl.mcp")

#: How long a request waits for kamid to come back before it is answered with an error.
RECONNECT_WAIT_S = 60.0
#: At stdin EOF, how long the answers to requests still in flight may take to arrive.
EOF_GRACE_S = 2.0
#: The JSON-RPC code for "kamid is not there" (kamictl's own, see docs/protocol.md).
UNREACHABLE = DaemonUnreachable.code
_NOTIFICATION_PREFIX = b'{"jsonrpc":"2.0","method":'
_ANSWER_PREFIX = re.compile(
    rb'\{"jsonrpc":"2\.0","id":(-?\d+|"(?:[^"\\]|\\.)*"),"(?:result|error)":'
)


@attrs.frozen(kw_only=True)
class ShimOptions:
    profile: str | None = None
    tools: list[str] | None = None
    autostart: bool = True
    max_result_bytes: int = 1024 * 1024
    max_in_flight: int = 16
    #: How long a request waits for kamid to (re)start before it is answered with an error.
    connect_timeout_s: float = RECONNECT_WAIT_S


def guard_stdout() -> IO[bytes]:
    """Keeps fd 1 for the protocol and sends everything else that writes to stdout (a
    print, a library, a child process) to stderr instead."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb")


def run_shim(paths: Paths, options: ShimOptions, out: IO[bytes]) -> int:
    """Serves MCP on stdin and ``out`` until stdin closes; returns the exit code."""
    return Shim(paths, options, out).run()


def _response(request_id: Any, result: dict[str, Any]) -> bytes:
    return encode_frame({"jsonrpc": "2.0", "id": request_id, "result": result})


def _error(request_id: Any, code: int, message: str, data: Any = None) -> bytes:
    error = wire.rpc_error(code, message, data)
    return encode_frame({"jsonrpc": "2.0", "id": request_id, "error": error})


def _request_id(message: dict[str, Any]) -> int | str | None:
    value = message.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value


@attrs.define
class _State:
    """What the client negotiated: sent with every (re-)attach."""

    era: str | None = None
    version: str | None = None
    client_info: dict[str, Any] | None = None
    client_capabilities: dict[str, Any] | None = None
    answered_initialize: bool = False
    initialized: bool = False
    log_level: str | None = None
    resource_subscriptions: set[str] = attrs.Factory(set)
    #: Open ``subscriptions/listen`` streams: id -> their ``notifications`` filter.
    listens: dict[int | str, dict[str, Any]] = attrs.Factory(dict)


class Shim:
    def __init__(self, paths: Paths, options: ShimOptions, out: IO[bytes]) -> None:
        self.paths = paths
        self.options = options
        self.state = _State()
        self.max_frame = DEFAULT_MAX_FRAME
        self._out = out
        self._out_lock = threading.Lock()
        #: Ids of the requests sent to kamid and not answered yet.
        self._pending: set[int | str] = set()
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self.link = Link(self)

    # Output.
    def write(self, data: bytes) -> None:
        with self._out_lock:
            try:
                self._out.write(data)
                self._out.flush()
            except (BrokenPipeError, OSError):
                # The client is gone; nothing left to serve.
                self.link.close()
                os._exit(0)

    # Input.
    def run(self) -> int:
        threading.Thread(target=self.link.warm_up, name="kamid-connect", daemon=True).start()
        try:
            for line in _stdin_lines(lambda: self.max_frame):
                if line is None:
                    self.write(
                        _error(
                            None,
                            -32600,
                            f"Invalid Request: a message longer than {self.max_frame} bytes "
                            "(kamid's frame limit) was dropped; send smaller messages",
                        )
                    )
                    continue
                self.on_client_line(line)
        except KeyboardInterrupt:
            pass
        # A client that pipelined requests and closed stdin still gets their answers, if
        # they come soon; one that waits for answers first finds nothing pending.
        with self._answered:
            self._answered.wait_for(self._only_listens_pending, timeout=EOF_GRACE_S)
        self.link.close()
        return 0

    def _only_listens_pending(self) -> bool:
        return all(r in self.state.listens for r in self._pending)

    def on_client_line(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (UnicodeDecodeError, ValueError) as exc:
            self.write(_error(None, -32700, f"Parse error: the message is not JSON ({exc})"))
            return
        if isinstance(message, list):
            self._on_batch(line, message)
            return
        if not isinstance(message, dict):
            self.write(_error(None, -32600, "Invalid Request: a message must be a JSON object"))
            return
        method = message.get("method")
        if not isinstance(method, str):
            if "result" in message or "error" in message:
                return  # an answer to a request this server never sends
            self.write(_error(_request_id(message), -32600, 'Invalid Request: needs a "method"'))
            return
        is_request = "id" in message
        params = message.get("params")
        state = self.state
        if state.era is None:
            if not is_request:
                log.debug("dropping %s: it came before the first request", method)
                return
            modern = method != "initialize" and wire.has_modern_envelope(params)
            state.era = "modern" if modern else "legacy"
        if method == "initialize" and is_request:
            self._initialize(message)
        elif method == "server/discover" and is_request and state.era == "modern":
            self._discover(message)
        elif method == "ping" and is_request and state.era == "legacy":
            self.write(_response(message.get("id"), {}))
        elif state.era == "legacy" and not state.answered_initialize:
            if is_request:
                self.write(
                    _error(
                        message.get("id"),
                        -32600,
                        f"Invalid Request: {method} before initialize; start the session "
                        "with initialize (or with a 2026-07-28 request carrying _meta)",
                    )
                )
        else:
            self._forward(line, [message])

    def _on_batch(self, line: bytes, items: list[Any]) -> None:
        state = self.state
        if (
            not items
            or state.era is None
            or (state.era == "legacy" and not state.answered_initialize)
        ):
            self.write(
                _error(
                    None,
                    -32600,
                    "Invalid Request: a batch must hold messages, and cannot start a session "
                    "(send initialize on its own first)",
                )
            )
            return
        self._forward(line, [m for m in items if isinstance(m, dict)])

    def _initialize(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        params = message.get("params")
        state = self.state
        if state.era == "modern":
            requested = params.get("protocolVersion") if isinstance(params, dict) else None
            self.write(
                _error(
                    request_id,
                    wire.UNSUPPORTED_VERSION,
                    "this session speaks 2026-07-28, which has no initialize handshake",
                    {"supported": list(wire.MODERN_VERSIONS), "requested": str(requested)},
                )
            )
            return
        if state.answered_initialize:
            self.write(_error(request_id, -32600, "Invalid Request: already initialized"))
            return
        if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), str):
            self.write(
                _error(
                    request_id,
                    -32602,
                    'initialize needs params with "protocolVersion", "capabilities" and '
                    '"clientInfo"',
                )
            )
            return
        capabilities = params.get("capabilities")
        info = params.get("clientInfo")
        state.version = wire.negotiate_legacy(params["protocolVersion"])
        state.client_capabilities = capabilities if isinstance(capabilities, dict) else {}
        state.client_info = info if isinstance(info, dict) else None
        state.answered_initialize = True
        result = wire.initialize_result(
            state.version, profile=self.options.profile, tools=self.options.tools
        )
        self.write(_response(request_id, result))

    def _discover(self, message: dict[str, Any]) -> None:
        envelope = wire.check_envelope(message.get("params"))
        if isinstance(envelope, dict):
            self.write(encode_frame({"jsonrpc": "2.0", "id": message.get("id"), "error": envelope}))
            return
        result = wire.discover_result(profile=self.options.profile, tools=self.options.tools)
        self.write(_response(message.get("id"), result))

    def _forward(self, line: bytes, messages: list[dict[str, Any]]) -> None:
        """Sends ``line`` to kamid, remembering its requests and what they change."""
        requests: list[int | str] = []
        state = self.state
        with self._lock:
            for message in messages:
                method = message.get("method")
                params = message.get("params")
                params = params if isinstance(params, dict) else {}
                request_id = _request_id(message)
                if "id" in message and request_id is not None:
                    requests.append(request_id)
                    self._pending.add(request_id)
                if method == "notifications/initialized":
                    state.initialized = True
                elif method == "notifications/cancelled":
                    cancelled = params.get("requestId")
                    if isinstance(cancelled, (int, str)):
                        self._pending.discard(cancelled)
                        state.listens.pop(cancelled, None)
                elif method == "logging/setLevel" and params.get("level") in wire.LOG_LEVELS:
                    state.log_level = params["level"]
                elif method == "resources/subscribe" and isinstance(params.get("uri"), str):
                    state.resource_subscriptions.add(params["uri"])
                elif method == "resources/unsubscribe":
                    state.resource_subscriptions.discard(str(params.get("uri")))
                elif method == "subscriptions/listen" and request_id is not None:
                    notifications = params.get("notifications")
                    if isinstance(notifications, dict):
                        state.listens[request_id] = notifications
        try:
            self.link.send(line)
        except KamiError as exc:
            with self._lock:
                for request_id in requests:
                    self._pending.discard(request_id)
                    state.listens.pop(request_id, None)
            failures = [_error(r, exc.code, exc.message, exc.data or None) for r in requests]
            if len(messages) > 1 or line.lstrip().startswith(b"["):
                if failures:
                    self.write(b"[" + b",".join(f.rstrip(b"\n") for f in failures) + b"]\n")
            elif failures:
                self.write(failures[0])

    # From kamid.
    def on_daemon_line(self, line: bytes) -> None:
        if line.startswith(_NOTIFICATION_PREFIX):
            answered: list[Any] = []
        elif match := _ANSWER_PREFIX.match(line):
            # The daemon writes "jsonrpc" then "id" first: no need to parse a large result.
            answered = [json.loads(match[1])]
        else:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("kamid sent something that is not JSON; dropped")
                return
            messages = message if isinstance(message, list) else [message]
            answered = [m.get("id") for m in messages if isinstance(m, dict) and "method" not in m]
        if answered:
            with self._lock:
                for request_id in answered:
                    if isinstance(request_id, (int, str)):
                        self._pending.discard(request_id)
                        self.state.listens.pop(request_id, None)
        self.write(line + b"\n")
        with self._answered:
            self._answered.notify_all()

    def on_disconnect(self) -> None:
        """kamid went away: answer what was in flight; listen streams carry over."""
        with self._lock:
            lost = [r for r in self._pending if r not in self.state.listens]
            for request_id in lost:
                self._pending.discard(request_id)
        for request_id in lost:
            self.write(
                _error(
                    request_id,
                    UNREACHABLE,
                    "kamid stopped while this request was in flight, so it may or may not "
                    "have run; send it again (kamictl mcp reconnects by itself)",
                )
            )
        with self._answered:
            self._answered.notify_all()

    def attach_params(self, *, resumed: bool) -> dict[str, Any]:
        with self._lock:
            state = self.state
            info = state.client_info or {}
            name = info.get("name")
            params: dict[str, Any] = {
                "era": state.era,
                "protocol_version": state.version,
                "client_info": state.client_info,
                "client_capabilities": state.client_capabilities,
                "initialized": state.initialized,
                "log_level": state.log_level,
                "resource_subscriptions": sorted(state.resource_subscriptions),
                # Streams to carry over; on a first attach the listen request follows it.
                "listens": [
                    {"id": i, "notifications": n} for i, n in state.listens.items() if resumed
                ],
                "profile": self.options.profile,
                "tools": self.options.tools,
                "resumed": resumed,
                "client_name": str(name) if name else None,
                "max_in_flight": self.options.max_in_flight,
                "max_result_bytes": self.options.max_result_bytes,
            }
        return params


def _stdin_lines(max_frame: Any) -> Iterator[bytes | None]:
    """Lines from fd 0 (without newlines, blank ones skipped); None for one that was over
    ``max_frame()`` bytes and was skipped. Ends at EOF."""
    buf = bytearray()
    skipping = False
    while True:
        try:
            data = os.read(0, 1 << 16)
        except InterruptedError:
            continue
        if not data:
            # A last message without its newline still counts.
            line = bytes(buf).strip()
            if line and not skipping:
                yield line
            return
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                if not skipping:
                    buf += data[start:]
                    if len(buf) > max_frame():
                        buf.clear()
                        skipping = True
                break
            if skipping:
                skipping = False
                yield None
            else:
                buf += data[start:nl]
                line = bytes(buf).strip()
                buf.clear()
                if len(line) > max_frame():
                    yield None
                elif line:
                    yield line
            start = nl + 1
