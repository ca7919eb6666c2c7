"""Talking to a service manager without libsystemd: socket activation and sd_notify.

Socket activation (``sd_listen_fds``): systemd passes the listening socket as fd 3 and
says so in ``LISTEN_FDS`` and ``LISTEN_PID``. kamid then serves that socket instead of
binding its own, so the socket exists before kamid does and survives its restarts.

Readiness (``sd_notify``): with ``Type=notify`` systemd waits for ``READY=1`` on the
datagram socket named by ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace). kamid also sends ``STATUS=`` lines, ``RELOADING=1`` around a SIGHUP reload,
``STOPPING=1`` when it starts draining, and ``WATCHDOG=1`` when ``WatchdogSec=`` is set.

Both read their variables once and remove them from the environment, as
``sd_listen_fds(1)`` and ``sd_notify(1, ...)`` do, so child processes never mistake them
for their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

import trio

from kamid.protocol import KamiError

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["SD_LISTEN_FDS_START", "Notifier", "listen_socket"]

log = logging.getLogger("kamid.systemd")

#: The first passed file descriptor (after stdin, stdout, stderr).
SD_LISTEN_FDS_START = 3


def listen_socket(environ: MutableMapping[str, str] | None = None) -> socket.socket | None:
    """The listening socket systemd passed, or None when kamid was not socket-activated.

    Raises:
        KamiError: ``LISTEN_FDS`` is set for this process but is not exactly one
            listening ``AF_UNIX`` stream socket; the message says how to fix the unit.
    """
    env = os.environ if environ is None else environ
    count = env.pop("LISTEN_FDS", None)
    pid = env.pop("LISTEN_PID", None)
    names = env.pop("LISTEN_FDNAMES", None)
    if count is None:
        return None
    if pid is not None and pid.strip() != str(os.getpid()):
        # Meant for another process (we inherited it): ignore, as sd_listen_fds does.
        log.warning(
            "LISTEN_PID=%s is not this process (%d); binding our own socket", pid, os.getpid()
        )
        return None
    try:
        n = int(count)
    except ValueError:
        raise KamiError(f"LISTEN_FDS={count!r} is not a number of file descriptors") from None
    if n == 0:
        return None
    if n != 1:
        raise KamiError(
            f"systemd passed {n} sockets (LISTEN_FDNAMES={names or '?'}); kamid serves exactly "
            "one: give kamid.socket a single ListenStream= line"
        )
    fd = SD_LISTEN_FDS_START
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise KamiError(f"LISTEN_FDS=1 but fd {fd} is not a socket: {exc}") from exc
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not accepting:
            raise KamiError(
                f"the socket systemd passed (fd {fd}) is {sock.family.name} "
                f"{sock.type.name}{'' if accepting else ', not listening'}; kamid needs a "
                "listening Unix stream socket: use ListenStream=%t/kami/kamid.sock in "
                "kamid.socket"
            )
    except BaseException:
        sock.detach()  # not ours to close: report, and leave the fd as it was
        raise
    sock.set_inheritable(False)
    return sock


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends ``sd_notify`` messages; does nothing when ``NOTIFY_SOCKET`` is not set.

    A message that cannot be sent is logged once and otherwise ignored: the service
    manager going away must not take the daemon with it.
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None)
        watchdog_usec = env.pop("WATCHDOG_USEC", None)
        watchdog_pid = env.pop("WATCHDOG_PID", None)
        self.address: str | None = None
        if address and (address.startswith(("/", "@"))):
            self.address = "\0" + address[1:] if address.startswith("@") else address
        elif address:
            log.warning("NOTIFY_SOCKET=%r is not a Unix socket address; not notifying", address)
        self.watchdog_s: float | None = None
        if watchdog_usec and (watchdog_pid is None or watchdog_pid == str(os.getpid())):
            with contextlib.suppress(ValueError):
                self.watchdog_s = int(watchdog_usec) / 1e6 or None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Sends ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager (%s): %s", self.address, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def reloading(self) -> None:
        self.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}", "STATUS=reloading")

    def stopping(self, status: str = "draining in-flight calls") -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    async def run_watchdog(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Pings ``WATCHDOG=1`` at half the ``WatchdogSec=`` period until cancelled.

        A trio loop that stops running stops the pings, and systemd restarts kamid.
        """
        task_status.started()
        if self.watchdog_s is None or self.address is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(self.watchdog_s / 2)
