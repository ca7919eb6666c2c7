"""``kamictl grant``, ``revoke``, ``audit`` and ``limits``: the operator's commands.

Specs are parsed here into wire params; the daemon validates and canonicalizes them
(host paths are resolved against this process's directory first, since the daemon has
none of its own to resolve them against).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["parse_duration_or_time", "parse_fs", "parse_limit", "parse_net", "register"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FS_MODES = ("sandbox", "read-only")
_UNITS = {
    "": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _usage(message: str) -> Exception:
    from kamictl.cli import UsageError

    return UsageError(message)


def _host_path(raw: str) -> str:
    return os.path.abspath(os.path.expanduser(raw))


def parse_fs(spec: str) -> dict[str, Any]:
    """``sandbox`` / ``read-only`` -> ``{"fs": mode}``; ``HOST:GUEST[:ro|rw]`` -> a path grant."""
    if spec in _FS_MODES:
        return {"fs": spec}
    mode = "ro"
    rest = spec
    head, sep, tail = spec.rpartition(":")
    if sep and tail in ("ro", "rw"):
        mode, rest = tail, head
    host, sep, guest = rest.rpartition(":")
    if not sep or not host or not guest:
        raise _usage(
            f"--fs {spec}: expected sandbox, read-only or HOST:GUEST[:ro|rw], "
            "e.g. --fs ~/reports:/reports:ro"
        )
    return {"path": {"host_path": _host_path(host), "guest_path": guest, "mode": mode}}


def parse_net(spec: str) -> dict[str, Any]:
    """``HOST[:METHODS]`` -> a net grant; a trailing ``:GET,POST`` names methods, a port stays."""
    host, sep, tail = spec.rpartition(":")
    methods = [m.strip().upper() for m in tail.split(",")] if sep else []
    if sep and host and methods and all(m.isalpha() for m in methods):
        bad = [m for m in methods if m not in _METHODS]
        if bad:
            raise _usage(
                f"--net {spec}: unknown HTTP method(s) {', '.join(bad)}; use some of "
                f"{', '.join(sorted(_METHODS))}"
            )
        return {"host": host, "methods": methods}
    return {"host": spec, "methods": ["GET", "HEAD"]}


def parse_env(spec: str) -> tuple[str, str | None]:
    """``NAME=value`` (the operator's value) or ``NAME`` (kamid's own value)."""
    name, sep, value = spec.partition("=")
    return name, (value if sep else None)


def parse_limit(spec: str) -> tuple[str, int]:
    """``NAME=VALUE``; VALUE may use ``_`` and a binary unit (``512M``, ``2GiB``)."""
    name, sep, raw = spec.partition("=")
    match = re.fullmatch(r"\s*([0-9_]+)\s*([A-Za-z]*)\s*", raw) if sep else None
    unit = _UNITS.get(match[2].lower()) if match else None
    if not name or match is None or unit is None:
        raise _usage(
            f"--limit {spec}: expected NAME=VALUE, e.g. --limit memory_bytes=512M or "
            "--limit fuel=20_000_000_000"
        )
    return name.strip(), int(match[1].replace("_", "")) * unit


def parse_duration_or_time(text: str, *, now: float | None = None) -> float:
    """``--since``: ``10m``, ``2h``, ``7d`` ago, or an ISO date/time (local unless zoned)."""
    now = time.time() if now is None else now
    match = _DURATION.match(text.strip().lower())
    if match:
        return now - float(match[1]) * _SECONDS[match[2]]
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise _usage(
            f"--since {text}: expected a duration (30s, 10m, 2h, 7d, 1w) or an ISO time "
            "(2026-11-03 or 2026-11-03T14:00)"
        ) from None
    return moment.timestamp()


# Commands.


def cmd_grant(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"tool": args.tool}
    paths = []
    for spec in args.fs or []:
        parsed = parse_fs(spec)
        if "fs" in parsed:
            params["fs"] = parsed["fs"]
        else:
            paths.append(parsed["path"])
    if paths:
        params["paths"] = paths
    if args.env:
        params["env"] = dict(parse_env(spec) for spec in args.env)
    if args.net:
        params["net"] = [parse_net(spec) for spec in args.net]
    if args.kv:
        params["kv"] = True
    if args.invoke:
        params["invoke"] = args.invoke
    if args.limit:
        params["limits"] = dict(parse_limit(spec) for spec in args.limit)
    if len(params) == 1:
        raise _usage("grant what? give --fs, --env, --net, --kv, --invoke or --limit")
    return _change(args, "tools.grant", params)


def cmd_revoke(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"tool": args.tool}
    paths = []
    for spec in args.fs or []:
        if spec in _FS_MODES:
            params["fs"] = True
        elif spec.startswith("/") and ":" not in spec:
            paths.append(spec)  # a guest path, or a host path
        else:
            paths.append(parse_fs(spec)["path"]["guest_path"])
    if paths:
        params["paths"] = paths
    for key in ("env", "net", "invoke", "limit"):
        values = getattr(args, key)
        if values:
            params["limits" if key == "limit" else key] = values
    if args.kv:
        params["kv"] = True
    if args.all:
        params["all"] = True
    if len(params) == 1:
        raise _usage("revoke what? give --fs, --env, --net, --kv, --invoke, --limit or --all")
    return _change(args, "tools.revoke", params)


def _change(args: argparse.Namespace, method: str, params: dict[str, Any]) -> int:
    from kamictl import _render
    from kamictl.cli import EXIT_OK, client_for, print_json

    with client_for(args) as client:
        result = client.call(method, params)
    if args.json:
        print_json(result)
        return EXIT_OK
    verb = "granted" if method == "tools.grant" else "revoked"
    if not result["changed"]:
        _render.note(f"{result['tool']}: nothing changed (already {verb})")
    for line in result["changes"]:
        _render.note(f"{verb}: {line}")
    _render_grants(result["tool"], result["grants"])
    return EXIT_OK


def _render_grants(tool: str, grants: dict[str, Any]) -> None:
    from rich.table import Table

    from kamictl import _render

    table = Table("kind", "what", title=f"{tool} may now")
    rows: list[tuple[str, str]] = []
    rows += [("network", f"{n['host']} ({', '.join(n['methods'])})") for n in grants["net"]]
    if grants["fs"] != "none":
        where = "/data, read-write" if grants["fs"] == "sandbox" else "/assets, read-only"
        rows.append(("filesystem", f"{grants['fs']} ({where})"))
    rows += [
        ("path", f"{g['host_path']} at {g['guest_path']} ({g['mode']})") for g in grants["paths"]
    ]
    for name, value in grants["env"].items():
        rows.append(("environment", f"{name} ({'kamid' if value is None else 'operator'} value)"))
    if grants["kv"]:
        rows.append(("kv", "key-value store"))
    rows += [("invoke", t) for t in grants["invoke"]]
    rows += [("limit", f"{k} = {v}") for k, v in sorted(grants["limits"].items())]
    if not rows:
        _render.note(f"{tool} has no grants: no network, files or environment")
        return
    for row in rows:
        table.add_row(*row)
    _render.out.print(table)


def cmd_audit(args: argparse.Namespace) -> int:
    from kamictl.cli import EXIT_OK, client_for, print_json

    params: dict[str, Any] = {"limit": args.limit}
    if args.tool:
        params["tool"] = args.tool
    if args.since:
        params["since"] = parse_duration_or_time(args.since)
    with client_for(args) as client:
        result = client.call("audit.list", params)
    if args.json:
        print_json(result)
    else:
        _render_audit(result["entries"])
    return EXIT_OK


def _render_audit(entries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from kamictl import _render

    if not entries:
        _render.note("no audit entries match")
        return
    with_hosts = any(e["hosts"] for e in entries)
    columns = ["time", "action", "tool", "caller", "outcome", "usage", "input"]
    table = Table(*columns, *(["hosts"] if with_hosts else []))
    for e in reversed(entries):  # oldest first, like a log
        stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(e["time"]))
        tool = e["tool"] + (f"\n{e['version']}" if e["version"] else "")
        caller = f"uid {e['uid']}\npid {e['pid']}" if e["uid"] is not None else "-"
        who = "/".join(x for x in (e["client"], e["profile"]) if x)
        if who:
            caller += f"\n{_escape(who)}"
        outcome = e["outcome"] if e["outcome"] == "ok" else f"[red]{e['outcome']}[/red]"
        if e["error"]:
            cut = e["error"] if len(e["error"]) <= 80 else e["error"][:79] + "…"
            outcome += f"\n{_escape(cut)}"
        usage = e["usage"] or {}
        used = f"{usage['wall_ms']:.1f} ms\n{usage['fuel_consumed']:,} fuel" if usage else "-"
        row = [stamp, e["action"], tool, caller, outcome, used, (e["input_sha256"] or "-")[:12]]
        if with_hosts:
            row.append("\n".join(_escape(str(h)) for h in e["hosts"]) or "-")
        table.add_row(*row)
    _render.out.print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def cmd_limits(args: argparse.Namespace) -> int:
    from rich.table import Table

    from kamictl import _render
    from kamictl.cli import EXIT_OK, client_for, print_json

    params: dict[str, Any] = {}
    if args.set:
        params["limits"] = dict(parse_limit(spec) for spec in args.set)
    if args.ceiling:
        params["ceilings"] = dict(parse_limit(spec) for spec in args.ceiling)
    with client_for(args) as client:
        result = client.call("limits.set" if params else "limits.get", params)
    if args.json:
        print_json(result)
        return EXIT_OK
    for line in result["changes"]:
        _render.note(f"set {line} in {result['config_file']}")
    table = Table("limit", "default", "ceiling", title="limits of every call")
    for name, value in result["defaults"].items():
        table.add_row(name, f"{value:,}", f"{result['ceilings'][name]:,}")
    _render.out.print(table)
    return EXIT_OK


def register(add: Callable[..., Any]) -> None:
    p = add("grant", cmd_grant, "grant a tool filesystem, environment, network or limits")
    p.add_argument("tool", help="tool id or unique name")
    p.add_argument(
        "--fs",
        action="append",
        metavar="SPEC",
        help="sandbox, read-only, or HOST:GUEST[:ro|rw] to mount a host directory (ro default)",
    )
    p.add_argument(
        "--env",
        action="append",
        metavar="NAME[=VALUE]",
        help="pass a variable: NAME=value sets it, NAME alone passes kamid's own value",
    )
    p.add_argument(
        "--net",
        action="append",
        metavar="HOST[:METHODS]",
        help="allow kami:tool/http to HOST (api.example.com:GET,POST); GET,HEAD by default",
    )
    p.add_argument("--kv", action="store_true", help="give it its key-value store")
    p.add_argument("--invoke", action="append", metavar="TOOL", help="let it call TOOL")
    p.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="set a limit for this tool (memory_bytes=512M, fuel=20_000_000_000, ...)",
    )
    p = add("revoke", cmd_revoke, "take grants away from a tool")
    p.add_argument("tool", help="tool id or unique name")
    p.add_argument(
        "--fs",
        action="append",
        metavar="SPEC",
        help="sandbox or read-only (the mode), or a path grant by guest or host path",
    )
    p.add_argument("--env", action="append", metavar="NAME")
    p.add_argument("--net", action="append", metavar="HOST")
    p.add_argument("--kv", action="store_true")
    p.add_argument("--invoke", action="append", metavar="TOOL")
    p.add_argument("--limit", action="append", metavar="NAME", help="back to the daemon default")
    p.add_argument("--all", action="store_true", help="revoke everything (deny-all)")
    p = add("audit", cmd_audit, "show the audit log: execs, installs, grants, revokes")
    p.add_argument("--tool", help="only this tool (id or name)")
    p.add_argument("--since", help="a duration (10m, 2h, 7d) or an ISO time")
    p.add_argument("--limit", type=int, default=100, help="newest entries to show (100)")
    p = add("limits", cmd_limits, "show or change the daemon's default limits and ceilings")
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="change a default in kamid.toml (comments kept), applied at once",
    )
    p.add_argument("--ceiling", action="append", metavar="NAME=VALUE", help="change a ceiling")
