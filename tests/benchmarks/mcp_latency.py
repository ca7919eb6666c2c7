"""``python -m tests.benchmarks.mcp_latency``: MCP ``tools/call`` latency through KAMI.

One SDK client (the official ``mcp`` package, under trio) measures, in the same run:

- **kami**: ``kamictl mcp`` over stdio -> kamid -> the componentize-py echo example in a
  fresh WebAssembly sandbox per call;
- **sdk**: an unsandboxed official-SDK server (``MCPServer``) over stdio, running the same
  echo as a plain Python function in its own process;
- **sdk in-process**: the same ``MCPServer`` connected in-process (no pipe, no JSON);
- **tools.exec**: the echo over kamid's socket without MCP, for the MCP layers' share.

Each mode (``legacy`` handshake, ``auto`` = 2026-07-28) gets its own sessions; the stdio
servers are timed in alternating blocks so that drift hits both alike. Targets: KAMI p50
at most 1.5x the SDK server's over stdio, and KAMI p99 at most 10 ms.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._daemon import BenchDaemon, remove_home, temp_home
from ._stats import ratio, summarize

if TYPE_CHECKING:
    from mcp.client import Client

__all__ = ["main", "measure"]

TARGET_P50_RATIO = 1.5
TARGET_P99_MS = 10.0
BLOCK = 50
ARGUMENTS = {"text": "hello from the benchmark", "repeat": 2}

#: The unsandboxed comparison: the echo example's logic as an MCPServer tool.
SDK_SERVER = textwrap.dedent(
    '''
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("sdk-echo")


    @app.tool()
    def echo(text: str, repeat: int = 1) -> dict:
        """Echoes the given text back, optionally repeated, with its length."""
        if not 1 <= repeat <= 100:
            raise ValueError("repeat must be an integer from 1 to 100")
        echoed = text * repeat
        return {"echo": echoed, "length": len(echoed)}


    if __name__ == "__main__":
        app.run()
    '''
)


def _progress(message: str) -> None:
    sys.stderr.write(f"... {message}\n")


async def _time_calls(client: Client, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await client.call_tool("echo", ARGUMENTS)
        samples.append((time.perf_counter() - started) * 1000)
        if result.is_error:
            raise RuntimeError(f"the echo call failed: {result.content}")
    return samples


async def _interleaved(
    clients: dict[str, Client], *, calls: int, warmup: int
) -> dict[str, list[float]]:
    for client in clients.values():
        await _time_calls(client, warmup)
    samples: dict[str, list[float]] = {name: [] for name in clients}
    while min(len(s) for s in samples.values()) < calls:
        for name, client in clients.items():
            samples[name] += await _time_calls(client, min(BLOCK, calls - len(samples[name])))
    return samples


async def _mode(home: Path, server: Path, mode: str, *, calls: int, warmup: int) -> dict[str, Any]:
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters

    env = {"KAMI_HOME": str(home)}
    kami = StdioServerParameters(command=sys.executable, args=["-m", "kamictl", "mcp"], env=env)
    sdk = StdioServerParameters(command=sys.executable, args=[str(server)])
    async with Client(kami, mode=mode) as kami_client, Client(sdk, mode=mode) as sdk_client:
        versions = {"kami": kami_client.protocol_version, "sdk": sdk_client.protocol_version}
        samples = await _interleaved(
            {"kami": kami_client, "sdk": sdk_client}, calls=calls, warmup=warmup
        )
    sys.path.insert(0, str(server.parent))
    try:
        from sdk_echo_server import app  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    async with Client(app, mode=mode) as inproc:
        await _time_calls(inproc, warmup)
        samples["sdk_inprocess"] = await _time_calls(inproc, calls)
    return {"versions": versions, "samples_ms": samples}


def _socket_exec(daemon: BenchDaemon, *, calls: int, warmup: int) -> list[float]:
    with daemon.client() as client:
        params = {"tool": "dev.kami.echo", "input": ARGUMENTS}
        for _ in range(warmup):
            client.call("tools.exec", params)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            client.call("tools.exec", params)
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(
    *, calls: int = 500, warmup: int = 50, modes: tuple[str, ...] = ("legacy", "auto")
) -> dict[str, Any]:
    """Every measurement; returns the JSON-ready results."""
    import trio

    from tests._examples import build_examples

    _progress("building the examples (cached under .toolchain/examples)")
    echo = build_examples()["dev.kami.echo"]
    home = temp_home("kbm")
    scratch = temp_home("kbs")
    daemon = BenchDaemon(home)
    try:
        server = scratch / "sdk_echo_server.py"
        server.write_text(SDK_SERVER)
        _progress("starting kamid and installing the echo example (compiles it)")
        daemon.start()
        with daemon.client() as client:
            client.call("tools.install", {"path": str(echo), "approve": True})
        results: dict[str, Any] = {"calls": calls, "warmup": warmup, "modes": {}}
        _progress(f"tools.exec over the socket x{calls}")
        results["tools_exec"] = summarize(
            _socket_exec(daemon, calls=calls, warmup=warmup)
        ).as_dict()
        for mode in modes:
            _progress(f"{mode}: {calls} tools/call each through kamictl mcp and an SDK server")
            run = trio.run(functools.partial(_mode, home, server, mode, calls=calls, warmup=warmup))
            summaries = {k: summarize(v).as_dict() for k, v in run["samples_ms"].items()}
            kami, sdk = summaries["kami"], summaries["sdk"]
            results["modes"][mode] = {
                "versions": run["versions"],
                **summaries,
                "p50_ratio_kami_over_sdk": ratio(kami["p50"], sdk["p50"]),
                "targets": {
                    "p50_ratio": ratio(kami["p50"], sdk["p50"]) <= TARGET_P50_RATIO,
                    "p99_ms": kami["p99"] <= TARGET_P99_MS,
                },
            }
        with daemon.client() as client:
            status = client.call("daemon.status")
        results["fast_lane"] = {
            "fast": status["calls_fast"],
            "calls": status["calls_served"] + status["calls_failed"],
        }
        return results
    finally:
        daemon.stop()
        remove_home(home)
        remove_home(scratch)


def render(results: dict[str, Any]) -> str:
    lines = [
        f"MCP tools/call latency, ms ({results['calls']} calls after {results['warmup']} "
        "warm-up calls each)",
        "",
        f"{'mode':8} {'server':30} {'p50':>8} {'p99':>8} {'mean':>8}",
    ]
    names = {
        "kami": "kamictl mcp -> kamid -> wasm",
        "sdk": "MCPServer over stdio",
        "sdk_inprocess": "MCPServer in-process",
    }
    for mode, out in results["modes"].items():
        for key, label in names.items():
            s = out[key]
            lines.append(f"{mode:8} {label:30} {s['p50']:8.2f} {s['p99']:8.2f} {s['mean']:8.2f}")
        t = out["targets"]
        lines.append(
            f"{'':8} kami/sdk p50 = {out['p50_ratio_kami_over_sdk']:.2f} "
            f"(target <= {TARGET_P50_RATIO}: {'met' if t['p50_ratio'] else 'MISSED'}); "
            f"kami p99 {out['kami']['p99']:.2f} ms (target <= {TARGET_P99_MS:g}: "
            f"{'met' if t['p99_ms'] else 'MISSED'})"
        )
    s = results["tools_exec"]
    lines.append(
        f"{'':8} {'tools.exec, no MCP (socket)':30} "
        f"{s['p50']:8.2f} {s['p99']:8.2f} {s['mean']:8.2f}"
    )
    fast = results["fast_lane"]
    lines.append(
        f"{'':8} kamid ran {fast['fast']} of its {fast['calls']} calls on the fast lane "
        "(the others resolved the tool first, or found no free slot)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.mcp_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--calls", type=int, default=500, help="timed calls per server (500)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls first (50)")
    parser.add_argument("--mode", choices=["legacy", "auto"], help="one protocol era only")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw numbers")
    args = parser.parse_args(argv)
    if args.calls < 2:
        parser.error("--calls must be at least 2")
    modes = (args.mode,) if args.mode else ("legacy", "auto")
    results = measure(calls=args.calls, warmup=args.warmup, modes=modes)
    sys.stdout.write(render(results) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
