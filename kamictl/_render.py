"""Everything kamictl shows a person, with rich. Data goes to stdout, chatter to stderr."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.prompt import Confirm
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def note(message: str) -> None:
    err.print(message, markup=False)


def error(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")


@contextlib.contextmanager
def progress(title: str) -> Iterator[Callable[[str, Any], None]]:
    """A spinner showing the latest progress message; yields the notification callback."""
    if not err.is_terminal:

        def quiet(method: str, params: Any) -> None:
            return None

        yield quiet
        return
    with err.status(title) as status:

        def update(method: str, params: Any) -> None:
            if method == "progress" and isinstance(params, dict):
                status.update(f"{title}: {params.get('message', '')}")

        yield update


def approve(requested: list[str], capabilities: list[dict[str, Any]] | None = None) -> bool:
    if capabilities:
        err.print(capability_table("This tool requests", capabilities))
    else:
        table = Table(title="This tool requests", show_header=False)
        for line in requested:
            kind, _, what = line.partition(": ")
            table.add_row(kind, what)
        err.print(table)
    return Confirm.ask("Grant these capabilities?", console=err, default=False)


def capability_table(title: str, capabilities: list[dict[str, Any]]) -> Table:
    """Requested or granted capabilities, each marked usable or unused by the component."""
    table = Table("capability", "what", "component", title=title)
    for cap in capabilities:
        used = cap.get("used")
        mark = "[yellow]unused[/yellow]" if used is False else "uses it" if used else ""
        note = cap.get("note") or ""
        table.add_row(cap["kind"], cap["detail"], f"{mark}\n{note}".strip())
    return table


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def installed(result: dict[str, Any]) -> None:
    tool = result["tool"]
    if not result["changed"]:
        note(f"{tool['id']} {tool['version']} is already installed (sha256 {tool['sha256'][:12]})")
        return
    replaced = f", replacing {result['replaced']}" if result.get("replaced") else ""
    note(
        f"installed {tool['id']} {tool['version']}{replaced} "
        f"({_size(tool['size'])}, sha256 {tool['sha256'][:12]}, "
        f"compiled in {result['compile_ms'] / 1000:.1f} s)"
    )
    if result.get("capabilities"):
        err.print(capability_table("Granted", result["capabilities"]))


def tool_list(tools: list[dict[str, Any]]) -> None:
    if not tools:
        note("no tools installed; install one with `kamictl install DIR`")
        return
    table = Table("id", "version", "size", "requests", "description")
    for t in tools:
        requests = "\n".join(t["requested"]) or "-"
        table.add_row(t["id"], t["version"], _size(t["size"]), requests, t["description"])
    out.print(table)


def inspect(result: dict[str, Any]) -> None:
    tool = result["tool"]
    table = Table(show_header=False, title=f"{tool['id']} {tool['version']}")
    installed_at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(tool["installed_at"]))
    for key, value in (
        ("name", tool["name"]),
        ("description", tool["description"]),
        ("sha256", tool["sha256"]),
        ("size", _size(tool["size"])),
        ("installed", installed_at),
        ("cache", result["cache"]),
        ("requests", "\n".join(tool["requested"]) or "nothing (no network, files or env)"),
        ("imports", "\n".join(result["imports"]) or "-"),
        ("blob", result["blob_path"]),
    ):
        table.add_row(key, value)
    out.print(table)


def daemon_status(status: dict[str, Any]) -> None:
    table = Table(show_header=False, title="kamid")
    for key, value in (
        ("version", f"{status['version']} (wasmtime {status['wasmtime_version']})"),
        ("pid", str(status["pid"])),
        ("socket", status["socket"]),
        ("uptime", f"{status['uptime_s']:.0f} s"),
    ):
        table.add_row(key, value)
    out.print(table)


def dashboard(status: dict[str, Any], tools: list[dict[str, Any]]) -> None:
    """The ``kamictl status`` dashboard (kamictl/_dashboard.py)."""
    from kamictl._dashboard import show

    show(status, tools)
