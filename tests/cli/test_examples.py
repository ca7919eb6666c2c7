"""The real Python and JavaScript examples, built from source, installed and run through
kamid with kamictl: the path a user takes after `make demo`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tests.conftest import Daemon, run_kamictl

if TYPE_CHECKING:
    from pathlib import Path


def _install_examples(daemon: Daemon, built: dict[str, Path]) -> None:
    # The examples that ask for no capabilities (the network ones have their own tests).
    for tool_id in ("dev.kami.echo", "dev.kami.hello"):
        r = run_kamictl(daemon.home, "install", str(built[tool_id]))
        assert r.returncode == 0, r.stderr


def test_examples_install_and_run(daemon: Daemon, built_examples: dict[str, Path]) -> None:
    _install_examples(daemon, built_examples)

    r = run_kamictl(daemon.home, "exec", "echo", "--input", '{"text": "hé", "repeat": 3}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"echo": "héhéhé", "length": 6}

    r = run_kamictl(daemon.home, "exec", "dev.kami.hello", "--input", '{"name": "agent"}', "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["output"] == {"greeting": "Hello, agent!"}
    assert result["usage"]["fuel_consumed"] > 0
    assert result["usage"]["peak_memory_bytes"] > 0
    assert any(line["level"] == "info" for line in result["logs"])

    # A tool's own error reaches the caller with its message, and nothing breaks.
    r = run_kamictl(daemon.home, "exec", "echo", "--input", '{"repeat": 2}')
    assert r.returncode == 1
    assert 'missing "text"' in r.stderr

    tools = daemon.call("tools.list")["tools"]
    assert {t["id"] for t in tools} == {"dev.kami.echo", "dev.kami.hello"}
    # The tool log got the call's log line.
    log = (daemon.paths.tool_logs / "dev.kami.echo.log").read_text()
    assert "echoing 2 characters x3" in log


def test_aot_cache_survives_restart_and_tampering_is_caught(
    kami_home: Path, built_examples: dict[str, Path]
) -> None:
    d = Daemon(kami_home).start()
    try:
        d.call("tools.install", {"path": str(built_examples["dev.kami.hello"])})
        assert d.call("daemon.status")["cache"]["compiles"] == 1
    finally:
        d.stop()

    d = Daemon(kami_home).start()
    try:
        out = d.call("tools.exec", {"tool": "hello", "input": {"name": "again"}})
        assert out["output"] == {"greeting": "Hello, again!"}
        cache = d.call("daemon.status")["cache"]
        assert (cache["disk_hits"], cache["compiles"], cache["rejected"]) == (1, 0, 0)
    finally:
        d.stop()

    # Flip bytes inside the native code: the recorded hash no longer matches.
    (aot,) = d.paths.aot.glob("*.cwasm")
    data = bytearray(aot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    aot.write_bytes(bytes(data))

    d = Daemon(kami_home).start()
    try:
        out = d.call("tools.exec", {"tool": "hello", "input": {"name": "safe"}})
        assert out["output"] == {"greeting": "Hello, safe!"}
        cache = d.call("daemon.status")["cache"]
        assert (cache["rejected"], cache["compiles"]) == (1, 1)
    finally:
        d.stop()
