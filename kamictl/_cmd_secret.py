"""``kamictl secret set|list|delete``: the operator's secrets for tools.

A value is read from the terminal without echo, or from stdin when it is not a terminal
(``pass show github | kamictl secret set github-repo GITHUB_TOKEN``), never from the
command line, where other users could read it in the process table and it would land in
shell history. It travels once, in ``secrets.set``, over the owner-only socket; nothing
ever sends it back.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["read_value", "register"]

#: Longer values are refused by the daemon; reading stops just past it.
_MAX_READ = 8192 + 2


def _usage(message: str) -> Exception:
    from kamictl.cli import UsageError

    return UsageError(message)


def read_value(name: str) -> str:
    """The secret's value: prompted without echo on a terminal, else all of stdin.

    One trailing newline (``\\n`` or ``\\r\\n``) is dropped: ``echo`` and most password
    managers add it.
    """
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"value of {name} (input is hidden): ")
    else:
        value = sys.stdin.read(_MAX_READ)
        value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise _usage(
            f"no value for {name}: type it at the prompt, or pipe it on stdin "
            f"(e.g. `pass show x | kamictl secret set TOOL {name}`); values are never "
            "taken from the command line"
        )
    return value


def cmd_secret(args: argparse.Namespace) -> int:
    from kamictl import _render
    from kamictl.cli import EXIT_OK, client_for, print_json

    action, tool, name = args.action, args.tool, args.name
    if action in ("set", "delete") and (tool is None or name is None):
        raise _usage(f"usage: kamictl secret {action} TOOL NAME")
    if action == "list" and name is not None:
        raise _usage("usage: kamictl secret list [TOOL]")
    if action == "set":
        value = read_value(name)
        with client_for(args) as client:
            result = client.call("secrets.set", {"tool": tool, "name": name, "value": value})
        del value
        if args.json:
            print_json(result)
        else:
            verb = "replaced" if result["replaced"] else "stored"
            _render.note(f"{verb} secret {result['name']} of {result['tool']}")
        return EXIT_OK
    if action == "delete":
        with client_for(args) as client:
            result = client.call("secrets.delete", {"tool": tool, "name": name})
        if args.json:
            print_json(result)
        else:
            _render.note(f"deleted secret {result['name']} of {result['tool']}")
        return EXIT_OK
    with client_for(args) as client:
        result = client.call("secrets.list", {"tool": tool} if tool else {})
    if args.json:
        print_json(result)
    else:
        _show(result["secrets"])
    return EXIT_OK


def _show(secrets: list[dict[str, Any]]) -> None:
    import time

    from rich.markup import escape
    from rich.table import Table

    from kamictl import _render

    if not secrets:
        _render.note("no tool declares or holds a secret")
        return
    table = Table(title="Secrets (names only; values are never shown)")
    for column in ("tool", "name", "set", "sent as", "to", "set at"):
        table.add_column(column)
    for s in secrets:
        state = "yes" if s["set"] else "[yellow]no[/yellow]"
        if not s["declared"]:
            state += " (not declared)"
        at = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["set_at"])) if s["set_at"] else "-"
        table.add_row(
            escape(s["tool"]),
            escape(s["name"]),
            state,
            escape(s["header"] or "-"),
            escape(", ".join(s["hosts"]) or "-"),
            at,
        )
    _render.out.print(table)


def register(add: Callable[..., Any]) -> None:
    p = add(
        "secret",
        cmd_secret,
        "store, list or delete a tool's secrets (values from a hidden prompt or stdin)",
    )
    p.add_argument("action", choices=["set", "list", "delete"])
    p.add_argument("tool", nargs="?", help="tool id or unique name")
    p.add_argument("name", nargs="?", help="secret name, as the tool's manifest declares it")
