"""``kamictl metrics``, ``kamictl status [--watch]`` and ``kamictl daemon install-service``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kamid.protocol import DaemonUnreachable, KamiError, Paths

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "add_install_service_arguments",
    "add_status_arguments",
    "install_service",
    "register",
    "status",
]


def register(add: Callable[..., Any]) -> None:
    add("metrics", cmd_metrics, "print kamid's metrics (Prometheus text format)")


def cmd_metrics(args: argparse.Namespace) -> int:
    from kamictl.cli import client_for, print_json

    with client_for(args) as client:
        result = client.call("metrics.get")
    if args.json:
        print_json(result)
    else:
        sys.stdout.write(result["text"])
    return 0


# status
def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch", "-w", action="store_true", help="refresh the dashboard until Ctrl-C"
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes with --watch (default 2)",
    )


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"--interval must be 0.1 to 3600 seconds (got {text!r})")
    return value


def _fetch(client: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    status: dict[str, Any] = client.call("daemon.status")
    tools: list[dict[str, Any]] = client.call("tools.list")["tools"]
    return status, tools


def status(args: argparse.Namespace) -> int:
    """``kamictl status``: the dashboard once, or refreshed every ``--interval`` seconds."""
    from kamictl import _dashboard
    from kamictl.cli import client_for, print_json

    if not getattr(args, "watch", False):
        with client_for(args) as client:
            state, tools = _fetch(client)
        if args.json:
            print_json({"daemon": state, "tools": tools})
        else:
            _dashboard.show(state, tools)
        return 0
    if args.json:
        from kamictl.cli import UsageError

        raise UsageError("--watch shows a live dashboard; leave out --json (or --watch)")
    client = client_for(args)

    def fetch() -> Any:
        try:
            return _fetch(client)
        except DaemonUnreachable as exc:
            client.close()  # reconnect on the next refresh
            return exc
        except KamiError as exc:
            return exc

    try:
        return _dashboard.watch(fetch, args.interval)
    finally:
        client.close()


# daemon install-service
def install_service(args: argparse.Namespace) -> int:
    """Writes the unit files or launchd agent for this user and prints how to enable it."""
    from kamictl import _render, _units

    manager = args.manager or ("launchd" if sys.platform == "darwin" else "systemd")
    paths = Paths.from_env()
    kami_home = os.environ.get("KAMI_HOME") or None
    spec = _units.spec_for(paths, kami_home=kami_home)
    if manager == "systemd":
        dest = Path(args.dest) if args.dest else _config_home() / "systemd" / "user"
        files = {
            _units.SERVICE_NAME: _units.systemd_service(spec).encode(),
            _units.SOCKET_NAME: _units.systemd_socket(spec).encode(),
        }
    else:
        dest = Path(args.dest) if args.dest else Path.home() / "Library" / "LaunchAgents"
        files = {_units.PLIST_NAME: _units.launchd_plist(spec)}
    dest = dest.expanduser().absolute()
    conflicts = [
        dest / name
        for name, content in files.items()
        if (dest / name).exists() and (dest / name).read_bytes() != content
    ]
    if conflicts and not args.force:
        from kamictl.cli import UsageError

        raise UsageError(
            f"{', '.join(map(str, conflicts))} already exist with other content; "
            "compare them and rerun with --force to replace them"
        )
    # The unit makes these writable, and systemd refuses to start if one is missing.
    for directory in spec.writable if manager == "systemd" else (paths.logs,):
        Path(directory).mkdir(parents=True, exist_ok=True, mode=0o700)
    dest.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = dest / name
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(content)
        tmp.replace(target)
        _render.note(f"wrote {target}")
    if args.json:
        from kamictl.cli import print_json

        print_json({"manager": manager, "files": [str(dest / n) for n in files]})
        return 0
    sys.stdout.write(_next_steps(manager, dest, paths))
    return 0


def _config_home() -> Path:
    value = os.environ.get("XDG_CONFIG_HOME")
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".config"


def _next_steps(manager: str, dest: Path, paths: Paths) -> str:
    if manager == "systemd":
        return f"""
Next (a kamid started by kamictl must stop first: `kamictl daemon stop`):
  systemctl --user daemon-reload
  systemctl --user enable --now kamid.socket    # start kamid on the first connection
  systemctl --user enable --now kamid.service   # or: start it now and at every login
  loginctl enable-linger "$USER"                # keep it running while you are logged out
Then:
  systemctl --user status kamid                 # state, and kamid's own STATUS line
  systemctl --user reload kamid                 # re-read {paths.config_file} (SIGHUP)
  journalctl --user -u kamid -f                 # its log
"""
    plist = dest / "dev.kami.kamid.plist"
    return f"""
Next (a kamid started by kamictl must stop first: `kamictl daemon stop`):
  launchctl bootstrap gui/$(id -u) {plist}
  launchctl kickstart -k gui/$(id -u)/dev.kami.kamid     # restart it
  launchctl kill SIGHUP gui/$(id -u)/dev.kami.kamid      # re-read {paths.config_file}
  launchctl bootout gui/$(id -u)/dev.kami.kamid          # stop and unload it
"""


def add_install_service_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--systemd",
        dest="manager",
        action="store_const",
        const="systemd",
        help="install-service: write systemd user units (the default on Linux)",
    )
    group.add_argument(
        "--launchd",
        dest="manager",
        action="store_const",
        const="launchd",
        help="install-service: write a launchd agent (the default on macOS)",
    )
    parser.add_argument(
        "--dest", metavar="DIR", help="install-service: write the files here instead"
    )
    parser.add_argument(
        "--force", action="store_true", help="install-service: replace files that differ"
    )
