"""``kamid``: start-up, the single-instance lock, logging, signals, and the task tree.

``kamid --foreground`` serves in this process and logs to the file and stderr. Plain
``kamid`` starts a detached copy of itself and returns once it is ready to answer, which is
what ``kamictl`` does when it finds no daemon.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import time
from typing import IO, TYPE_CHECKING

import trio

from kamid import __version__
from kamid.config import DaemonConfig, load_config
from kamid.protocol import MAX_SOCKET_PATH, KamiError, Paths

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["main", "serve_daemon"]

log = logging.getLogger("kamid")

#: How long the launcher waits for a detached daemon to say it is ready.
START_TIMEOUT_S = 60.0


class AlreadyRunning(Exception):
    pass


def _acquire_lock(paths: Paths) -> IO[str]:
    """Takes the home's exclusive lock for the life of the process."""
    paths.run.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(paths.run, 0o700)
    lock = open(paths.lock_file, "a+", encoding="utf-8")  # noqa: SIM115  # held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        try:
            pid = paths.pid_file.read_text().strip() or "?"
        except OSError:
            pid = "?"
        raise AlreadyRunning(
            f"another kamid (pid {pid}) already serves {paths.socket}; "
            "stop it with `kamictl daemon stop`, or set KAMI_HOME to run a separate one"
        ) from None
    return lock


def _setup_logging(paths: Paths, *, to_stderr: bool, level: str) -> None:
    paths.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    handlers: list[logging.Handler] = [logging.FileHandler(paths.daemon_log, encoding="utf-8")]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


async def serve_daemon(
    paths: Paths,
    config: DaemonConfig,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Opens the store and engine, serves the socket, and returns after a drained stop.

    Started means the socket accepts connections. SIGTERM, SIGINT and ``daemon.stop`` all
    stop it the same way: stop accepting, let in-flight calls finish under
    ``[server].grace_s``, cancel what is left.
    """
    from kamid.dispatch import Dispatcher
    from kamid.engine import Engine, Executor
    from kamid.server import Server, bind_unix_socket
    from kamid.service import KamiService
    from kamid.store import Store

    store = Store(paths)
    try:
        engine = Engine(
            aot_dir=paths.aot,
            aot_index=store,
            lru_capacity=config.engine.lru_capacity,
            tick_ms=config.engine.tick_ms,
        )
        executor = Executor(engine, workers=config.engine.workers)
        service = KamiService(
            paths=paths, config=config, store=store, engine=engine, executor=executor
        )
        sock = bind_unix_socket(paths.socket)
        server = Server(sock, Dispatcher(service.handlers()), config.server)
        service.request_stop = server.stop
        service.connections = lambda: server.connections
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            nursery.start_soon(_stop_on_signals, server)

            async def serve_then_cancel(
                *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
            ) -> None:
                await server.run(task_status=task_status)
                nursery.cancel_scope.cancel()

            await nursery.start(serve_then_cancel)
            paths.pid_file.write_text(f"{os.getpid()}\n")
            log.info("kamid %s serving on %s (pid %d)", __version__, paths.socket, os.getpid())
            task_status.started()
    finally:
        for leftover in (paths.socket, paths.pid_file):
            leftover.unlink(missing_ok=True)
        store.close()
        log.info("kamid stopped")


async def _stop_on_signals(server: object) -> None:
    from kamid.server import Server

    assert isinstance(server, Server)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: stopping", signal.Signals(signum).name)
            server.stop()


def _spawn_detached(paths: Paths, level: str) -> int:
    """Starts ``kamid --foreground`` in its own session and waits until it serves."""
    paths.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    stderr_path = paths.logs / "kamid.stderr"
    read_fd, write_fd = os.pipe()
    with open(stderr_path, "ab") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kamid",
                "--foreground",
                "--quiet",
                "--log-level",
                level,
                "--ready-fd",
                str(write_fd),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    os.close(write_fd)
    deadline = time.monotonic() + START_TIMEOUT_S
    with os.fdopen(read_fd, "rb") as ready:
        # "ready" when serving; EOF when the child died first; nothing if it hangs.
        readable, _, _ = select.select([ready], [], [], START_TIMEOUT_S)
        line = ready.readline() if readable else b""
    if line.strip() == b"ready":
        sys.stderr.write(f"kamid started (pid {proc.pid}, socket {paths.socket})\n")
        return 0
    try:
        code: int | str = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        code = f"killed: not ready after {START_TIMEOUT_S:g} s"
    tail = _tail(stderr_path)
    sys.stderr.write(f"kamid failed to start (exit {code}):\n{tail}\n")
    return 1


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kamid", description="The KAMI daemon: runs sandboxed WebAssembly tools."
    )
    parser.add_argument(
        "--foreground", action="store_true", help="serve in this process, logging to stderr too"
    )
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--version", action="version", version=f"kamid {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    paths = Paths.from_env()
    if len(os.fsencode(paths.socket)) > MAX_SOCKET_PATH:
        sys.stderr.write(
            f"kamid: socket path {paths.socket} is longer than {MAX_SOCKET_PATH} bytes, "
            "which Unix sockets cannot use; set KAMI_HOME to a shorter directory\n"
        )
        return 2
    if not args.foreground:
        return _spawn_detached(paths, args.log_level)
    try:
        config = load_config(paths.config_file)
        lock = _acquire_lock(paths)
    except (KamiError, AlreadyRunning) as exc:
        sys.stderr.write(f"kamid: {exc}\n")
        return 1
    _setup_logging(paths, to_stderr=not args.quiet, level=args.log_level)
    ready_fd: int | None = args.ready_fd

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_daemon, paths, config)
            if ready_fd is not None:
                os.write(ready_fd, b"ready\n")
                os.close(ready_fd)

    try:
        trio.run(run)
    except KamiError as exc:
        log.error("%s", exc.message)
        return 1
    finally:
        lock.close()
    return 0
