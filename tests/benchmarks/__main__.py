"""``python -m tests.benchmarks``: KAMI's latency numbers, measured now, on this machine.

For each example (componentize-py ``dev.kami.echo``, componentize-js ``dev.kami.hello``):

1. hot ``tools.exec`` latency through a real kamid's socket;
2. the in-process floor: ``Engine.call`` and bare wasmtime-py, fresh instance per call,
   timed in blocks alternating with (1) so that all three share the same conditions;
3. the first call after a daemon restart (AOT cache hit), the daemon's start time, the
   same cold load in-process split into its parts, and an uncached compile;
4. ``kamictl exec`` as a whole process next to ``python -c 'import json'``.

Every daemon runs on its own temporary KAMI_HOME and is stopped at the end, on errors
and on Ctrl-C too. See README.md in this directory for what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console

from . import _daemon_runs as runs
from . import _floor as floor
from ._cases import CASES, Tool, resolve
from ._daemon import BenchDaemon, bench_env, remove_home, temp_home
from ._interleave import interleave
from ._report import TARGETS, machine, render
from ._stats import ms, ratio, summarize, summarize_ns

if TYPE_CHECKING:
    from types import FrameType

Results = dict[str, Any]

#: Calls per block when the socket and the floors take turns.
BLOCK = 50

_err = Console(stderr=True, highlight=False)


def _progress(message: str) -> None:
    _err.print(f"[dim]… {message}[/]")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description="Measure KAMI's hot-call, cold-start and CLI latency on this machine.",
    )
    parser.add_argument("--calls", type=int, default=500, help="timed hot calls (default 500)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls first (default 50)")
    parser.add_argument("--only", choices=[c.key for c in CASES], help="one example only")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw numbers")
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="then calls/s at 1-64 concurrent clients, threads vs worker processes "
        "(tests/benchmarks/throughput.py; also runnable alone)",
    )
    parser.add_argument(
        "--mcp",
        action="store_true",
        help="then MCP tools/call latency through kamictl mcp next to an SDK server "
        "(tests/benchmarks/mcp_latency.py; also runnable alone)",
    )
    parser.add_argument(
        "--restarts", type=int, default=3, help="daemon restarts per example (default 3)"
    )
    parser.add_argument(
        "--cli-runs", type=int, default=20, help="runs of each whole process (default 20)"
    )
    parser.add_argument(
        "--compiles",
        type=int,
        default=2,
        help="uncached compiles per example (default 2: one in-process, one by the daemon's "
        "install; more are in-process)",
    )
    args = parser.parse_args(argv)
    for name, least in (("calls", 2), ("warmup", 0), ("restarts", 1), ("cli_runs", 2)):
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}")
    if args.compiles < 1:
        parser.error("--compiles must be at least 1")
    return args


def _on_sigterm(signum: int, _frame: FrameType | None) -> NoReturn:
    # SystemExit unwinds through every `finally`, so daemons stop and homes go away.
    raise SystemExit(128 + signum)


def _median_ms(samples_ns: list[int]) -> float:
    return ms(int(statistics.median(samples_ns)))


def _to_ms(samples_ns: list[int]) -> list[float]:
    return [round(ms(s), 4) for s in samples_ns]


def _dist(samples_ns: list[int]) -> Results:
    return {**summarize_ns(samples_ns).as_dict(), "samples_ms": _to_ms(samples_ns)}


class Run:
    """One benchmark run: its scratch directories, its daemon, and what it measured."""

    def __init__(
        self, args: argparse.Namespace, tools: list[Tool], cleanup: contextlib.ExitStack
    ) -> None:
        self.args = args
        self.tools = tools
        self.scratch = temp_home("kbs")
        cleanup.callback(remove_home, self.scratch)
        # Children keep their bytecode here: imports cost what they cost once installed.
        self.pycache = self.scratch / "pycache"
        self.home = temp_home("kbd")
        cleanup.callback(remove_home, self.home)
        self.daemon = BenchDaemon(self.home, pycache=self.pycache)
        cleanup.callback(self.daemon.stop)
        self.compiled: dict[str, floor.Compiled] = {}
        self.results: Results = {
            "machine": machine(),
            "config": {
                "calls": args.calls,
                "warmup": args.warmup,
                "block": BLOCK,
                "restarts": args.restarts,
                "cli_runs": args.cli_runs,
                "compiles": args.compiles,
                "tick_ms": floor.TICK_MS,
            },
            "targets": TARGETS,
            "tools": {
                t.case.key: {"tool_id": t.case.tool_id, "wasm_bytes": t.size, "sha256": t.sha256}
                for t in tools
            },
        }

    def out(self, tool: Tool) -> Results:
        result: Results = self.results["tools"][tool.case.key]
        return result

    def compile_and_cold_load(self, tool: Tool) -> None:
        """Uncached compiles and cold loads, in-process, before any daemon runs."""
        args, out = self.args, self.out(tool)
        compiles: list[floor.Compiled] = []
        for i in range(max(1, args.compiles - 1)):
            _progress(f"{tool.case.tool_id}: uncached compile {i + 1} (in-process)")
            compiles.append(floor.compile_uncached(tool, self.scratch / tool.case.key / f"{i}"))
        out["compile"] = {
            "samples_ms": [ms(c.ns) for c in compiles],
            "sources": [f"in-process:{c.source}" for c in compiles],
        }
        self.compiled[tool.case.key] = compiles[0]
        del compiles
        gc.collect()
        _progress(f"{tool.case.tool_id}: {args.restarts} cold loads of the AOT file in-process")
        first = self.compiled[tool.case.key]
        loads = [floor.cold_load(tool, first.aot_dir, first.index) for _ in range(args.restarts)]
        gc.collect()
        out["cold_load"] = {
            "engine_init_ms": _median_ms([c.engine_init for c in loads]),
            "first_call_ms": _median_ms([c.first_call for c in loads]),
            "second_call_ms": _median_ms([c.second_call for c in loads]),
            "aot_sha256_ms": _median_ms([c.aot_sha256 for c in loads]),
            "deserialize_ms": _median_ms([c.deserialize for c in loads]),
            "aot_mb": loads[0].aot_bytes / 1e6,
            "first_call_samples_ms": [ms(c.first_call) for c in loads],
        }

    def install(self) -> None:
        _progress("starting kamid on a temporary KAMI_HOME")
        self.daemon.start()
        for tool in self.tools:
            _progress(f"{tool.case.tool_id}: tools.install (the daemon compiles it)")
            _took, installed = runs.install(self.daemon, tool)
            if self.args.compiles > 1:
                self.out(tool)["compile"]["samples_ms"].append(float(installed["compile_ms"]))
                self.out(tool)["compile"]["sources"].append("daemon-install:compiled")

    def hot(self, tool: Tool) -> None:
        """Sections 1 and 2: socket, Engine.call and bare wasmtime, in alternating blocks."""
        args, out = self.args, self.out(tool)
        compiled = self.compiled[tool.case.key]
        _progress(
            f"{tool.case.tool_id}: {args.calls} calls each of tools.exec over the socket, "
            f"Engine.call and bare wasmtime, alternating in blocks of {BLOCK}"
        )
        with (
            runs.SocketHot(self.daemon, tool) as socket,
            floor.EngineFloor(compiled.engine, tool) as engine,
            floor.BareFloor(tool, compiled.engine.aot_path(tool.sha256)) as bare,
        ):
            samples = interleave(
                [socket, engine, bare], warmup=args.warmup, calls=args.calls, block=BLOCK
            )
        latency, cpu = samples.latency_ns, samples.process_cpu_ns
        n = args.calls
        out["socket"] = {
            **_dist(latency["socket"]),
            "engine_wall_ms_p50": summarize(socket.engine_wall_ms).p50,
            "daemon_cpu_ms_per_call": None
            if socket.daemon_cpu_ns is None
            else ms(socket.daemon_cpu_ns) / n,
            "client_cpu_ms_per_call": ms(cpu["socket"]) / n,
            "engine_wall_ms": socket.engine_wall_ms,
        }
        out["floor_engine"] = {
            **_dist(latency["engine"]),
            "wall_ms_p50": summarize(engine.wall_ms).p50,
            "to_result_ms_p50": summarize([ms(t) for t in engine.to_result_ns]).p50,
            "cpu_ms_per_call": ms(cpu["engine"]) / n,
            "wall_ms": engine.wall_ms,
        }
        out["floor_bare"] = {**_dist(latency["bare"]), "cpu_ms_per_call": ms(cpu["bare"]) / n}

    def cli(self) -> None:
        """Section 4: whole processes against the running daemon."""
        runs_n = self.args.cli_runs
        cached = bench_env(self.home, pycache=self.pycache)
        inherited = bench_env(self.home)
        json_argv = [sys.executable, "-c", "import json"]
        # One untimed run of each fills the bytecode cache.
        runs.process_times(json_argv, env=cached, runs=1)
        _progress(f"python -c 'import json' x{runs_n}")
        baseline = runs.process_times(json_argv, env=cached, runs=runs_n)
        for tool in self.tools:
            _progress(f"{tool.case.tool_id}: kamictl exec and a raw socket client x{runs_n} each")
            kamictl_argv = runs.kamictl_exec_argv(tool)
            runs.process_times(kamictl_argv, env=cached, runs=1)
            kamictl = runs.process_times(kamictl_argv, env=cached, runs=runs_n)
            as_invoked = runs.process_times(kamictl_argv, env=inherited, runs=runs_n)
            raw = runs.process_times(runs.raw_client_argv(tool), env=cached, runs=runs_n)
            cost = runs.import_cost(tool, env=cached)
            kamictl_p50 = summarize_ns(kamictl).p50
            python_p50 = summarize_ns(baseline).p50
            self.out(tool)["cli"] = {
                "kamictl_exec": _dist(kamictl),
                "kamictl_exec_inherited_env": _dist(as_invoked),
                "python_import_json": _dist(baseline),
                "raw_socket_client": _dist(raw),
                "ratio": ratio(kamictl_p50, python_p50),
                "difference_ms": kamictl_p50 - python_p50,
                "importtime": {
                    "total_ms": cost.total_us / 1000,
                    "top": cost.top,
                    "module_count": len(cost.modules),
                    "modules": cost.modules,
                },
            }
        self.results["config"]["dont_write_bytecode_inherited"] = bool(
            os.environ.get("PYTHONDONTWRITEBYTECODE")
        )

    def restarts(self) -> None:
        """Section 3: stop, start on the same home, time the first call; per example."""
        done: dict[str, list[runs.Restart]] = {t.case.key: [] for t in self.tools}
        n = self.args.restarts
        for i in range(n):
            for tool in self.tools:
                _progress(f"{tool.case.tool_id}: restart {i + 1}/{n}, first call")
                done[tool.case.key].append(runs.restart_first_call(self.daemon, tool))
        for tool in self.tools:
            took = done[tool.case.key]
            self.out(tool)["restart"] = {
                "start_ms": [ms(r.start_ns) for r in took],
                "first_call_ms": [ms(r.first_call_ns) for r in took],
                "first_call_wall_ms": [r.first_call_wall_ms for r in took],
                "start_ms_median": _median_ms([r.start_ns for r in took]),
                "first_call_ms_median": _median_ms([r.first_call_ns for r in took]),
                "first_call_wall_ms_median": statistics.median(r.first_call_wall_ms for r in took),
                "cache": " ".join(f"{r.disk_hits}/{r.compiles}" for r in took),
            }

    def measure(self) -> Results:
        started = time.perf_counter()
        for tool in self.tools:
            self.compile_and_cold_load(tool)
        try:
            self.install()
            for tool in self.tools:
                self.hot(tool)
            self.compiled.clear()
            gc.collect()
            self.cli()
            self.restarts()
        except Exception:
            _err.print(f"[red]kamid log tail:[/]\n{self.daemon.log_tail()}")
            raise
        finally:
            self.daemon.stop()
        self.results["config"]["elapsed_s"] = round(time.perf_counter() - started, 1)
        self.results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        _derive(self.results)
        return self.results


def _derive(results: Results) -> None:
    for out in results["tools"].values():
        compile_ = out["compile"]
        compile_["median_ms"] = statistics.median(compile_["samples_ms"])
        socket_p50 = out["socket"]["p50"]
        engine_p50 = out["floor_engine"]["p50"]
        bare_p50 = out["floor_bare"]["p50"]
        out["ratios"] = {
            "socket_over_engine": ratio(socket_p50, engine_p50),
            "socket_over_bare": ratio(socket_p50, bare_p50),
            "socket_over_engine_result": ratio(socket_p50, out["floor_engine"]["to_result_ms_p50"]),
            "engine_over_bare": ratio(engine_p50, bare_p50),
            "socket_minus_engine_ms": socket_p50 - engine_p50,
        }
        daemon_cpu = out["socket"]["daemon_cpu_ms_per_call"]
        if daemon_cpu is not None:
            out["ratios"]["daemon_cpu_over_engine_cpu"] = ratio(
                daemon_cpu, out["floor_engine"]["cpu_ms_per_call"]
            )
        out["targets"] = {
            "socket_over_floor_p50": out["ratios"]["socket_over_engine"]
            <= TARGETS["socket_over_floor_p50"],
            "first_call_after_restart_ms": out["restart"]["first_call_ms_median"]
            <= TARGETS["first_call_after_restart_ms"],
        }


def run(args: argparse.Namespace) -> Results:
    """Every measurement; returns the JSON-ready results."""
    from tests._examples import build_examples

    cases = [c for c in CASES if args.only in (None, c.key)]
    _progress("building the examples (cached under .toolchain/examples)")
    built = build_examples()
    tools = [resolve(case, built[case.tool_id]) for case in cases]
    with contextlib.ExitStack() as cleanup:
        return Run(args, tools, cleanup).measure()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        results = run(args)
    except KeyboardInterrupt:
        _err.print("[yellow]interrupted; daemons stopped, temporary homes removed[/]")
        return 130
    render(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        _err.print(f"raw numbers written to {args.json}")
    if args.mcp:
        from .mcp_latency import main as mcp_latency

        code = mcp_latency(["--calls", str(args.calls), "--warmup", str(args.warmup)])
        if code or not args.throughput:
            return code
    if args.throughput:
        from .throughput import main as throughput

        return throughput(["--only", args.only] if args.only else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
