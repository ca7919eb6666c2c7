"""Drives ``kamictl mcp`` over its stdin/stdout by hand, one JSON-RPC line at a time."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from tests.conftest import daemon_env

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MODERN_META", "Shim", "modern"]

#: The per-request envelope of a 2026-07-28 request.
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def modern(params: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    """``params`` with the 2026-07-28 envelope (and extra ``_meta`` keys) added."""
    return {**(params or {}), "_meta": {**MODERN_META, **meta}}


class Shim:
    """A ``kamictl mcp`` child process on ``home``; notifications are kept aside."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  # closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kamictl", "mcp", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={**daemon_env(home), **(env or {})},
        )
        self.notifications: list[dict[str, Any]] = []
        self._buf = bytearray()
        self._ids = itertools.count(1)

    def __enter__(self) -> Shim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def recv(self, timeout: float = 60.0) -> Any:
        """The next line from stdout, parsed; fails the test if none comes in time."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no message from kamictl mcp in {timeout} s:\n{self.log()}")
            data = os.read(fd, 1 << 16)
            if not data:
                raise AssertionError(f"kamictl mcp closed stdout:\n{self.log()}")
            self._buf += data
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf[:] = rest
        return json.loads(line)

    def start(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Sends a request without waiting; returns its id."""
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return request_id

    def wait(self, request_id: Any, timeout: float = 60.0) -> dict[str, Any]:
        """The answer to ``request_id``; notifications on the way go to ``notifications``."""
        while True:
            message = self.recv(timeout)
            if isinstance(message, dict) and "method" in message and "id" not in message:
                self.notifications.append(message)
                continue
            assert isinstance(message, dict), message
            if message.get("id") == request_id:
                return message
            raise AssertionError(f"expected the answer to {request_id!r}, got {message}")

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.wait(self.start(method, params))

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``result`` of a request that must succeed."""
        answer = self.request(method, params)
        assert "result" in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    def initialize(self, version: str = "2025-11-25") -> dict[str, Any]:
        result = self.call(
            "initialize",
            {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "kami-tests", "version": "1"},
            },
        )
        self.notify("notifications/initialized")
        return result

    def notification(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next notification named ``method`` (others are kept)."""
        for i, message in enumerate(self.notifications):
            if message.get("method") == method:
                return self.notifications.pop(i)
        while True:
            message = self.recv(timeout)
            if message.get("method") == method:
                assert isinstance(message, dict)
                return message
            self.notifications.append(message)

    def close(self, timeout: float = 30.0) -> int:
        """Closes stdin and waits for the process; returns its exit status."""
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr.close()
        return code
