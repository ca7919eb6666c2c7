"""The ``kamictl mcp`` shim's connection to kamid: connect, start kamid, attach, read.

One lock serializes connecting; whoever needs the connection waits for it. A request may
start kamid (as ``kamictl exec`` does); after a disconnect the reader thread only waits for
kamid to come back (an operator who stopped it may mean it) and attaches again at once, so
that change notifications keep flowing to an idle client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from kamid.protocol import (
    DEFAULT_MAX_FRAME,
    DaemonUnreachable,
    FrameTooLarge,
    KamiError,
    LineBuffer,
    encode_frame,
    error_from_wire,
    make_request,
)

if TYPE_CHECKING:
    from kamictl.mcp import Shim

__all__ = ["Link"]

log = logging.getLogger("kamictl.mcp")

_ATTACH_ID = "kamictl-mcp-attach"


class Link:
    """The connection to kamid: connects (starting kamid when allowed), attaches, reads.

    One lock serializes connecting; whoever needs the connection waits for it. After a
    disconnect the reader thread reconnects at once, so that change notifications keep
    flowing to an idle client.
    """

    def __init__(self, shim: Shim) -> None:
        self.shim = shim
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._attached = False
        self._ever_attached = False
        self._closed = False

    def close(self) -> None:
        self._closed = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def warm_up(self) -> None:
        """Connects early (starting kamid if needed) so the first call does not wait."""
        with self._lock:
            if self._sock is None and not self._closed:
                try:
                    self._sock = self._connect(
                        time.monotonic() + self.shim.options.connect_timeout_s
                    )
                except KamiError as exc:
                    log.warning("%s", exc.message)

    def send(self, data: bytes) -> None:
        """Sends one line to the attached session.

        Raises:
            KamiError: kamid could not be reached within the connect timeout, or refused the
                session (an unknown profile, say).
        """
        sock = self._ensure(time.monotonic() + self.shim.options.connect_timeout_s)
        try:
            sock.sendall(data + b"\n")
        except OSError:
            # The reader thread sees the same break and answers what was in flight.
            self._dropped(sock)

    def _ensure(self, deadline: float, *, autostart: bool = True) -> socket.socket:
        """The attached connection: connects and attaches until ``deadline`` if needed.

        Raises:
            DaemonUnreachable: no kamid by ``deadline`` (a deadline in the past: one try).
            KamiError: kamid refused the session.
        """
        delay = 0.05
        with self._lock:
            while True:
                if self._closed:
                    raise DaemonUnreachable("kamictl mcp is shutting down")
                if self._sock is not None and self._attached:
                    return self._sock
                try:
                    if self._sock is None:
                        self._sock = self._connect(deadline, autostart=autostart)
                    self._attach(self._sock)
                    return self._sock
                except DaemonUnreachable:
                    self._reset()
                    if time.monotonic() + delay > deadline:
                        raise
                except KamiError:
                    self._reset()
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._attached = False

    def _connect(self, deadline: float, *, autostart: bool = True) -> socket.socket:
        """A connected socket; starts kamid when allowed and nothing answers."""
        from kamictl.client import start_daemon

        path = os.fspath(self.shim.paths.socket)
        started = False
        delay = 0.05
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if not (autostart and self.shim.options.autostart):
                    if time.monotonic() + delay > deadline:
                        raise DaemonUnreachable(
                            f"no kamid is running on {path}; start it with `kamictl daemon "
                            "start` (or drop --no-autostart)"
                        ) from exc
                elif not started or time.monotonic() + delay > deadline:
                    # Also after a failed start: the previous kamid may have been draining.
                    start_daemon(self.shim.paths)
                    started = True
            except OSError as exc:
                sock.close()
                raise DaemonUnreachable(f"cannot connect to {path}: {exc}") from exc
            if time.monotonic() > deadline:
                raise DaemonUnreachable(f"kamid does not answer on {path}")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _attach(self, sock: socket.socket) -> None:
        """Turns the connection into this agent's MCP session and starts reading it."""
        resumed = self._ever_attached
        params = self.shim.attach_params(resumed=resumed)
        buffer = LineBuffer(DEFAULT_MAX_FRAME)
        lines: list[bytes] = []
        try:
            sock.settimeout(30.0)
            sock.sendall(encode_frame(make_request(_ATTACH_ID, "mcp.attach", params)))
            answer: dict[str, Any] | None = None
            while answer is None:
                data = sock.recv(1 << 16)
                if not data:
                    raise DaemonUnreachable("kamid closed the connection while attaching")
                lines.extend(buffer.feed(data))
                while lines and answer is None:
                    message = json.loads(lines.pop(0))
                    # The answer to the attach, or kamid refusing the connection (id null).
                    if (
                        isinstance(message, dict)
                        and "method" not in message
                        and message.get("id") in (_ATTACH_ID, None)
                    ):
                        answer = message
            sock.settimeout(None)
        except (OSError, ValueError, FrameTooLarge) as exc:
            raise DaemonUnreachable(f"could not attach to kamid: {exc}") from exc
        if "error" in answer:
            error = error_from_wire(answer["error"])
            if answer.get("id") is None:
                # Not an answer: kamid closed this connection (idle, draining, too many).
                raise DaemonUnreachable(f"kamid refused the connection: {error.message}")
            raise error
        result = answer.get("result") or {}
        self.shim.max_frame = int(result.get("max_frame_bytes") or DEFAULT_MAX_FRAME)
        self._attached = True
        self._ever_attached = True
        log.info("attached to kamid as %s", result.get("session"))
        threading.Thread(
            target=self._read, args=(sock, buffer, lines), name="kamid-reader", daemon=True
        ).start()

    def _read(self, sock: socket.socket, buffer: LineBuffer, lines: list[bytes]) -> None:
        shim = self.shim
        try:
            for line in lines:
                shim.on_daemon_line(line)
            while True:
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    break
                try:
                    chunk = buffer.feed(data)
                except FrameTooLarge:
                    log.warning("kamid sent a message over the frame limit; reconnecting")
                    break
                for line in chunk:
                    shim.on_daemon_line(line)
        finally:
            self._dropped(sock)
        self._reconnect()

    def _dropped(self, sock: socket.socket) -> None:
        with self._lock:
            if self._sock is not sock:
                return  # already handled
            self._reset()
        if not self._closed:
            log.warning("lost the connection to kamid; reconnecting")
            self.shim.on_disconnect()

    def _reconnect(self) -> None:
        """Attaches again as soon as kamid is back, so notifications keep flowing to an idle
        client. It does not start kamid itself (an operator who stopped it may mean it): the
        next request does, as the first one did. Gives up when stdin closes or kamid
        refuses the session (the next request then tries again)."""
        delay = 0.05
        while not self._closed:
            try:
                self._ensure(time.monotonic(), autostart=False)
                return
            except DaemonUnreachable:
                pass
            except KamiError as exc:
                log.error("kamid refused the session: %s", exc.message)
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
