"""Resource attacks: each limit goes off with a structured error naming it and its value."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.adversarial.conftest import Hostile

Snapshot = dict[str, Any]


def assert_limit(exc: Any, limit: str, value: int, *words: str) -> None:
    assert exc.code == -32004, exc
    assert exc.data["limit"] == limit
    assert exc.data["value"] == value
    for word in words:
        assert word in exc.message
    assert "usage" in exc.data or limit == "input_bytes"


def test_fuel_bomb(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.fuel", {})
    assert_limit(exc, "fuel", 20_000_000, "fuel", "max_fuel")
    assert exc.data["usage"]["fuel_consumed"] == 20_000_000
    hostile.assert_contained(before)


def test_infinite_loop(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.loop", {})
    assert_limit(exc, "timeout_ms", 400, "400 ms deadline")
    assert exc.data["usage"]["wall_ms"] >= 400
    hostile.assert_contained(before)


def test_memory_bomb(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.memory", {})
    assert_limit(exc, "memory_bytes", 16 * 1024 * 1024, "ran out of memory", "16 MiB")
    hostile.assert_contained(before)


def test_memory_bomb_at_instantiation(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.bigmem", {})
    assert_limit(exc, "memory_bytes", 16 * 1024 * 1024, "it starts with")
    hostile.assert_contained(before)


def test_stack_overflow(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.stack", {})
    assert exc.code == -32007
    assert "dev.adv.stack trapped" in exc.message
    assert "stack" in exc.message
    hostile.assert_contained(before)


def test_huge_output(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.output", {})
    assert_limit(exc, "output_bytes", 65536, "output limit")
    hostile.assert_contained(before)


def test_stdout_flood_is_capped(hostile: Hostile, before: Snapshot) -> None:
    # A chatty tool is not an error: it keeps running, its output is cut and counted.
    result = hostile.exec("dev.adv.flood", {})
    assert result["output"] == {}
    kept = sum(len(line["message"]) for line in result["logs"] if line["level"] == "stdout")
    assert kept <= 4096
    assert "1044480 bytes of guest stdout/stderr dropped" in result["logs"][-1]["message"]
    hostile.assert_contained(before)


def test_host_call_flood(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.host", {})
    assert_limit(exc, "host_calls", 500, "host calls")
    assert exc.data["usage"]["host_calls"] == 501
    hostile.assert_contained(before)


def test_huge_input(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.echo", "x" * 70_000)
    assert_limit(exc, "input_bytes", 65536, "larger than the 65536-byte limit")
    hostile.assert_contained(before)


def test_table_bomb(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.table", {})
    assert_limit(exc, "table_elements", 100_000, "table")
    hostile.assert_contained(before)


def test_instance_bomb(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.instances", {})
    assert_limit(exc, "instances", 100, "instances")
    hostile.assert_contained(before)


def test_memory_count_bomb(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.memories", {})
    assert exc.code == -32004
    assert exc.data["limit"] == "memories"
    assert exc.data["value"] == 4
    assert "more than 4 linear memories" in exc.message
    hostile.assert_contained(before)


def test_call_timeout_cannot_raise_the_deadline(hostile: Hostile, before: Snapshot) -> None:
    exc = hostile.error("dev.adv.loop", {}, timeout_ms=10**9)
    assert_limit(exc, "timeout_ms", 400)
    hostile.assert_contained(before)


def test_sandbox_quota(hostile: Hostile, before: Snapshot) -> None:
    # 2 MiB into a 1 MiB quota: the call that crosses it fails, later ones get /data
    # read-only (they can still read), and nothing outside the sandbox grows.
    box = hostile.sandbox("dev.adv.probe")
    try:
        exc = hostile.error("dev.adv.probe", {"op": "fill", "path": "/data/fill", "chunks": 32})
        assert_limit(exc, "sandbox_bytes", 1048576, "quota", "kamictl grant")
        result = hostile.exec(
            "dev.adv.probe",
            [{"op": "stat", "path": "/data/fill"}, {"op": "write", "path": "/data/more"}],
        )
        stat, write = result["output"]
        assert stat == {"ok": 32 * 65536}
        assert write["errno"] is not None
        assert "not permitted" in write["error"].lower()
        assert any("/data is read-only" in line["message"] for line in result["logs"])
    finally:
        for entry in box.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    assert hostile.probe({"op": "write", "path": "/data/ok"}) == [{"ok": "written"}]
    (box / "ok").unlink()
    hostile.assert_contained(before)


@pytest.mark.parametrize("case", ["fuel", "loop", "memory", "host"])
def test_failures_are_audited_with_their_limit(hostile: Hostile, case: str) -> None:
    tool = f"dev.adv.{case}"
    entries = hostile.call("audit.list", {"tool": tool, "limit": 1})["entries"]
    if not entries:
        pytest.skip(f"{tool} has not run yet in this session")
    entry = entries[0]
    assert entry["outcome"] == "limit_exceeded"
    assert entry["detail"]["limit"] in ("fuel", "timeout_ms", "memory_bytes", "host_calls")
    assert entry["usage"] is not None
    assert entry["input_sha256"] is not None
    assert json.dumps(entry)  # plain JSON all the way down
