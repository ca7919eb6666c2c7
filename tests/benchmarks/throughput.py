"""``python -m tests.benchmarks.throughput``: calls per second under concurrent load.

For each example (componentize-py ``dev.kami.echo``, componentize-js ``dev.kami.hello``),
in one run on this machine:

* the single-thread in-process floor: ``Engine.call`` in a loop, a fresh instance per
  call, no socket, no trio (and the same with two threads, for comparison);
* a real kamid driven by 1, 4, 16 and 64 concurrent clients (one connection each, one
  call at a time, from one trio process), with calls in worker threads
  (``[engine] workers = N``), the same without wasmtime's pooling allocator
  (``pooling = false``), and in worker processes (``[engine] process_workers = N``).

The measurements take turns in rounds (floor, then each daemon at each concurrency) and
each number is the median of its rounds, so that other work on the machine weighs on all
of them alike. Every call's output is checked. Each example is compiled once: one
daemon's install writes the AOT cache, and the floor and both daemons use copies of it.
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


class Floor:
    """The in-process floors, on a copy of the daemon's home (its AOT cache, verified)."""

    def __init__(self, paths: Paths) -> None:
        from kamid.store import Store

        self._store = Store(paths)
        self.engine = Engine(aot_dir=paths.aot, aot_index=self._store)
        self._ticking = _ticking(self.engine)
        self._ticking.__enter__()

    def measure(self, tool: Tool, seconds: float) -> dict[str, float]:
        _floor(self.engine, tool, threads=1, seconds=min(seconds, 0.3))  # warm
        one = _floor(self.engine, tool, threads=1, seconds=seconds)
        two = _floor(self.engine, tool, threads=2, seconds=seconds)
        return {"floor_1_thread": round(one, 1), "floor_2_threads": round(two, 1)}

    def close(self) -> None:
        self._ticking.__exit__(None, None, None)
        self._store.close()


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
    "unpooled": "[engine]\nworkers = {n}\npooling = false\n",
    "processes": "[engine]\nprocess_workers = {n}\n",
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.throughput",
        description="Calls per second at 1-64 concurrent clients, threads vs processes.",
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="timed window per point and round"
    )
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed load first")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds taking turns; medians are reported"
    )
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
    """Measures in ``--rounds`` rounds that take turns (floor, then each mode at each
    concurrency), so that other load on the machine hits every number alike; each
    number is the median of its rounds."""
    built = build_examples()
    tools = [resolve(case, built[case.tool_id]) for case in CASES if args.only in (None, case.key)]
    scratch = Path(tempfile.mkdtemp(prefix="kbt", dir="/tmp"))
    installer = _Daemon(scratch / "h")
    daemons = {mode: _Daemon(scratch / mode[0]) for mode in args.modes}
    results: dict[str, Any] = {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "wasmtime": WASMTIME_VERSION,
        "workers": args.workers,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "examples": {},
    }
    floor: Floor | None = None
    try:
        _progress("installing the examples (compiles each once)")
        installer.start("")
        with installer.client() as client:
            for tool in tools:
                client.call("tools.install", {"path": str(tool.dir), "approve": True})
        installer.stop()
        # Every daemon (and the floor) gets a copy of the installed home: one compile each.
        for name in ("f", *(mode[0] for mode in args.modes)):
            shutil.copytree(scratch / "h", scratch / name, symlinks=True)
        floor = Floor(Paths.under(scratch / "f"))
        for mode, daemon in daemons.items():
            daemon.start(MODES[mode].format(n=args.workers))  # an idle daemon costs no CPU
            for tool in tools:
                # Untimed: worker processes start in the background, and each maps the AOT
                # file on its first call.
                _progress(f"{tool.case.key}: priming kamid with {mode}")
                trio.run(_drive, daemon.paths.socket, tool, 4 * args.workers, 0.0, 2.0)
        samples: dict[str, dict[str, list[Any]]] = {t.case.key: {} for t in tools}
        for round_ in range(args.rounds):
            for tool in tools:
                key = tool.case.key
                _progress(f"round {round_ + 1}/{args.rounds}: {key}")
                for name, value in floor.measure(tool, args.seconds).items():
                    samples[key].setdefault(name, []).append(value)
                for clients in args.clients:
                    for mode, daemon in daemons.items():
                        point = trio.run(
                            _drive, daemon.paths.socket, tool, clients, args.warmup, args.seconds
                        )
                        samples[key].setdefault(f"{mode}/{clients}", []).append(point)
        for key, by_name in samples.items():
            entry: dict[str, Any] = {}
            for name, values in by_name.items():
                if name.startswith("floor"):
                    entry[name] = statistics.median(values)
                    entry[f"{name}_rounds"] = values
                    continue
                mode, clients = name.split("/")
                rates = [v["calls_per_s"] for v in values]
                entry.setdefault(mode, {})[clients] = {
                    "calls_per_s": statistics.median(rates),
                    "rounds": values,
                }
            results["examples"][key] = entry
    finally:
        if floor is not None:
            floor.close()
        for daemon in (installer, *daemons.values()):
            daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return results


def render(results: dict[str, Any], clients: list[int]) -> None:
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=110)
    table = Table(
        title=f"calls/s, {results['workers']} workers, {results['cores']} usable cores "
        f"(wasmtime {results['wasmtime']}, Python {results['python']})"
    )
    table.add_column("example")
    table.add_column("how", no_wrap=True)
    for n in clients:
        table.add_column(f"{n} client{'s' if n > 1 else ''}", justify="right")
    table.add_column("@16 / floor", justify="right")
    for key, entry in results["examples"].items():
        floor = entry["floor_1_thread"]
        blank = [""] * (len(clients) - 1)
        table.add_row(key, "in-process floor: 1 thread", f"{floor:.0f}", *blank, "1.00")
        two = entry["floor_2_threads"]
        table.add_row("", "in-process: 2 threads", f"{two:.0f}", *blank, f"{two / floor:.2f}")
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
                f"kamid: {mode}",
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
