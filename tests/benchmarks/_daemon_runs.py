"""Measurements against a real daemon: hot calls, restarts, and the ``kamictl`` process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kamictl.client import Client

    from ._cases import Tool
    from ._daemon import BenchDaemon

__all__ = [
    "ImportCost",
    "Restart",
    "SocketHot",
    "import_cost",
    "install",
    "kamictl_exec_argv",
    "parse_importtime",
    "process_times",
    "raw_client_argv",
    "restart_first_call",
]


def _exec(client: Client, tool: Tool) -> dict[str, Any]:
    result: dict[str, Any] = client.call(
        "tools.exec", {"tool": tool.case.tool_id, "input": tool.case.input}
    )
    if result["output"] != tool.case.expected:
        raise RuntimeError(
            f"{tool.case.tool_id} answered {result['output']!r}, expected "
            f"{tool.case.expected!r}; the benchmark only times correct calls"
        )
    return result


def install(daemon: BenchDaemon, tool: Tool) -> tuple[int, dict[str, Any]]:
    """``tools.install`` of the built example; returns its nanoseconds and result."""
    with daemon.client(timeout=600) as client:
        started = time.perf_counter_ns()
        result: dict[str, Any] = client.call(
            "tools.install", {"path": str(tool.dir), "approve": True}
        )
        return time.perf_counter_ns() - started, result


class SocketHot:
    """Sequential ``tools.exec`` calls over one persistent connection to ``daemon``.

    Use it as a context manager: the connection stays open while it is.
    """

    name = "socket"

    def __init__(self, daemon: BenchDaemon, tool: Tool) -> None:
        self._daemon = daemon
        self._client = daemon.client()
        self._tool = tool
        #: The daemon's own ``usage.wall_ms`` of every call (instantiate + run).
        self.engine_wall_ms: list[float] = []
        #: CPU the daemon process used during the timed calls (None: unknown).
        self.daemon_cpu_ns: int | None = 0

    def __enter__(self) -> SocketHot:
        self._client.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def warm_up(self, n: int) -> None:
        """``n`` untimed calls (the first loads the component if needed)."""
        self.sample(n)
        self.engine_wall_ms.clear()
        self.daemon_cpu_ns = 0

    def sample(self, n: int) -> list[int]:
        """Round-trip nanoseconds of ``n`` calls, as the client sees them."""
        samples: list[int] = []
        cpu_before = self._daemon.cpu_ns()
        for _ in range(n):
            started = time.perf_counter_ns()
            result = _exec(self._client, self._tool)
            samples.append(time.perf_counter_ns() - started)
            self.engine_wall_ms.append(float(result["usage"]["wall_ms"]))
        cpu_after = self._daemon.cpu_ns()
        if cpu_before is None or cpu_after is None or self.daemon_cpu_ns is None:
            self.daemon_cpu_ns = None
        else:
            self.daemon_cpu_ns += cpu_after - cpu_before
        return samples


@dataclass(frozen=True)
class Restart:
    #: Spawn to "ready" (the socket accepts connections).
    start_ns: int
    #: Connect + the first ``tools.exec`` on the new daemon.
    first_call_ns: int
    #: The daemon's ``usage.wall_ms`` of that call (instantiate + run only).
    first_call_wall_ms: float
    #: Where the component came from, per the daemon's cache statistics.
    disk_hits: int
    compiles: int


def restart_first_call(daemon: BenchDaemon, tool: Tool) -> Restart:
    """Stops the daemon, starts a new one on the same home, times its first call."""
    daemon.stop()
    start_ns = daemon.start()
    with daemon.client() as client:
        started = time.perf_counter_ns()
        result = _exec(client, tool)
        first_call_ns = time.perf_counter_ns() - started
        cache = client.call("daemon.status")["cache"]
    return Restart(
        start_ns=start_ns,
        first_call_ns=first_call_ns,
        first_call_wall_ms=float(result["usage"]["wall_ms"]),
        disk_hits=int(cache["disk_hits"]),
        compiles=int(cache["compiles"]),
    )


def process_times(argv: list[str], *, env: dict[str, str], runs: int) -> list[int]:
    """Nanoseconds of ``runs`` complete runs of ``argv`` (spawn to exit, output drained).

    Raises:
        RuntimeError: a run failed; the message has its stderr.
    """
    samples: list[int] = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        proc = subprocess.run(argv, env=env, capture_output=True, check=False)
        samples.append(time.perf_counter_ns() - started)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {proc.returncode}:\n"
                f"{proc.stderr.decode(errors='replace')}"
            )
    return samples


def kamictl_exec_argv(tool: Tool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kamictl",
        "exec",
        tool.case.tool_id,
        "--input",
        tool.case.input_text,
        "--no-autostart",
    ]


#: The least a Python client can do for one ``tools.exec``: connect, one line out, one
#: line in, print. What ``kamictl exec`` costs beyond this is its own start-up.
_RAW_CLIENT = """\
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.path.join(os.environ["KAMI_HOME"], "run", "kamid.sock"))
request = {"jsonrpc": "2.0", "id": 1, "method": "tools.exec", "params": json.loads(sys.argv[1])}
s.sendall(json.dumps(request).encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        sys.exit("kamid closed the connection")
    data += chunk
answer = json.loads(data)
if "error" in answer:
    sys.exit(answer["error"]["message"])
print(json.dumps(answer["result"]["output"], indent=2))
"""


def raw_client_argv(tool: Tool) -> list[str]:
    """``python -c`` a minimal socket client (no kamictl, no kamid.protocol imports)."""
    params = json.dumps({"tool": tool.case.tool_id, "input": tool.case.input})
    return [sys.executable, "-c", _RAW_CLIENT, params]


@dataclass(frozen=True)
class ImportCost:
    #: Cumulative microseconds of every import that ``-X importtime`` reports.
    total_us: int
    #: Top-level imports by cumulative microseconds, largest first.
    top: list[tuple[str, int]]
    #: Every module imported (to spot ones the exec path should not need).
    modules: list[str]


_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def parse_importtime(stderr: str, *, top: int = 10) -> ImportCost:
    """Reads ``python -X importtime`` output: the top-level importers by cumulative time."""
    roots: dict[str, int] = {}
    modules: list[str] = []
    total = 0
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match is None:
            continue
        self_us, cumulative, indent, name = match.groups()
        modules.append(name)
        total += int(self_us)
        if len(indent) == 1:  # a top-level import (nested ones are indented further)
            roots[name] = roots.get(name, 0) + int(cumulative)
    ranked = sorted(roots.items(), key=lambda item: item[1], reverse=True)
    return ImportCost(total_us=total, top=ranked[:top], modules=modules)


def import_cost(tool: Tool, *, env: dict[str, str]) -> ImportCost:
    """One ``python -X importtime -m kamictl exec ...`` against the running daemon."""
    argv = kamictl_exec_argv(tool)
    argv[1:1] = ["-X", "importtime"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kamictl exec under -X importtime exited {proc.returncode}")
    return parse_importtime(proc.stderr)
