"""``kamictl mcp``, ``kamictl mcp-config`` and ``kamictl profile``: agents over MCP."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["register"]


def _usage(message: str) -> Exception:
    from kamictl.cli import UsageError

    return UsageError(message)


def _tool_list(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    tools = [t.strip() for t in raw.split(",") if t.strip()]
    if not tools:
        raise _usage("--tools needs at least one tool id or name, e.g. --tools echo,hello")
    return tools


def cmd_mcp(args: argparse.Namespace) -> int:
    import logging
    import sys

    from kamictl.mcp import ShimOptions, guard_stdout, run_shim
    from kamid.protocol import Paths

    out = guard_stdout()  # before anything can print
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="kamictl mcp: %(levelname)s %(message)s",
    )
    if args.max_result_bytes < 1024:
        raise _usage(f"--max-result-bytes must be at least 1024 (got {args.max_result_bytes})")
    if not 1 <= args.max_in_flight <= 64:
        raise _usage(f"--max-in-flight must be 1-64 (got {args.max_in_flight})")
    options = ShimOptions(
        profile=args.profile,
        tools=_tool_list(args.tools),
        autostart=not args.no_autostart,
        max_result_bytes=args.max_result_bytes,
        max_in_flight=args.max_in_flight,
        connect_timeout_s=args.connect_timeout,
    )
    return run_shim(Paths.from_env(), options, out)


def cmd_mcp_config(args: argparse.Namespace) -> int:
    import sys

    from kamictl import _mcp_config as cfg
    from kamictl.cli import client_for, print_json

    tools = _tool_list(args.tools)
    if args.profile:
        with client_for(args) as client:
            names = [p["name"] for p in client.call("profiles.list")["profiles"]]
        if args.profile not in names:
            raise _usage(
                f'no profile "{args.profile}"; create it first with `kamictl profile create '
                f"{args.profile} --tools ...`"
            )
    name = args.name or (f"kami-{args.profile}" if args.profile else "kami")
    entry = cfg.server_entry(profile=args.profile, tools=tools)
    snippet = {"mcpServers": {name: entry}}
    if not args.write:
        print_json(snippet)
        path = cfg.config_path(args.client)
        sys.stderr.write(
            f"Merge this into {path} (or run again with --write), then restart the client.\n"
        )
        return 0
    path = cfg.config_path(args.client)
    try:
        action, backup = cfg.write_config(path, name, entry)
    except ValueError as exc:
        raise _usage(str(exc)) from exc
    except OSError as exc:
        raise _usage(f"cannot write {path}: {exc.strerror or exc}") from exc
    if args.json:
        result: dict[str, Any] = {"path": str(path), "action": action, "server": name}
        result["backup"] = str(backup) if backup else None
        print_json(result)
        return 0
    saved = f" (the old file is saved as {backup})" if backup else ""
    verb = {"created": "wrote", "updated": "updated", "unchanged": "already had"}[action]
    sys.stdout.write(f'{verb} MCP server "{name}" in {path}{saved}\n')
    if action != "unchanged":
        sys.stdout.write(f"restart {'Claude Desktop' if args.client == 'claude' else 'Cursor'}")
        sys.stdout.write(" to pick it up\n")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import sys

    from kamictl.cli import client_for, print_json

    with client_for(args) as client:
        if args.action == "create":
            if not args.name:
                raise _usage("profile create needs a NAME, e.g. kamictl profile create research")
            tools = _tool_list(args.tools)
            if not tools:
                raise _usage("profile create needs --tools ID,ID (tool ids or names)")
            params = {"name": args.name, "tools": tools, "replace": args.replace}
            result = client.call("profiles.create", params)
            if args.json:
                print_json(result)
            else:
                sys.stdout.write(f"profile {result['name']}: {', '.join(result['tools'])}\n")
                if result["missing"]:
                    sys.stdout.write(f"not installed yet: {', '.join(result['missing'])}\n")
                sys.stdout.write(f"use it with: kamictl mcp --profile {result['name']}\n")
            return 0
        if args.action == "delete":
            if not args.name:
                raise _usage("profile delete needs the NAME of a profile")
            result = client.call("profiles.delete", {"name": args.name})
            if args.json:
                print_json(result)
            else:
                note = f" ({result['sessions']} agent(s) using it now see no tools)"
                sys.stdout.write(
                    f"deleted profile {args.name}{note if result['sessions'] else ''}\n"
                )
            return 0
        result = client.call("profiles.list")
    if args.json:
        print_json(result)
        return 0
    _render_profiles(result["profiles"])
    return 0


def _render_profiles(profiles: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not profiles:
        console.print("no profiles; create one with `kamictl profile create NAME --tools a,b`")
        return
    table = Table("profile", "tools", "not installed", box=None)
    for p in profiles:
        table.add_row(p["name"], ", ".join(p["tools"]), ", ".join(p["missing"]) or "-")
    console.print(table)


def register(add: Callable[[str, Callable[[argparse.Namespace], int], str], Any]) -> None:
    p = add("mcp", cmd_mcp, "serve MCP on stdin/stdout for one agent (a pipe to kamid)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--profile", help="show the agent only this profile's tools")
    scope.add_argument("--tools", help="show the agent only these tools (ids or names, a,b)")
    p.add_argument(
        "--max-result-bytes",
        type=int,
        default=int(os.environ.get("KAMI_MCP_MAX_RESULT_BYTES", 1024 * 1024)),
        help="cut tool results larger than this, with a note (default 1 MiB)",
    )
    p.add_argument(
        "--max-in-flight", type=int, default=16, help="tool calls this agent may run at once"
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds a request waits for kamid to (re)start before failing (default 60)",
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p = add("mcp-config", cmd_mcp_config, "print or write an MCP client's entry for kamictl mcp")
    p.add_argument("--client", required=True, choices=["claude", "cursor"])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--profile", help="the agent sees only this profile's tools")
    scope.add_argument("--tools", help="the agent sees only these tools (a,b)")
    p.add_argument("--name", help='the server name in the client (default "kami[-PROFILE]")')
    p.add_argument(
        "--write", action="store_true", help="merge it into the client's config (backed up)"
    )
    p = add("profile", cmd_profile, "create, list or delete agent profiles (sets of tools)")
    p.add_argument("action", choices=["create", "list", "delete"])
    p.add_argument("name", nargs="?", help="profile name (create, delete)")
    p.add_argument("--tools", help="tool ids or names, comma-separated (create)")
    p.add_argument("--replace", action="store_true", help="replace an existing profile (create)")
