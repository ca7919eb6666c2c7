"""Rendering a benchmark run: the machine header and one table per section (rich)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from kamid.engine import WASMTIME_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["TARGETS", "machine", "render", "verdict"]

#: What the numbers should meet (see README.md); the run reports, it never fails on them.
TARGETS = {
    "socket_over_floor_p50": 1.3,
    "first_call_after_restart_ms": 150.0,
}

Results = dict[str, Any]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _source_version() -> str:
    """The commit of the code being measured, ``-dirty`` with uncommitted changes."""
    try:
        proc = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() or "unknown (not a git checkout)"


def machine() -> dict[str, Any]:
    """Where and when this run happened."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "wasmtime": WASMTIME_VERSION,
        "platform": platform.platform(),
        "source": _source_version(),
        # Other work on the machine skews every number; the load says how much there was.
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def verdict(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]NOT met[/]"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(title: str, results: Results) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left", title_style="bold")
    table.add_column("measurement")
    for key, tool in results["tools"].items():
        table.add_column(f"{key}\n{tool['tool_id']}", justify="right")
    table.add_column("target", justify="right")
    return table


def _lookup(tool: Results, path: str) -> Any:
    """``tool["a"]["b"]`` for ``"a.b"``; None when any part is missing."""
    value: Any = tool
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _get(path: str, fmt: Callable[[Any], str] = _ms) -> Callable[[Results], str]:
    def get(tool: Results) -> str:
        value = _lookup(tool, path)
        return "-" if value is None else fmt(value)

    return get


def _judged(path: str, limit: float, fmt: Callable[[Any], str]) -> Callable[[Results], str]:
    """The value and whether it is within ``limit``."""

    def get(tool: Results) -> str:
        value = _lookup(tool, path)
        return "-" if value is None else f"{fmt(value)} {verdict(value <= limit)}"

    return get


def _row(
    table: Table, results: Results, label: str, get: Callable[[Results], str], target: str = ""
) -> None:
    table.add_row(label, *(get(tool) for tool in results["tools"].values()), target)


def render(results: Results, console: Console | None = None) -> None:
    """Prints the header and every section's table."""
    # Piped into a file, rich would wrap the tables at 80 columns.
    console = console or Console(width=None if sys.stdout.isatty() else 110)
    m = results["machine"]
    c = results["config"]
    console.print(
        f"[bold]KAMI benchmarks[/]  {m['date']}  (source {m['source']})\n"
        f"{m['nproc']} CPUs ({m['usable_cpus']} usable), {m['cpu']}\n"
        f"Python {m['python']}, wasmtime {m['wasmtime']}, {m['platform']}\n"
        f"load average at start {' '.join(map(str, m['loadavg']))}"
        f"{', at end ' + ' '.join(map(str, m['loadavg_end'])) if 'loadavg_end' in m else ''}\n"
        f"{c['calls']} timed calls after {c['warmup']} warm-up; {c['restarts']} restarts; "
        f"{c['cli_runs']} process runs; {c['compiles']} uncached compiles per example"
    )
    ratio_limit = TARGETS["socket_over_floor_p50"]
    restart_limit = TARGETS["first_call_after_restart_ms"]

    t = _table("1-2. Hot tools.exec vs the in-process floor (ms)", results)
    _row(t, results, "socket round trip p50", _get("socket.p50"))
    _row(t, results, "socket round trip p99", _get("socket.p99"))
    _row(t, results, "socket round trip mean", _get("socket.mean"))
    _row(t, results, "  daemon's usage.wall_ms p50", _get("socket.engine_wall_ms_p50"))
    _row(t, results, "Engine.call in-process p50 (floor)", _get("floor_engine.p50"))
    _row(t, results, "Engine.call in-process p99", _get("floor_engine.p99"))
    _row(t, results, "Engine.call in-process mean", _get("floor_engine.mean"))
    _row(t, results, "  its usage.wall_ms p50", _get("floor_engine.wall_ms_p50"))
    _row(
        t,
        results,
        "  until its result (store not closed) p50",
        _get("floor_engine.to_result_ms_p50"),
    )
    _row(t, results, "bare wasmtime p50", _get("floor_bare.p50"))
    _row(t, results, "bare wasmtime p99", _get("floor_bare.p99"))
    _row(
        t,
        results,
        "socket p50 / floor p50",
        _judged("ratios.socket_over_engine", ratio_limit, _x),
        f"<= {ratio_limit}x",
    )
    _row(t, results, "socket p50 / bare p50", _get("ratios.socket_over_bare", _x))
    _row(
        t,
        results,
        "socket p50 / Engine.call until result",
        _get("ratios.socket_over_engine_result", _x),
    )
    _row(t, results, "Engine.call p50 / bare p50", _get("ratios.engine_over_bare", _x))
    _row(t, results, "socket p50 - floor p50", _get("ratios.socket_minus_engine_ms"))
    _row(t, results, "CPU per call: kamid process", _get("socket.daemon_cpu_ms_per_call"))
    _row(t, results, "CPU per call: client (this process)", _get("socket.client_cpu_ms_per_call"))
    _row(t, results, "CPU per call: Engine.call in-process", _get("floor_engine.cpu_ms_per_call"))
    _row(t, results, "CPU per call: bare wasmtime", _get("floor_bare.cpu_ms_per_call"))
    _row(t, results, "kamid CPU / Engine.call CPU", _get("ratios.daemon_cpu_over_engine_cpu", _x))
    console.print(t)

    t = _table("3. Cold paths (ms, medians)", results)
    _row(t, results, "daemon start (spawn to ready)", _get("restart.start_ms_median"))
    _row(
        t,
        results,
        "first tools.exec after restart",
        _judged("restart.first_call_ms_median", restart_limit, _ms),
        f"<= {restart_limit:g} ms",
    )
    _row(t, results, "  its usage.wall_ms", _get("restart.first_call_wall_ms_median"))
    _row(t, results, "  AOT disk hits / compiles", _get("restart.cache", str))
    _row(t, results, "in-process: Engine() init", _get("cold_load.engine_init_ms"))
    _row(t, results, "in-process: first call from AOT", _get("cold_load.first_call_ms"))
    _row(t, results, "  of which sha256 of AOT file", _get("cold_load.aot_sha256_ms"))
    _row(t, results, "  of which deserialize_file", _get("cold_load.deserialize_ms"))
    _row(t, results, "  AOT file MB", _get("cold_load.aot_mb", lambda v: f"{v:.1f}"))
    _row(t, results, "uncached compile (precompile)", _get("compile.median_ms"))
    _row(t, results, "  samples", _get("compile.samples_ms", _list))
    console.print(t)

    t = _table("4. kamictl exec as a whole process (ms, p50)", results)
    _row(t, results, "kamictl exec (.pyc cached)", _get("cli.kamictl_exec.p50"))
    inherited = "kamictl exec, environment as inherited" + (
        " (PYTHONDONTWRITEBYTECODE set)" if c.get("dont_write_bytecode_inherited") else ""
    )
    _row(t, results, inherited, _get("cli.kamictl_exec_inherited_env.p50"))
    _row(t, results, "python -c 'import json'", _get("cli.python_import_json.p50"))
    _row(t, results, "python -c <raw socket tools.exec>", _get("cli.raw_socket_client.p50"))
    _row(t, results, "kamictl / import json", _get("cli.ratio", _x))
    _row(t, results, "kamictl - import json", _get("cli.difference_ms"))
    _row(t, results, "imports (-X importtime, sum of self)", _get("cli.importtime.total_ms"))
    console.print(t)
    first = next(iter(results["tools"].values()), None)
    if first and "cli" in first:
        cost = first["cli"]["importtime"]
        top = ", ".join(f"{name} {us / 1000:.1f}" for name, us in cost["top"])
        console.print(f"Top-level imports of `kamictl exec` (cumulative ms): {top}")
        console.print(f"Modules imported: {cost['module_count']}")


def _list(values: list[float]) -> str:
    return " ".join(_ms(v) for v in values)
