"""``kamid``: start-up, the single-instance lock, logging, signals, and the task tree.

``kamid --foreground`` serves in this process and logs to the file and stderr. Plain
``kamid`` starts a detached copy of itself and returns once it is ready to answer, which is
what ``kamictl`` does when it finds no daemon.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import logging
import os
import select
import subprocess
import sys
import time
from typing import IO, TYPE_CHECKING

import attrs
import trio

from kamid import __version__
from kamid.config import DaemonConfig, load_config
from kamid.protocol import MAX_SOCKET_PATH, KamiError, Paths
from kamid.tuning import tuned_environ

if TYPE_CHECKING:
    from collections.abc import Callable
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


def _setup_logging(paths: Paths, *, to_stderr: bool, level: str, fmt: str = "human") -> None:
    from kamid.logs import formatter

    paths.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    handlers: list[logging.Handler] = [logging.FileHandler(paths.daemon_log, encoding="utf-8")]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=handlers, force=True)


async def serve_daemon(
    paths: Paths,
    config: DaemonConfig,
    *,
    overrides: Callable[[DaemonConfig], DaemonConfig] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Opens the store and engine, serves the socket, and returns after a drained stop.

    Started means the socket accepts connections. SIGTERM, SIGINT and ``daemon.stop`` all
    stop it the same way: stop accepting, let in-flight calls finish under
    ``[server].grace_s``, cancel what is left. SIGHUP reloads ``kamid.toml``
    (kamid/lifecycle.py); ``overrides`` (the command line) applies to every reload.
    Under systemd it serves the socket passed by socket activation and reports readiness.
    """
    from kamid.dispatch import Dispatcher
    from kamid.engine import Engine, Executor, Pooling
    from kamid.lifecycle import Supervisor
    from kamid.metrics_http import serve_metrics_http
    from kamid.server import Server, bind_unix_socket
    from kamid.service import KamiService
    from kamid.store import Store
    from kamid.systemd import Notifier, listen_socket

    notifier = Notifier()
    passed = listen_socket()  # the socket systemd made (socket activation), if any
    store = Store(paths)
    try:
        settings = config.engine
        engine = Engine(
            aot_dir=paths.aot,
            aot_index=store,
            lru_capacity=settings.lru_capacity,
            tick_ms=settings.tick_ms,
            pooling=Pooling.for_threads(
                settings.workers, keep_resident=settings.keep_resident_mb << 20
            )
            if settings.pooling
            else None,
        )
        executor = Executor(
            engine,
            workers=config.engine.workers,
            process_workers=config.engine.process_workers,
        )
        service = KamiService(
            paths=paths, config=config, store=store, engine=engine, executor=executor
        )
        if passed is not None:
            sock = trio.socket.from_stdlib_socket(passed)
            if (where := passed.getsockname()) != os.fspath(paths.socket):
                log.warning(
                    "systemd passed a socket on %r; clients look for %s", where, paths.socket
                )
        else:
            sock = bind_unix_socket(paths.socket)
        server = Server(sock, Dispatcher(service.handlers()), config.server)
        server.fast_lane = service  # the common tools.exec, without a trio task per call
        supervisor = Supervisor(
            paths=paths,
            service=service,
            server=server,
            notifier=notifier,
            overrides=overrides or (lambda c: c),
        )
        service.request_stop = supervisor.stop
        service.connections = lambda: server.connections
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            await nursery.start(service.inbox.run)
            await nursery.start(service.security.run)
            await nursery.start(supervisor.run)
            await nursery.start(notifier.run_watchdog)
            if config.metrics.listen:
                service.metrics_address = await nursery.start(
                    serve_metrics_http,
                    config.metrics.listen,
                    service.render_metrics,
                    lambda: not server.draining,
                )

            async def serve_then_cancel(
                *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
            ) -> None:
                await server.run(task_status=task_status)
                nursery.cancel_scope.cancel()

            await nursery.start(serve_then_cancel)
            paths.pid_file.write_text(f"{os.getpid()}\n")
            how = " (socket from systemd)" if passed is not None else ""
            log.info(
                "kamid %s serving on %s%s (pid %d)", __version__, paths.socket, how, os.getpid()
            )
            notifier.ready(f"serving {paths.socket}")
            task_status.started()
    finally:
        # A socket systemd made stays: it queues connections until kamid is back.
        leftovers = (paths.pid_file,) if passed is not None else (paths.socket, paths.pid_file)
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        store.close()
        log.info("kamid stopped")


def _spawn_detached(paths: Paths, level: str, extra: list[str] | None = None) -> int:
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
                *(extra or []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=tuned_environ(os.environ),  # so the child need not restart itself
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
    parser.add_argument(
        "--log-format",
        default="human",
        choices=["human", "json"],
        help="json: one JSON object per line (for journald, Loki, ...)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        type=_listen_address,
        help="serve /metrics, /health and /ready over HTTP here (overrides [metrics].listen)",
    )
    parser.add_argument("--version", action="version", version=f"kamid {__version__}")
    return parser.parse_args(argv)


def _listen_address(text: str) -> str:
    from kamid.metrics_http import parse_listen_address

    try:
        parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    paths = Paths.from_env()
    if len(os.fsencode(paths.socket)) > MAX_SOCKET_PATH:
        sys.stderr.write(
            f"kamid: socket path {paths.socket} is longer than {MAX_SOCKET_PATH} bytes, "
            "which Unix sockets cannot use; set KAMI_HOME to a shorter directory\n"
        )
        return 2
    passed_on = ["--log-format", args.log_format]
    if args.metrics_listen:
        passed_on += ["--metrics-listen", args.metrics_listen]
    if not args.foreground:
        return _spawn_detached(paths, args.log_level, passed_on)

    def overrides(config: DaemonConfig) -> DaemonConfig:
        if not args.metrics_listen:
            return config
        return attrs.evolve(
            config, metrics=attrs.evolve(config.metrics, listen=args.metrics_listen)
        )

    try:
        config = overrides(load_config(paths.config_file))
        lock = _acquire_lock(paths)
    except (KamiError, AlreadyRunning) as exc:
        sys.stderr.write(f"kamid: {exc}\n")
        return 1
    _setup_logging(paths, to_stderr=not args.quiet, level=args.log_level, fmt=args.log_format)
    ready_fd: int | None = args.ready_fd

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_daemon, overrides=overrides), paths, config)
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
