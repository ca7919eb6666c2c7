"""``kamictl registry``, ``search``, ``update``, ``pin``, ``outdated``, and what ``install``
needs to take a package or a registry reference: the source rules and the download bar.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kamictl.cli import EXIT_ERROR, EXIT_OK, UsageError, client_for, print_json

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

__all__ = [
    "add_install_arguments",
    "install_params",
    "print_table",
    "register",
    "transfer_progress",
]


# install
def add_install_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", help="with a tool id: look only in this registry")
    p.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="allow a package or registry version lower than the installed one",
    )


def install_params(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The ``tools.install`` source params for ``kamictl install TARGET``, and a title.

    A URL is a package; an existing directory is a tool directory; an existing file is a
    package (a ``.wasm`` or ``tool.toml`` goes as a path, for the daemon's advice); anything
    else must be a tool id with an optional ``@range``.
    """
    from kamid.protocol import parse_ref

    target: str = args.path
    registry = getattr(args, "registry", None)
    extra: dict[str, Any] = {}
    if getattr(args, "allow_downgrade", False):
        extra["allow_downgrade"] = True
    if "://" in target:
        return {"package": target, **extra}, target.rstrip("/").rsplit("/", 1)[-1]
    path = Path(target).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix in (".wasm", ".toml")):
        return {"path": str(path.resolve())}, path.resolve().name
    if path.is_file():
        return {"package": str(path.resolve()), **extra}, path.name
    try:
        parse_ref(target)
    except ValueError as exc:
        raise UsageError(
            f"{target} is not a tool directory, a .kami package, a URL or a tool id: {exc}"
        ) from exc
    params = {"ref": target, **extra}
    if registry:
        params["registry"] = registry
    return params, target


@contextlib.contextmanager
def transfer_progress(title: str) -> Iterator[Callable[[str, Any], None]]:
    """A spinner with the latest message, and a progress bar while something downloads."""
    from kamictl import _render

    if not _render.err.is_terminal:

        def quiet(method: str, params: Any) -> None:
            return None

        yield quiet
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[size]}"),
    )
    with Progress(*columns, console=_render.err, transient=True) as bar:
        task = bar.add_task(title, total=None, size="")
        downloading = False

        def update(method: str, params: Any) -> None:
            nonlocal task, downloading
            if method != "progress" or not isinstance(params, dict):
                return
            done, total = params.get("done"), params.get("total")
            if done is not None:
                size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
                downloading = True
                bar.update(
                    task,
                    description=f"{title}: {params.get('stage', '')}",
                    completed=done,
                    total=total,
                    size=size,
                )
                return
            description = f"{title}: {params.get('message', '')}"
            if downloading:  # back from a bar to a spinner: a fresh task
                bar.remove_task(task)
                task = bar.add_task(description, total=None, size="")
                downloading = False
            else:
                bar.update(task, description=description)

        yield update


def print_table(table: Any) -> None:
    """Prints a rich table on stdout; piped output is not squeezed into 80 columns."""
    from kamictl import _render

    if _render.out.is_terminal:
        _render.out.print(table)
        return
    from rich.console import Console

    Console(highlight=False, width=max(_render.out.width, 160)).print(table)


# registry
def cmd_registry(args: argparse.Namespace) -> int:
    from kamictl import _render

    with client_for(args) as client:
        if args.action == "list":
            result = client.call("registry.list")
        elif args.action == "add":
            if not args.name or not args.url:
                raise UsageError("usage: kamictl registry add NAME URL")
            url = args.url
            if "://" not in url and Path(url).expanduser().exists():
                url = Path(url).expanduser().resolve().as_uri()  # a local index path
            result = client.call("registry.add", {"name": args.name, "url": url})
        else:
            if not args.name or args.url:
                raise UsageError("usage: kamictl registry remove NAME")
            result = client.call("registry.remove", {"name": args.name})
    if args.json:
        print_json(result)
    elif args.action == "list":
        _registries(result["registries"])
    elif args.action == "add":
        reg = result["registry"]
        _render.note(f"added registry {reg['name']} ({reg['url']}), {result['tools']} tool(s)")
    else:
        _render.note(f"removed registry {result['name']} ({result['url']})")
    return EXIT_OK


def _registries(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from kamictl import _render

    if not rows:
        _render.note(
            "no registries; add one with `kamictl registry add NAME URL` or set "
            "[supply_chain].default_registry in kamid.toml"
        )
        return
    table = Table("name", "url", "from")
    for r in rows:
        table.add_row(r["name"], r["url"], "kamid.toml" if r["source"] == "config" else "added")
    print_table(table)


# search
def cmd_search(args: argparse.Namespace) -> int:
    from rich.table import Table

    from kamictl import _render

    params = {
        "query": " ".join(args.query),
        "category": args.category,
        "tag": args.tag,
        "registry": args.registry,
    }
    with client_for(args) as client:
        result = client.call("registry.search", params)
    if args.json:
        print_json(result)
        return EXIT_OK
    for problem in result["problems"]:
        _render.error(f"registry {problem['registry']}: {problem['message']}")
    hits = result["hits"]
    if not hits:
        _render.note("no tools match")
        return EXIT_OK
    table = Table("id", "version", "description", "categories", "tags", "signed by", "registry")
    for h in hits:
        version = h["version"] + (f" (installed {h['installed']})" if h["installed"] else "")
        signer = "-"
        if h["signer"]:
            signer = h["signer"] + (" trusted" if h["trusted"] else " untrusted")
        table.add_row(
            h["id"],
            version,
            h["description"],
            ", ".join(h["categories"]),
            ", ".join(h["tags"]),
            signer,
            h["registry"],
        )
    print_table(table)
    return EXIT_OK


# update
def cmd_update(args: argparse.Namespace) -> int:
    from kamictl import _render

    if bool(args.tool) == bool(args.all):
        raise UsageError("give a tool id to update, or --all")
    params: dict[str, Any] = {"tool": args.tool} if args.tool else {"all": True}
    params.update(approve=args.yes, progress_token="update")  # noqa: S106
    with client_for(args) as client:
        with transfer_progress("Updating") as update:
            updates = client.call("tools.update", params, on_notify=update)["updates"]
        interactive = sys.stdin.isatty() and not args.json and not args.yes
        for i, u in enumerate(updates):
            if u["status"] != "needs_consent" or not interactive:
                continue
            if not _consent(u):
                _render.error(f"{u['id']}: not approved; it stays at {u['installed']}")
                continue
            again = {
                "tool": u["id"],
                "version": u["available"],
                "expect_sha256": u["sha256"],
                "approve": True,
                "progress_token": "update",
            }
            with transfer_progress(f"Updating {u['id']}") as update:
                updates[i] = client.call("tools.update", again, on_notify=update)["updates"][0]
    if args.json:
        print_json({"updates": updates})
    else:
        _update_table(updates)
    bad = [u for u in updates if u["status"] in ("failed", "needs_consent")]
    return EXIT_ERROR if bad else EXIT_OK


def _consent(u: dict[str, Any]) -> bool:
    from rich.prompt import Confirm
    from rich.table import Table

    from kamictl import _render

    table = Table(
        "kind",
        "what",
        title=f"{u['id']} {u['available']} asks for more than {u['installed']} was granted",
    )
    for line in u["widening"]:
        kind, _, what = line.partition(": ")
        table.add_row(kind, what)
    _render.err.print(table)
    return Confirm.ask("Grant these and update?", console=_render.err, default=False)


def _update_table(updates: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from kamictl import _render

    if not updates:
        _render.note("no tools installed")
        return
    table = Table("id", "installed", "available", "status", "note")
    for u in updates:
        note = u["message"]
        if u["status"] == "needs_consent":
            note = "asks for more: " + "; ".join(u["widening"]) + " (rerun with --yes to grant)"
        elif u["status"] == "updated" and u["widening"]:
            note = "granted: " + "; ".join(u["widening"])
        table.add_row(u["id"], u["installed"], u["available"] or "-", u["status"], note)
    print_table(table)


# pin / outdated
def cmd_pin(args: argparse.Namespace) -> int:
    from kamictl import _render

    params = {"tool": args.tool, "version": args.version, "remove": args.remove}
    with client_for(args) as client:
        result = client.call("tools.pin", params)
    if args.json:
        print_json(result)
    elif result["pin"] is None:
        _render.note(f"{result['tool']} is not pinned (installed {result['installed']})")
    else:
        _render.note(
            f"pinned {result['tool']} to {result['pin']} (installed {result['installed']}); "
            "`kamictl update` stays within it"
        )
    return EXIT_OK


def cmd_outdated(args: argparse.Namespace) -> int:
    from rich.table import Table

    from kamictl import _render

    with client_for(args) as client:
        result = client.call("tools.outdated")
    if args.json:
        print_json(result)
        return EXIT_OK
    rows = result["tools"]
    if not rows:
        _render.note("no tools installed")
        return EXIT_OK
    table = Table("id", "installed", "wanted", "newest matching", "newest", "registry", "status")
    for r in rows:
        wanted = r["constraint"] + (" (pinned)" if r["pinned"] else "")
        status = r["status"] + (f": {r['message']}" if r["message"] else "")
        table.add_row(
            r["id"],
            r["installed"],
            wanted,
            r["newest_matching"] or "-",
            r["newest"] or "-",
            r["registry"] or "-",
            status,
        )
    print_table(table)
    return EXIT_OK


def register(add: Callable[..., Any]) -> None:
    p = add("registry", cmd_registry, "add, list or remove tool registries")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("name", nargs="?", help="registry name")
    p.add_argument("url", nargs="?", help="index URL: https://…/index.json, file:///…, or a path")
    p = add("search", cmd_search, "search the registries for tools")
    p.add_argument("query", nargs="*", help="words to match in id, name, description, tags")
    p.add_argument("--category", "-c", help="only tools in this category")
    p.add_argument("--tag", "-t", help="only tools with this tag")
    p.add_argument("--registry", help="only this registry")
    p = add("update", cmd_update, "update tools from their registry (asks before widening)")
    p.add_argument("tool", nargs="?", help="tool id or unique name")
    p.add_argument("--all", action="store_true", help="every tool installed from a registry")
    p.add_argument(
        "--yes", "-y", action="store_true", help="grant what new versions ask for beyond today"
    )
    p = add("pin", cmd_pin, "pin a tool to a version or range; updates stay within it")
    p.add_argument("tool", help="tool id or unique name")
    p.add_argument("version", nargs="?", help="version or range (default: the installed one)")
    p.add_argument("--remove", action="store_true", help="remove the pin")
    add("outdated", cmd_outdated, "installed vs newest matching vs newest version")
