"""A real ``kamid --foreground`` on a private temporary KAMI_HOME, timed from spawn to ready."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from kamictl.client import Client
from kamid.protocol import Paths

__all__ = ["BenchDaemon", "bench_env", "remove_home", "temp_home"]

#: How long a daemon may take to say it serves before the benchmark gives up.
START_TIMEOUT_S = 60.0


def temp_home(prefix: str = "kb") -> Path:
    """A fresh directory directly under /tmp: socket paths must stay under ~100 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def bench_env(home: Path, *, pycache: Path | None = None) -> dict[str, str]:
    """The environment of a child: this run's home, never the user's daemon.

    Args:
        home: the child's KAMI_HOME.
        pycache: where the child keeps bytecode (``PYTHONPYCACHEPREFIX``), so that its
            imports cost what they cost in an installed copy, even where
            ``PYTHONDONTWRITEBYTECODE`` is set or the tree is read-only; nothing is
            written next to the sources. None: the inherited environment decides.
    """
    env = dict(os.environ)
    env["KAMI_HOME"] = str(home)
    env.pop("KAMI_NO_AUTOSTART", None)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


class BenchDaemon:
    """One kamid child process on ``home``; restartable, and always stoppable.

    Readiness comes from kamid's own ``--ready-fd`` handshake (written once the socket
    accepts connections), so the start time is not rounded to a polling interval.

    Args:
        home: the KAMI_HOME this daemon owns (the caller creates and removes it).
        pycache: the bytecode cache of the daemon process (see :func:`bench_env`).
        source: the source tree whose ``kamid`` runs; None: whichever this
            interpreter imports. ``python -m`` puts the working directory first on
            ``sys.path``, ahead of ``PYTHONPATH``, so the daemon is started in that
            tree as well as given it on ``PYTHONPATH``.
    """

    def __init__(
        self, home: Path, *, pycache: Path | None = None, source: Path | None = None
    ) -> None:
        self.home = home
        self.source = source
        self.paths = Paths.under(home)
        self.env = bench_env(home, pycache=pycache)
        if source is not None:
            self.env["PYTHONPATH"] = str(source)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def stderr_path(self) -> Path:
        return self.home / "daemon.stderr"

    def start(self) -> int:
        """Spawns kamid and waits until it serves; returns the nanoseconds that took.

        Raises:
            RuntimeError: kamid exited or did not become ready; the message has its stderr.
        """
        if self.proc is not None:
            raise RuntimeError("this daemon is already running; stop it first")
        read_fd, write_fd = os.pipe()
        self._stderr = self.stderr_path.open("ab")
        argv = [sys.executable, "-m", "kamid", "--foreground", "--quiet"]
        started = time.perf_counter_ns()
        try:
            self.proc = subprocess.Popen(
                [*argv, "--ready-fd", str(write_fd)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(write_fd,),
                cwd=self.source,
            )
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, "rb") as ready:
            readable, _, _ = select.select([ready], [], [], START_TIMEOUT_S)
            line = ready.readline() if readable else b""
        elapsed = time.perf_counter_ns() - started
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError(f"kamid did not become ready:\n{self.log_tail()}")
        return elapsed

    def cpu_ns(self) -> int | None:
        """CPU time (user + system, all threads) the daemon has used so far; None where
        ``/proc`` does not say (not Linux) or when it is not running. 10 ms resolution."""
        if self.proc is None:
            return None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        # Fields after the parenthesized command name; utime and stime are 14th and 15th.
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")

    def client(self, *, timeout: float | None = 120.0) -> Client:
        """A new blocking connection to this daemon (never starts one)."""
        return Client(self.paths, autostart=False, timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a drained stop), then SIGKILL if it hangs. Safe to call at any time."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the daemon's log file and of its stderr, for error messages."""
        parts = []
        for path in (self.paths.daemon_log, self.stderr_path):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            parts.append(f"--- {path}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(no log, no stderr)"


def remove_home(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
