"""``kamictl``: build params, call kamid, render. Exit codes: 0 ok, 1 error from the daemon,
2 usage, 3 daemon unreachable.

Subcommand bodies import what they need when they run, so ``kamictl exec`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kamid.protocol import DaemonUnreachable, KamiError, Paths

if TYPE_CHECKING:
    from collections.abc import Callable

    from kamictl.client import Client

__all__ = ["COMMAND_MODULES", "main"]

#: Modules that add subcommands: each has ``register(add)`` where ``add(name, fn, help)``
#: creates a subparser (with --json/--no-autostart) and returns it. Keep their top-level
#: imports light (argparse-level): every kamictl invocation but exec and run imports them.
COMMAND_MODULES: tuple[str, ...] = (
    "kamictl._cmd_security",
    "kamictl._cmd_service",
    "kamictl._cmd_mcp",
    "kamictl._cmd_secret",
    "kamictl._cmd_registry",
    "kamictl._cmd_signing",
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    pass


class _NotExec(Exception):
    """The exec-only parser cannot take this command line; the whole parser will."""


class _ExecOnlyParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _NotExec(message)


def client_for(args: argparse.Namespace) -> Client:
    from kamictl.client import Client

    return Client(Paths.from_env(), autostart=not args.no_autostart)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _parse_input(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--input {text}: cannot read the file: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--input is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            """pass a JSON value, e.g. --input '{"text": "hi"}', or @file.json, or - for stdin"""
        ) from exc


# daemon
def cmd_daemon(args: argparse.Namespace) -> int:
    from kamictl import _render
    from kamictl.client import Client, start_daemon

    paths = Paths.from_env()
    if args.action == "install-service":
        from kamictl._cmd_service import install_service

        return install_service(args)
    if args.action == "start":
        status = _status_or_none(paths)
        if status is not None:
            _render.note(f"kamid is already running (pid {status['pid']}, {paths.socket})")
            return EXIT_OK
        start_daemon(paths)
        return EXIT_OK
    if args.action == "stop":
        return _stop_daemon(paths, args)
    with Client(paths, autostart=False) as client:
        status = client.call("daemon.status")
    if args.json:
        print_json(status)
    else:
        _render.daemon_status(status)
    return EXIT_OK


def _status_or_none(paths: Paths) -> dict[str, Any] | None:
    from kamictl.client import Client

    try:
        with Client(paths, autostart=False, timeout=10) as client:
            status: dict[str, Any] = client.call("daemon.status")
            return status
    except DaemonUnreachable:
        return None


def _stop_daemon(paths: Paths, args: argparse.Namespace) -> int:
    import time

    from kamictl import _render
    from kamictl.client import Client

    try:
        with Client(paths, autostart=False) as client:
            result = client.call("daemon.stop", {"grace_s": args.grace})
    except DaemonUnreachable:
        _render.note("kamid is not running")
        return EXIT_OK
    # The daemon removes its pid file (and its socket, unless systemd owns the socket) as
    # the very last thing it does.
    wait_s = (args.grace or 10.0) + 10.0
    deadline = time.monotonic() + wait_s
    while paths.pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if paths.pid_file.exists():
        _render.error(f"kamid did not stop within {wait_s:g} s; see {paths.daemon_log}")
        return EXIT_ERROR
    _render.note(f"kamid stopped ({result.get('in_flight', 0)} call(s) were in flight)")
    return EXIT_OK


# tools
def cmd_install(args: argparse.Namespace) -> int:
    from kamictl import _render
    from kamictl._cmd_registry import install_params, transfer_progress

    # A directory, a .kami file or URL, or a registry id[@range] (kamictl/_cmd_registry.py).
    source, title = install_params(args)
    params = {**source, "approve": args.yes, "progress_token": "install"}
    with client_for(args) as client, transfer_progress(f"Installing {title}") as update:
        try:
            result = client.call("tools.install", params, on_notify=update)
        except KamiError as exc:
            requested = exc.data.get("requested") if exc.data else None
            if not requested or args.yes or not sys.stdin.isatty():
                raise
            update("progress", {"message": "waiting for approval"})
            if not _render.approve(requested, exc.data.get("capabilities")):
                _render.error("not approved; nothing was installed")
                return EXIT_ERROR
            result = client.call("tools.install", {**params, "approve": True}, on_notify=update)
    if args.json:
        print_json(result)
    else:
        _render.installed(result)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from kamictl import _render

    with client_for(args) as client:
        result = client.call("tools.list")
    if args.json:
        print_json(result)
    else:
        _render.tool_list(result["tools"])
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from kamictl import _render

    with client_for(args) as client:
        result = client.call("tools.inspect", {"tool": args.tool})
    if args.json:
        print_json(result)
    else:
        _render.inspect(result)
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    from kamictl import _render

    with client_for(args) as client:
        result = client.call("tools.uninstall", {"tool": args.tool, "purge": args.purge})
    purged = " and deleted its sandbox directory" if result.get("purged") else ""
    _render.note(f"uninstalled {result['id']} {result['version']}{purged}")
    return EXIT_OK


def _exec(args: argparse.Namespace, method: str, params: dict[str, Any]) -> int:
    params["input"] = _parse_input(args.input)
    if method == "tools.exec":
        params["caller"] = {"client": "kamictl"}  # for the audit log
        if getattr(args, "batch", False):
            params["priority"] = "batch"
    if args.timeout_ms is not None:
        params["timeout_ms"] = args.timeout_ms
    with client_for(args) as client:
        result = client.call(method, params)
    print_json(result if args.json else result["output"])
    return EXIT_OK


def cmd_exec(args: argparse.Namespace) -> int:
    return _exec(args, "tools.exec", {"tool": args.tool})


def cmd_run(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser().resolve()
    return _exec(args, "wasm.run", {"path": str(path)})


def cmd_build(args: argparse.Namespace) -> int:
    from kamictl import _render
    from kamictl.build import build_tool

    tool_dir = Path(args.path).expanduser().resolve()
    with _render.progress(f"Building {tool_dir.name}") as update:
        result = build_tool(
            tool_dir, force=args.force, progress=lambda line: update("progress", {"message": line})
        )
    if result.skipped:
        _render.note(f"{result.wasm} is up to date (use --force to rebuild)")
    else:
        _render.note(f"built {result.wasm} ({result.size / 1e6:.1f} MB in {result.seconds:.1f} s)")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from kamictl._cmd_service import status

    return status(args)


def _parser(*, exec_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line, or only ``exec`` and ``run`` and no -h (see :func:`_parse`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the raw result"
    )
    common.add_argument(
        "--no-autostart",
        action="store_true",
        default=argparse.SUPPRESS,
        help="fail (exit 3) instead of starting kamid when it is not running",
    )
    parser = (_ExecOnlyParser if exec_only else argparse.ArgumentParser)(
        prog="kamictl",
        parents=[common],
        add_help=not exec_only,
        description="Control kamid: install, inspect and run sandboxed WebAssembly tools.",
        epilog="Exit codes: 0 ok, 1 error from the daemon, 2 usage, 3 daemon unreachable. "
        "KAMI_HOME relocates all state.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> Any:
        p = sub.add_parser(
            name, parents=[common], help=help_, description=help_, add_help=not exec_only
        )
        p.set_defaults(fn=fn)
        return p

    if not exec_only:
        from kamictl import _cmd_registry, _cmd_service

        p = add("daemon", cmd_daemon, "start, stop or show the daemon, or install it as a service")
        p.add_argument("action", choices=["start", "stop", "status", "install-service"])
        p.add_argument("--grace", type=float, help="seconds in-flight calls get when stopping")
        _cmd_service.add_install_service_arguments(p)
        p = add(
            "install", cmd_install, "install a tool: a directory, .kami file or URL, ID[@RANGE]"
        )
        p.add_argument(
            "path", help="tool directory, .kami package (path or URL), or registry id like id@^1.2"
        )
        p.add_argument("--yes", "-y", action="store_true", help="approve requested capabilities")
        _cmd_registry.add_install_arguments(p)
        add("list", cmd_list, "list installed tools")
        p = add("inspect", cmd_inspect, "show a tool's manifest, hash, grants and cache state")
        p.add_argument("tool", help="tool id or unique name")
        p = add("uninstall", cmd_uninstall, "remove a tool")
        p.add_argument("tool", help="tool id or unique name")
        p.add_argument(
            "--purge",
            action="store_true",
            help="also delete its persistent sandbox directory (/data)",
        )
    for name, fn, target, help_ in (
        ("exec", cmd_exec, "tool", "run an installed tool and print its JSON output"),
        ("run", cmd_run, "file", "run a component file once with deny-all grants"),
    ):
        p = add(name, fn, help_)
        p.add_argument(target)
        p.add_argument("--input", "-i", default="{}", help="JSON input, @file.json, or - for stdin")
        p.add_argument("--timeout-ms", type=int, help="lower the call's wall-clock deadline")
        if name == "exec":
            p.add_argument(
                "--batch",
                action="store_true",
                help="queue behind interactive calls when kamid is busy (scripts, pipelines)",
            )
    if exec_only:
        return parser
    p = add("build", cmd_build, "build a tool's component from source")
    p.add_argument("path", help="tool directory with a [build] section in tool.toml")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p = add("status", cmd_status, "dashboard: tools, calls/s, latency, queue, cache")
    _cmd_service.add_status_arguments(p)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(add)
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    # Building every command's parser (and importing their modules) is a sixth of a
    # `kamictl exec`'s start-up. A command line the exec-only parser accepts means the same
    # to the whole one; anything else, -h and every error included, goes to the whole one.
    if "exec" in argv or "run" in argv:
        try:
            return _parser(exec_only=True).parse_args(argv)
        except _NotExec:
            pass
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    args.json = getattr(args, "json", False)
    args.no_autostart = getattr(args, "no_autostart", False) or bool(
        os.environ.get("KAMI_NO_AUTOSTART")
    )
    try:
        code: int = args.fn(args)
        return code
    except UsageError as exc:
        sys.stderr.write(f"kamictl: {exc}\n")
        return EXIT_USAGE
    except DaemonUnreachable as exc:
        sys.stderr.write(f"kamictl: {exc.message}\n")
        return EXIT_UNREACHABLE
    except KamiError as exc:
        if args.json:
            from kamid.protocol import error_to_wire

            print_json({"error": error_to_wire(exc)})
        sys.stderr.write(f"kamictl: {exc.message}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
