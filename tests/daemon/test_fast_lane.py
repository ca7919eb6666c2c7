"""The fast lane (``tools.exec`` answered by the call thread): same answers as the
dispatcher, whole frames under back-pressure, and nothing recorded late."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from kamid.protocol import Busy, NotFound, ToolFailed
from tests.conftest import Daemon, make_tool, wat_component

from .test_socket import connect, read_message, send

if TYPE_CHECKING:
    from pathlib import Path


def _exec(
    i: int, value: Any, tool: str = "dev.test.echo", *, timeout_ms: int | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"tool": tool, "input": value}
    if timeout_ms is not None:
        params["timeout_ms"] = timeout_ms
    return {"jsonrpc": "2.0", "id": i, "method": "tools.exec", "params": params}


def _install(daemon: Daemon, tmp_path: Path, fixture: str, tool_id: str = "dev.test.echo") -> None:
    """Installs the WAT fixture ``fixture`` as ``tool_id``."""
    tool = make_tool(tmp_path, wat_component(fixture), tool_id=tool_id)
    daemon.call("tools.install", {"path": str(tool)})


def _wait_for_a_running_call(daemon: Daemon) -> None:
    daemon.wait_until(lambda s: s["calls_in_flight"] > 0, "running a call")


def _wait_until_no_call_runs(daemon: Daemon) -> None:
    daemon.wait_until(
        lambda s: s["calls_in_flight"] == 0, "done with the call its client left", timeout=15
    )


def test_answers_match_the_dispatchers(daemon: Daemon, tmp_path: Path) -> None:
    _install(daemon, tmp_path, "echo.wat")
    buf = bytearray()
    with connect(daemon) as sock:
        # The first call resolves the tool through the dispatcher; later ones take the
        # fast lane (the tool is cached and compiled). Errors too: the tool fails on
        # input that is not JSON... which the wire cannot send, so use an unknown tool.
        replies = []
        for i in range(4):
            send(sock, _exec(i, {"n": i}))
            replies.append(read_message(sock, buf))
        send(sock, _exec(9, {}, tool="dev.test.nope"))
        missing = read_message(sock, buf)
    first, *rest = replies
    for i, reply in enumerate(replies):
        assert reply["id"] == i
        assert reply["result"]["output"] == {"n": i}
    shape = {k: sorted(v) if isinstance(v, dict) else v for k, v in first["result"].items()}
    for reply in rest:
        result = reply["result"]
        assert sorted(result) == sorted(first["result"])
        assert sorted(result["usage"]) == sorted(first["result"]["usage"])
        assert (result["tool"], result["version"], result["logs"]) == (
            shape["tool"],
            shape["version"],
            shape["logs"],
        )
    assert missing["error"]["code"] == NotFound.code


def test_big_answers_stay_whole_when_the_client_reads_late(daemon: Daemon, tmp_path: Path) -> None:
    _install(daemon, tmp_path, "echo.wat")
    daemon.call("tools.exec", {"tool": "dev.test.echo", "input": 0})  # resolved and cached
    big = "x" * 50_000  # echo.wat has one page; 24 of these are far more than a socket holds
    buf = bytearray()
    with connect(daemon) as sock:
        for i in range(24):
            send(sock, _exec(i, {"i": i, "big": big}))
        send(sock, {"jsonrpc": "2.0", "id": "status", "method": "daemon.status"})
        time.sleep(1.0)  # nobody reads: answers queue up behind a full socket
        replies = {}
        for _ in range(25):
            reply = read_message(sock, buf)
            replies[reply["id"]] = reply
    assert sorted(replies, key=str) == sorted([*range(24), "status"], key=str)
    for i in range(24):
        assert "result" in replies[i], str(replies[i])[:300]
        assert replies[i]["result"]["output"] == {"i": i, "big": big}
    assert replies["status"]["result"]["calls_served"] >= 1
    assert daemon.call("daemon.status")["calls_in_flight"] == 0


def test_audit_and_tool_log_have_the_call_before_its_answer(daemon: Daemon, tmp_path: Path) -> None:
    _install(daemon, tmp_path, "err.wat", "dev.test.err")
    buf = bytearray()
    log_path = daemon.paths.tool_logs / "dev.test.err.log"
    with connect(daemon) as sock:
        for i in range(20):
            send(sock, _exec(i, {}, tool="dev.test.err"))
            assert read_message(sock, buf)["error"]["code"] == ToolFailed.code
            # The failure is in the tool log and the audit log when the answer arrives.
            assert log_path.read_text().count("failed the tool failed on purpose") == i + 1
            send(sock, {"jsonrpc": "2.0", "id": "a", "method": "audit.list", "params": {}})
            entries = read_message(sock, buf)["result"]["entries"]
            assert sum(e["action"] == "exec" for e in entries) == i + 1
            assert entries[0]["outcome"] == "tool_failed"


def test_a_client_that_goes_away_stops_its_fast_call(daemon: Daemon, tmp_path: Path) -> None:
    _install(daemon, tmp_path, "loop.wat", "dev.test.loop")
    buf = bytearray()
    with connect(daemon) as sock:  # the dispatcher's call: resolves and caches the tool
        send(sock, _exec(1, {}, "dev.test.loop", timeout_ms=100))
        assert read_message(sock, buf)["error"]["data"]["limit"] == "timeout_ms"
    fast = daemon.call("daemon.status")["calls_fast"]
    with connect(daemon) as sock:
        send(sock, _exec(2, {}, "dev.test.loop", timeout_ms=30_000))
        _wait_for_a_running_call(daemon)
        assert daemon.call("daemon.status")["calls_fast"] == fast + 1
    _wait_until_no_call_runs(daemon)
    entries = daemon.call("audit.list", {"tool": "dev.test.loop"})["entries"]
    assert entries[0]["outcome"] == "cancelled"


# Calls sent back to back on one connection, each as soon as the answer before it is
# read: what a hot client does. Whatever path such a call takes, it keeps the rules a
# lone call keeps (a rate token each, the tool as it is now, cancellation on disconnect).


def test_back_to_back_calls_each_take_a_rate_token(kami_home: Path, tmp_path: Path) -> None:
    rated = '[scheduler.tools."dev.test.echo"]\ncalls_per_minute = 3\n'
    daemon = Daemon(kami_home).start(config=rated)
    try:
        _install(daemon, tmp_path, "echo.wat")
        buf = bytearray()
        with connect(daemon) as sock:
            replies = []
            for i in range(5):
                send(sock, _exec(i, i))
                replies.append(read_message(sock, buf))
    finally:
        daemon.stop()
    assert [r["result"]["output"] for r in replies[:3]] == [0, 1, 2]
    for refused in replies[3:]:
        assert refused["error"]["code"] == Busy.code, refused
        assert refused["error"]["data"]["reason"] == "rate_limited"


def test_a_call_right_after_an_uninstall_does_not_run_the_old_tool(
    daemon: Daemon, tmp_path: Path
) -> None:
    _install(daemon, tmp_path, "echo.wat")
    buf = bytearray()
    with connect(daemon) as sock:
        for i in range(3):
            send(sock, _exec(i, i))
            assert read_message(sock, buf)["result"]["output"] == i
        daemon.call("tools.uninstall", {"tool": "dev.test.echo"})
        send(sock, _exec(3, 3))
        gone = read_message(sock, buf)
    assert gone["error"]["code"] == NotFound.code, gone
    assert "dev.test.echo" in gone["error"]["message"]


def test_a_client_that_goes_away_during_a_later_call_stops_it(
    daemon: Daemon, tmp_path: Path
) -> None:
    _install(daemon, tmp_path, "loop.wat", "dev.test.loop")
    buf = bytearray()
    with connect(daemon) as sock:
        for i in range(3):  # the first resolves the tool, the others take the fast lane
            send(sock, _exec(i, {}, "dev.test.loop", timeout_ms=50))
            assert read_message(sock, buf)["error"]["data"]["limit"] == "timeout_ms"
        send(sock, _exec(3, {}, "dev.test.loop", timeout_ms=30_000))
        _wait_for_a_running_call(daemon)
    _wait_until_no_call_runs(daemon)
    entries = daemon.call("audit.list", {"tool": "dev.test.loop"})["entries"]
    assert [e["outcome"] for e in entries[:2]] == ["cancelled", "limit_exceeded"]


def _fresh_memory_calls(daemon: Daemon, tmp_path: Path) -> list[Any]:
    _install(daemon, tmp_path, "dirty.wat", "dev.test.dirty")
    buf = bytearray()
    with connect(daemon) as sock:
        outputs = []
        for i in range(20):
            send(sock, _exec(i, {}, tool="dev.test.dirty"))
            outputs.append(read_message(sock, buf)["result"]["output"])
    return outputs


def test_pooled_slots_come_back_fresh(daemon: Daemon, tmp_path: Path) -> None:
    # The stores' memory slots are reused from call to call (the reaper resets them after
    # the answer): every call must still see the component's initial memory.
    assert _fresh_memory_calls(daemon, tmp_path) == [111] * 20
    status = daemon.call("daemon.status")
    assert status["calls_fast"] >= 18


def test_without_pooling(kami_home: Path, tmp_path: Path) -> None:
    daemon = Daemon(kami_home).start(config="[engine]\npooling = false\n")
    try:
        assert _fresh_memory_calls(daemon, tmp_path) == [111] * 20
    finally:
        daemon.stop()


def test_keep_resident_out_of_range_is_refused(kami_home: Path) -> None:
    daemon = Daemon(kami_home)
    with pytest.raises(RuntimeError) as caught:
        daemon.start(config="[engine]\nkeep_resident_mb = 5000\n")
    daemon.stop()  # closes its stderr file
    assert "keep_resident_mb must be a number of MiB from 0 to 4096 (got 5000)" in str(caught.value)
