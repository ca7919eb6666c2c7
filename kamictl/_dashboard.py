"""The ``kamictl status`` dashboard: daemon, activity, scheduler, cache and tools (rich)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kamictl._render import out

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import RenderableType

__all__ = ["render", "show", "watch"]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _header(status: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("kamid", f"{status['version']} (wasmtime {status['wasmtime_version']})"),
        ("pid", f"{status['pid']}, up {_uptime(status['uptime_s'])}"),
        ("socket", status["socket"]),
        ("connections", str(status["connections"])),
    ]
    if status.get("metrics_address"):
        rows.append(("metrics", f"http://{status['metrics_address']}/metrics"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _activity(status: dict[str, Any]) -> Table:
    activity = status.get("activity") or {}
    scheduler = status.get("scheduler") or {}
    table = Table(box=box.SIMPLE_HEAD, title="activity", title_justify="left")
    for column in ("calls/s", "p50", "p99", "served", "failed", "running", "queued"):
        table.add_column(column, justify="right")
    queued = scheduler.get("queued_interactive", 0) + scheduler.get("queued_batch", 0)
    running = scheduler.get("running", status["calls_in_flight"])
    limit = scheduler.get("max_concurrent")
    table.add_row(
        f"{activity.get('calls_per_s', 0.0):.1f}",
        _ms(activity.get("p50_ms")),
        _ms(activity.get("p99_ms")),
        str(status["calls_served"]),
        str(status["calls_failed"]),
        f"{running}/{limit}" if limit else str(running),
        f"{queued}/{scheduler['max_queue']}" if scheduler else str(queued),
    )
    window = activity.get("window_s", 60)
    table.caption = f"rates and percentiles over the last {window:g} s"
    rejected = scheduler.get("rejected") or {}
    if rejected:
        table.caption += "; refused: " + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items()))
    return table


def _cache(status: dict[str, Any]) -> Table:
    cache = status["cache"]
    table = Table(box=box.SIMPLE_HEAD, title="component cache", title_justify="left")
    for column in ("hit rate", "memory hits", "disk hits", "compiles", "evictions", "entries"):
        table.add_column(column, justify="right")
    hits = cache["memory_hits"] + cache["disk_hits"]
    lookups = hits + cache["compiles"]
    rate = f"{100 * hits / lookups:.1f}%" if lookups else "-"
    table.add_row(
        rate,
        str(cache["memory_hits"]),
        str(cache["disk_hits"]),
        str(cache["compiles"]),
        str(cache["evictions"]),
        f"{cache['entries']}/{cache['capacity']}",
    )
    if cache.get("rejected"):
        table.caption = f"{cache['rejected']} AOT file(s) rejected (hash mismatch) and rebuilt"
    return table


def _tools(status: dict[str, Any], tools: list[dict[str, Any]]) -> Table:
    activity = {t["tool"]: t for t in (status.get("activity") or {}).get("tools", [])}
    table = Table(box=box.SIMPLE_HEAD, title=f"tools ({len(tools)})", title_justify="left")
    # The id matters most: it folds onto a second line rather than being cut.
    table.add_column("tool", overflow="fold", min_width=12)
    for column in ("calls", "calls/s", "p50", "p99", "failed", "run", "queue"):
        table.add_column(column, justify="right", no_wrap=True)
    known = {t["id"] for t in tools}
    names = [t["id"] for t in tools] + sorted(set(activity) - known)  # + wasm.run files
    for name in names:
        a = activity.get(name, {})
        table.add_row(
            name,
            str(a.get("calls", 0)),
            f"{a.get('calls_per_s', 0.0):.1f}",
            _ms(a.get("p50_ms")),
            _ms(a.get("p99_ms")),
            str(a.get("failed", 0)),
            str(a.get("running", 0)),
            str(a.get("queued", 0)),
        )
    if not names:
        table.caption = "no tools installed; install one with `kamictl install DIR`"
    return table


def render(status: dict[str, Any], tools: list[dict[str, Any]]) -> RenderableType:
    """The whole dashboard for one ``daemon.status`` and ``tools.list``."""
    return Group(
        Panel(_header(status), title="kamid", title_align="left", box=box.ROUNDED),
        _activity(status),
        _cache(status),
        _tools(status, tools),
    )


def show(status: dict[str, Any], tools: list[dict[str, Any]]) -> None:
    out.print(render(status, tools))


def watch(fetch: Callable[[], Any], interval: float) -> int:
    """Refreshes the dashboard every ``interval`` seconds until Ctrl-C; returns 0.

    Args:
        fetch: returns ``(status, tools)``, or an exception to show instead (the daemon
            stopped, say), in which case the next refresh tries again.
    """
    from rich.live import Live

    def frame() -> RenderableType:
        got = fetch()
        stamp = time.strftime("%H:%M:%S")
        if isinstance(got, BaseException):
            message = getattr(got, "message", str(got))
            return Panel(
                Text(f"{message}\nretrying every {interval:g} s; Ctrl-C to quit"),
                title=f"kamid unreachable ({stamp})",
                style="red",
            )
        footer = Text(f"updated {stamp}, every {interval:g} s; Ctrl-C to quit", style="dim")
        return Group(render(*got), footer)

    try:
        if not out.is_terminal:
            # A pipe or a file gets every frame in turn (rich's Live would print only the
            # last one, at exit).
            while True:
                out.print(frame())
                out.file.flush()
                time.sleep(interval)
        with Live(frame(), console=out, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return 0
