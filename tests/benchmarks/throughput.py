"""``python -m tests.benchmarks.throughput``: calls per second under concurrent load.

For each example (componentize-py ``dev.kami.echo``, componentize-js ``dev.kami.hello``),
in one run on this machine:

* the single-thread in-process floor: ``Engine.call`` in a loop, a fresh instance per
  call, no socket, no trio (and the same with two threads, for comparison);
* a real kamid on its own KAMI_HOME, driven by 1, 4, 16 and 64 concurrent clients (one
  connection each, one call at a time, from one trio process), once with calls in
  worker threads (``[engine] workers = 2``, the default) and once in worker processes
  (``[engine] process_workers = N``).

Every call's output is checked. Each example is compiled once: the daemon's install
writes the AOT cache, which the floor and every daemon restart then load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from kamictl.client import Client
from kamid.engine import WASMTIME_VERSION, Engine
from kamid.hostapi import HostContext
from kamid.protocol import KamiError, Paths
from kamid.sandbox import Limits
from tests._examples import build_examples

from ._cases import CASES, Tool, resolve

CONCURRENCY = (1, 4, 16, 64)
#: What threads must reach at 16 clients, relative to the single-thread floor.
TARGET_AT_16 = 1.2

_err = Console(stderr=True, highlight=False)


def _progress(message: str) -> None:
    _err.print(f"[dim]… {message}[/]")


# The in-process floor
def _floor(engine: Engine, tool: Tool, *, threads: int, seconds: float) -> float:
    """Calls per second of ``Engine.call`` in ``threads`` threads for ``seconds``."""
    text = tool.case.input_text
    limits = Limits()
    counts = [0] * threads
    stop = threading.Event()

    def loop(index: int) -> None:
        while not stop.is_set():
            outcome = engine.call(
                tool.sha256, tool.wasm, text, limits=limits, host=HostContext(tool_id="bench")
            )
            if outcome.value != tool.case.expected:
                raise RuntimeError(f"{tool.case.tool_id} answered {outcome.value!r}")
            counts[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


@contextlib.contextmanager
def _ticking(engine: Engine) -> Any:
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(engine.tick_ms / 1000):
            engine.tick()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()


def floors(paths: Paths, tool: Tool, seconds: float) -> dict[str, float]:
    """The floors, on the daemon's own AOT cache (read while no daemon runs)."""
    from kamid.store import Store

    store = Store(paths)
    try:
        engine = Engine(aot_dir=paths.aot, aot_index=store)
        with _ticking(engine):
            _floor(engine, tool, threads=1, seconds=min(seconds, 0.5))  # warm up
            one = _floor(engine, tool, threads=1, seconds=seconds)
            two = _floor(engine, tool, threads=2, seconds=seconds)
    finally:
        store.close()
    return {"floor_1_thread": round(one, 1), "floor_2_threads": round(two, 1)}


# The daemon
class _Daemon:
    def __init__(self, home: Path) -> None:
        self.paths = Paths.under(home)
        self.env = {**os.environ, "KAMI_HOME": str(home)}
        self.env.pop("KAMI_NO_AUTOSTART", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, config: str) -> None:
        self.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.paths.config_file.write_text(config)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kamid", "--foreground", "--quiet"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamid exited with {self.proc.returncode}; see its log")
            with contextlib.suppress(KamiError, OSError), self.client(timeout=5) as client:
                client.call("daemon.status")
                return
            if time.monotonic() > deadline:
                raise RuntimeError("kamid did not start within 60 s")
            time.sleep(0.05)

    def client(self, timeout: float | None = 600) -> Client:
        return Client(self.paths, autostart=False, timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


async def _drive(
    socket_path: Path, tool: Tool, clients: int, warmup: float, seconds: float
) -> dict[str, Any]:
    """``clients`` connections calling ``tool`` back to back; counts the timed window."""
    request = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools.exec",
            "params": {"tool": tool.case.tool_id, "input": tool.case.input},
        }
    ).encode()
    timing = {"measuring": False, "done": False}
    latencies: list[float] = []

    async def client() -> None:
        stream = await trio.open_unix_socket(os.fspath(socket_path))
        buffer = bytearray()
        async with stream:
            while not timing["done"]:
                started = time.perf_counter()
                await stream.send_all(request + b"\n")
                while b"\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise RuntimeError("kamid closed the connection")
                    buffer += data
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                answer = json.loads(line)
                if "error" in answer:
                    raise RuntimeError(f"{tool.case.tool_id}: {answer['error']['message']}")
                if answer["result"]["output"] != tool.case.expected:
                    raise RuntimeError(f"{tool.case.tool_id} answered {answer['result']!r}")
                if timing["measuring"] and not timing["done"]:
                    latencies.append(time.perf_counter() - started)

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
        await trio.sleep(warmup)
        timing["measuring"] = True
        began = time.perf_counter()
        await trio.sleep(seconds)
        timing["done"] = True
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "calls_per_s": round(len(latencies) / elapsed, 1),
        "calls": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 3) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 3)
        if latencies
        else None,
    }


MODES = {
    "threads": "[engine]\nworkers = {n}\n",
    "processes": "[engine]\nprocess_workers = {n}\n",
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.throughput",
        description="Calls per second at 1-64 concurrent clients, threads vs processes.",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="timed window per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed load first")
    parser.add_argument("--only", choices=[c.key for c in CASES], help="one example only")
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="what to run"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2,
        help="threads or processes running calls (default: usable cores)",
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=list(CONCURRENCY), help="concurrency levels"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw numbers")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    built = build_examples()
    tools = [resolve(case, built[case.tool_id]) for case in CASES if args.only in (None, case.key)]
    home = Path(tempfile.mkdtemp(prefix="kbt", dir="/tmp"))
    daemon = _Daemon(home)
    results: dict[str, Any] = {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "wasmtime": WASMTIME_VERSION,
        "workers": args.workers,
        "seconds": args.seconds,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "examples": {},
    }
    try:
        _progress("installing the examples (compiles each once)")
        daemon.start("")
        with daemon.client() as client:
            for tool in tools:
                client.call("tools.install", {"path": str(tool.dir), "approve": True})
        daemon.stop()
        for tool in tools:
            key = tool.case.key
            _progress(f"{key}: in-process floor")
            entry: dict[str, Any] = floors(daemon.paths, tool, args.seconds)
            for mode in args.modes:
                daemon.start(MODES[mode].format(n=args.workers))
                # Untimed: every worker starts and loads the component (worker processes
                # start in the background and each maps the AOT file on its first call).
                _progress(f"{key}: {mode}, priming {args.workers} workers")
                trio.run(_drive, daemon.paths.socket, tool, 4 * args.workers, 0.0, 3.0)
                points = {}
                for clients in args.clients:
                    _progress(f"{key}: {mode}, {clients} client(s)")
                    points[str(clients)] = trio.run(
                        _drive, daemon.paths.socket, tool, clients, args.warmup, args.seconds
                    )
                daemon.stop()
                entry[mode] = points
            results["examples"][key] = entry
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return results


def render(results: dict[str, Any], clients: list[int]) -> None:
    out = Console(highlight=False)
    table = Table(
        title=f"calls/s, {results['workers']} workers, {results['cores']} usable cores "
        f"(wasmtime {results['wasmtime']}, Python {results['python']})"
    )
    table.add_column("example")
    table.add_column("how")
    for n in clients:
        table.add_column(f"{n} client{'s' if n > 1 else ''}", justify="right")
    table.add_column("vs floor @16", justify="right")
    for key, entry in results["examples"].items():
        floor = entry["floor_1_thread"]
        table.add_row(key, "in-process, 1 thread (floor)", *[f"{floor:.0f}"] * len(clients), "1.00")
        two = entry["floor_2_threads"]
        table.add_row(
            "", "in-process, 2 threads", *[f"{two:.0f}"] * len(clients), f"{two / floor:.2f}"
        )
        for mode in MODES:
            points = entry.get(mode)
            if not points:
                continue
            at16 = points.get("16", {}).get("calls_per_s")
            verdict = "-"
            if at16 is not None:
                ok = at16 >= TARGET_AT_16 * floor
                verdict = f"{at16 / floor:.2f} " + ("[green]ok[/]" if ok else "[red]<1.2[/]")
            table.add_row(
                "",
                f"kamid, {mode}",
                *[f"{points[str(n)]['calls_per_s']:.0f}" for n in clients],
                verdict,
            )
    out.print(table)
    out.print(
        f"load average (1, 5, 15 min) before {results['load_before']}, "
        f"after {results['load_after']}: other work on the machine lowers every number"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    results = run(args)
    render(results, args.clients)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
