"""A blocking JSON-RPC client for kamid's Unix socket, starting the daemon when needed."""

from __future__ import annotations

import itertools
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from kamid.protocol import (
    DEFAULT_MAX_FRAME,
    DaemonUnreachable,
    InternalError,
    KamiError,
    LineBuffer,
    Paths,
    decode_frame,
    encode_frame,
    error_from_wire,
    make_request,
)

__all__ = ["Client", "start_daemon"]

Notification = Callable[[str, Any], None]


def start_daemon(paths: Paths) -> None:
    """Runs ``kamid`` (which detaches and returns once serving).

    Raises:
        DaemonUnreachable: the daemon could not start; the message carries its reason.
    """
    import subprocess  # only here: every other call of a short-lived kamictl skips it

    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "kamid"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip()
        if "already serves" in reason:
            return  # another client started it first; that one is ours too
        raise DaemonUnreachable(f"could not start kamid: {reason}")


class Client:
    """One connection to kamid; requests are answered in order of the calls.

    Args:
        paths: where the daemon's socket is.
        autostart: start kamid when nothing answers on the socket.
        timeout: seconds to wait for any single answer (None: wait as long as it takes).
    """

    def __init__(
        self, paths: Paths | None = None, *, autostart: bool = True, timeout: float | None = None
    ) -> None:
        self.paths = paths or Paths.from_env()
        self.autostart = autostart
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = LineBuffer(DEFAULT_MAX_FRAME)
        self._pending: list[bytes] = []
        self._ids = itertools.count(1)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect_once(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(self.paths.socket))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.timeout)
        return sock

    def connect(self) -> socket.socket:
        """Connects, starting the daemon first if allowed and needed."""
        if self._sock is not None:
            return self._sock
        try:
            self._sock = self._connect_once()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if not self.autostart:
                raise DaemonUnreachable(
                    f"no kamid is running on {self.paths.socket}; start it with "
                    "`kamictl daemon start` (or drop --no-autostart)"
                ) from exc
            start_daemon(self.paths)
            self._sock = self._wait_connect(deadline=time.monotonic() + 10)
        except OSError as exc:
            raise DaemonUnreachable(f"cannot connect to {self.paths.socket}: {exc}") from exc
        return self._sock

    def _wait_connect(self, *, deadline: float) -> socket.socket:
        while True:
            try:
                return self._connect_once()
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() > deadline:
                    raise DaemonUnreachable(
                        f"kamid started but does not answer on {self.paths.socket}"
                    ) from exc
                time.sleep(0.05)

    def call(
        self, method: str, params: Any = None, *, on_notify: Notification | None = None
    ) -> Any:
        """Sends one request and returns its result.

        Raises:
            KamiError: the daemon's error, re-raised as the same subclass.
            DaemonUnreachable: no daemon, or the connection broke.
        """
        sock = self.connect()
        request_id = next(self._ids)
        try:
            sock.sendall(encode_frame(make_request(request_id, method, params or {})))
            while True:
                message = self._receive(sock)
                if "id" not in message:
                    if on_notify is not None:
                        on_notify(str(message.get("method")), message.get("params"))
                    continue
                if message.get("id") not in (request_id, None):
                    continue  # an answer to a request this client gave up on
                if "error" in message:
                    raise error_from_wire(message["error"])
                return message.get("result")
        except TimeoutError as exc:
            self.close()
            raise DaemonUnreachable(
                f"kamid did not answer {method} within {self.timeout} s"
            ) from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise DaemonUnreachable(f"kamid closed the connection during {method}") from exc

    def _receive(self, sock: socket.socket) -> dict[str, Any]:
        while not self._pending:
            data = sock.recv(1 << 16)
            if not data:
                self.close()
                raise DaemonUnreachable("kamid closed the connection (it may be stopping)")
            self._pending.extend(self._buffer.feed(data))
        message = decode_frame(self._pending.pop(0))
        if not isinstance(message, dict):
            raise InternalError(f"kamid sent something that is not a JSON object: {message!r}")
        return message


def is_running(paths: Paths) -> bool:
    """True when a daemon answers on the socket (never starts one)."""
    try:
        with Client(paths, autostart=False, timeout=5) as client:
            client.call("daemon.status")
    except KamiError:
        return False
    return True
