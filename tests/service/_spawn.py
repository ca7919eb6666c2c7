"""kamid started the ways a service manager starts it: with arguments, a passed socket
(systemd socket activation: fd 3, LISTEN_FDS, LISTEN_PID) and a notify socket."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from kamictl.client import Client
from kamid.protocol import Paths
from tests.conftest import daemon_env, poll_status

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["NotifySocket", "ServiceDaemon", "listening_socket"]

# What `sh -c 'LISTEN_PID=$$ exec kamid 3<&N'` would do, for any fd number N.
_ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


def listening_socket(path: Path) -> socket.socket:
    """What systemd makes for kamid.socket: a listening Unix socket in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


class NotifySocket:
    """The service manager's end of sd_notify, in the abstract namespace (``@name``)."""

    def __init__(self) -> None:
        self.name = f"kami-test-{secrets.token_hex(6)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.messages: list[dict[str, str]] = []

    @property
    def address(self) -> str:
        return "@" + self.name

    def wait_for(self, key: str, value: str | None = None, timeout: float = 60) -> dict[str, str]:
        """The next message carrying ``key`` (``=value``), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                raise AssertionError(
                    f"no {key}={value or '*'} within {timeout} s; got {self.messages}"
                ) from None
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)
            if key in fields and (value is None or fields[key] == value):
                return fields

    def close(self) -> None:
        self.sock.close()


class ServiceDaemon:
    """``kamid --foreground [args]`` as a child, optionally socket-activated and notifying."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.paths = Paths.under(home)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = home / "daemon.stderr"

    def write_config(self, text: str) -> None:
        self.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.paths.config_file.write_text(text)

    def spawn(
        self,
        *args: str,
        listen: socket.socket | None = None,
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        environ = {**daemon_env(self.home), **(env or {})}
        argv = [sys.executable, "-m", "kamid", "--foreground", *args]
        pass_fds: tuple[int, ...] = ()
        if notify is not None:
            environ["NOTIFY_SOCKET"] = notify.address
        if listen is not None:
            # As systemd does: the socket is fd 3, and LISTEN_PID is the pid of the process
            # that runs kamid, which only exists once forked: a wrapper moves the socket to
            # fd 3, sets LISTEN_PID to its own pid and execs kamid (exec keeps the pid).
            fd = listen.fileno()
            environ["LISTEN_FDS"] = "1"
            argv = [sys.executable, "-c", _ACTIVATE, str(fd), *argv]
            pass_fds = (fd,)
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(
                argv,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=pass_fds,
            )
        return self.proc

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"kamid exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(Exception), self.client(timeout=5) as client:
                client.call("daemon.status")
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"kamid did not start:\n{self.log()}")
            time.sleep(0.05)

    def client(self, *, timeout: float | None = 60.0) -> Client:
        return Client(self.paths, autostart=False, timeout=timeout)

    def call(self, method: str, params: Any = None) -> Any:
        with self.client() as client:
            return client.call(method, params)

    def wait_until(self, check: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        """Polls ``daemon.status`` until ``check(status)`` is true; returns that status."""
        return poll_status(self.call, check, what, timeout)

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
