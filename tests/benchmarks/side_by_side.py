"""``python -m tests.benchmarks.side_by_side OTHER_TREE``: hot ``tools.exec`` latency of
this source tree and another one (a ``git worktree`` of an older commit, say), measured
in one run.

On a shared VM absolute timings drift by 10-20 % within an afternoon, so comparing two
``make bench`` runs made at different times says little about a change worth 0.05 ms.
This starts one kamid from each tree (each started in its tree, which ``python -m``
puts first on ``sys.path``, and given it on ``PYTHONPATH``), installs the
example in both, and times the same calls on both alternately, in blocks, with one
client: whatever the machine does hits both alike.

    git worktree add /tmp/before HEAD~3
    .venv/bin/python -m tests.benchmarks.side_by_side /tmp/before --only js
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ._cases import CASES
from ._daemon import BenchDaemon, remove_home, temp_home
from ._stats import ratio, summarize

if TYPE_CHECKING:
    from ._cases import Case

__all__ = ["main"]

BLOCK = 50
#: The source tree this module belongs to.
THIS_TREE = Path(__file__).resolve().parents[2]


def _round_trip(sock: socket.socket, line: bytes) -> float:
    started = time.perf_counter()
    sock.sendall(line)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("kamid closed the connection")
        buf += chunk
    took = (time.perf_counter() - started) * 1000
    if b'"error"' in buf:
        raise RuntimeError(f"the call failed: {buf[:300]!r}")
    return took


def _compare(case: Case, tool: Path, other: Path, *, calls: int, warmup: int) -> None:
    homes = {name: temp_home(f"kab{name[0]}") for name in ("this", "other")}
    trees = {"this": THIS_TREE, "other": other}
    daemons = {name: BenchDaemon(home, source=trees[name]) for name, home in homes.items()}
    socks: dict[str, socket.socket] = {}
    try:
        for name, daemon in daemons.items():
            daemon.start()
            with daemon.client() as client:
                client.call("tools.install", {"path": str(tool), "approve": True})
            socks[name] = socket.socket(socket.AF_UNIX)
            socks[name].connect(str(daemon.paths.socket))
        samples: dict[str, list[float]] = {name: [] for name in daemons}
        request = {"tool": case.tool_id, "input": case.input}
        line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools.exec", "params": request})
        encoded = line.encode() + b"\n"
        for sock in socks.values():
            for _ in range(warmup):
                _round_trip(sock, encoded)
        for _ in range(max(1, calls // BLOCK)):
            for name, sock in socks.items():
                samples[name].extend(_round_trip(sock, encoded) for _ in range(BLOCK))
        this, theirs = summarize(samples["this"]), summarize(samples["other"])
        print(f"{case.tool_id}: tools.exec round trip, ms ({len(samples['this'])} calls each)")
        print(f"  {'tree':40} {'p50':>7} {'p99':>7} {'mean':>7}")
        for label, s in ((str(THIS_TREE), this), (str(other), theirs)):
            print(f"  {label[-40:]:40} {s.p50:7.3f} {s.p99:7.3f} {s.mean:7.3f}")
        print(f"  this / other p50 = {ratio(this.p50, theirs.p50):.3f}")
    finally:
        for sock in socks.values():
            sock.close()
        for name, daemon in daemons.items():
            daemon.stop()
            remove_home(homes[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.side_by_side")
    parser.add_argument("other", type=Path, help="the other source tree (a git worktree)")
    parser.add_argument("--only", choices=[c.key for c in CASES], help="one example only")
    parser.add_argument("--calls", type=int, default=500, help="timed calls per tree")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls first")
    args = parser.parse_args(argv)
    if not (args.other / "kamid" / "__init__.py").is_file():
        parser.error(f"{args.other} is not a KAMI source tree (no kamid/__init__.py)")
    from tests._examples import build_examples

    built = build_examples()
    for case in CASES:
        if args.only in (None, case.key):
            other = args.other.resolve()
            _compare(case, built[case.tool_id], other, calls=args.calls, warmup=args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
