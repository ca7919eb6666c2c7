"""MCP ``tools/call`` on the fast lane (started by the connection reader, answered by the
call thread): the same answers and notifications as the slow path, in both eras, and
cancellation frees the slot, drops the answer and stops the call."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.mcp._stdio import Shim, modern
from tests.mcp.conftest import install_wat

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Daemon

#: Usage numbers differ from call to call; everything else must not.
_USAGE = "dev.kami/usage"


def _fast_calls(daemon: Daemon) -> int:
    count: int = daemon.call("daemon.status")["calls_fast"]
    return count


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    meta = dict(result["_meta"])
    meta[_USAGE] = sorted(meta[_USAGE])
    return {**result, "_meta": meta}


def _progress(shim: Shim, token: str) -> list[tuple[int, str]]:
    return [
        (n["params"]["progress"], n["params"]["message"])
        for n in shim.notifications
        if n["method"] == "notifications/progress" and n["params"]["progressToken"] == token
    ]


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_fast_answers_match_the_slow_ones(wat_daemon: Daemon, era: str) -> None:
    def params(token: str) -> dict[str, Any]:
        arguments = {"text": "hi", "times": 2}
        if era == "modern":
            return modern({"name": "echo", "arguments": arguments}, progressToken=token)
        return {"name": "echo", "arguments": arguments, "_meta": {"progressToken": token}}

    with Shim(wat_daemon.home) as shim:
        if era == "legacy":
            shim.initialize("2025-11-25")
        before = _fast_calls(wat_daemon)
        # The first call resolves the tool (a store read): the slow path.
        slow = shim.call("tools/call", params("slow"))
        assert _fast_calls(wat_daemon) == before
        fast = shim.call("tools/call", params("fast"))
        assert _fast_calls(wat_daemon) == before + 1
        assert _comparable(fast) == _comparable(slow)
        assert fast["structuredContent"] == {"text": "hi", "times": 2}
        if era == "modern":
            assert fast["resultType"] == "complete"
            assert fast["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "kami"
        for token in ("slow", "fast"):
            (first, started), (last, finished) = _progress(shim, token)
            assert (first, started) == (0, "running dev.test.echo")
            assert last == 1
            assert finished.startswith("dev.test.echo finished in ")
        # What the fast lane leaves to the slow path still gets its answer there.
        unknown = shim.request("tools/call", params("x") | {"name": "nope"})
        assert unknown["error"]["code"] == -32602
        wrong = shim.call("tools/call", params("y") | {"arguments": {"text": 3}})
        assert wrong["isError"] is True
        assert _fast_calls(wat_daemon) == before + 1


def test_the_fast_lane_keeps_to_the_sessions_era(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home) as shim:
        shim.initialize()
        shim.call("tools/call", {"name": "echo", "arguments": {"text": "warm"}})
        before = _fast_calls(wat_daemon)
        # A legacy session refuses the 2026-07-28 envelope, fast lane or not.
        answer = shim.request("tools/call", modern({"name": "echo", "arguments": {"text": "m"}}))
        assert answer["error"]["code"] == -32600
        assert _fast_calls(wat_daemon) == before


def test_cancelling_a_fast_call_frees_its_slot_and_drops_its_answer(
    wat_daemon: Daemon, tmp_path: Path
) -> None:
    extra = "[security]\ntimeout_ms = 30000\n"
    install_wat(wat_daemon, tmp_path, "loop.wat", "dev.test.spin", extra, readme=False)
    with Shim(wat_daemon.home, "--max-in-flight", "1") as shim:
        shim.initialize()
        # The first call (slow path, cancelled too) caches the tool.
        first = shim.start("tools/call", {"name": "spin", "arguments": {}})
        while wat_daemon.call("daemon.status")["calls_in_flight"] == 0:
            time.sleep(0.02)
        shim.notify("notifications/cancelled", {"requestId": first, "reason": "test"})
        while wat_daemon.call("daemon.status")["calls_in_flight"]:
            time.sleep(0.02)
        before = _fast_calls(wat_daemon)
        spinning = shim.start("tools/call", {"name": "spin", "arguments": {}})
        while wat_daemon.call("daemon.status")["calls_in_flight"] == 0:
            time.sleep(0.02)
        assert _fast_calls(wat_daemon) == before + 1
        cancelled_at = time.monotonic()
        shim.notify("notifications/cancelled", {"requestId": spinning, "reason": "test"})
        # The session's only slot is free again.
        answer = shim.request("tools/call", {"name": "echo", "arguments": {"text": "next"}})
        assert answer["result"]["structuredContent"] == {"text": "next"}
        # The call itself stopped long before its 30 s deadline.
        while wat_daemon.call("daemon.status")["calls_in_flight"]:
            assert time.monotonic() - cancelled_at < 15, "the cancelled call kept running"
            time.sleep(0.02)
        # The cancelled call ended without an answer: the next line answers the ping.
        assert shim.request("ping")["result"] == {}


def test_an_answered_id_may_come_again_at_once(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home) as shim:
        shim.initialize()
        for i in range(30):
            text = f"again {i}"
            shim.send(
                {
                    "jsonrpc": "2.0",
                    "id": "same",
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": text}},
                }
            )
            answer = shim.wait("same")
            assert answer["result"]["structuredContent"] == {"text": text}, answer
