"""``kamictl mcp`` spoken to by hand: both eras' edge cases, line by line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import Daemon, run_kamictl
from tests.mcp._stdio import Shim, modern
from tests.mcp.conftest import install_wat

if TYPE_CHECKING:
    from pathlib import Path


def test_initialize_negotiates_each_legacy_revision(wat_daemon: Daemon) -> None:
    for requested, expected in [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("2099-01-01", "2025-11-25"),  # unknown: answer with the newest
    ]:
        with Shim(wat_daemon.home) as shim:
            result = shim.initialize(requested)
            assert result["protocolVersion"] == expected
            assert result["capabilities"]["tools"] == {"listChanged": True}
            assert "completions" not in result["capabilities"]
            assert result["serverInfo"]["name"] == "kami"
            tools = shim.call("tools/list")["tools"]
            echo = next(t for t in tools if t["name"] == "echo")
            # Each revision sees only the fields it defines.
            assert ("annotations" in echo) == (expected != "2024-11-05")
            assert ("title" in echo) == (expected >= "2025-06-18")
            assert shim.call("ping") == {}


def test_malformed_json_gets_a_parse_error_and_the_session_goes_on(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home) as shim:
        shim.send_raw(b"{this is not json\n")
        error = shim.recv()
        assert error["id"] is None
        assert error["error"]["code"] == -32700
        shim.initialize()
        shim.send_raw(b'{"jsonrpc": "2.0", "id": 5, "method": "tools/list"\n')
        assert shim.recv()["error"]["code"] == -32700
        shim.send_raw(b"[1, 2]\n")  # a batch that is not one
        assert shim.recv()["error"]["code"] == -32600
        assert shim.call("tools/list")["tools"]
        # Messages far longer than a pipe's buffer pass whole, both ways.
        uri = "kami://tools/" + "x" * 500_000
        long = shim.request("resources/read", {"uri": uri})
        assert long["error"]["data"]["uri"] == uri


def test_requests_before_initialize_are_refused(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home) as shim:
        answer = shim.request("tools/list")
        assert answer["error"]["code"] == -32600
        assert "initialize" in answer["error"]["message"]
        assert shim.call("ping") == {}  # ping is allowed before it
        shim.initialize()
        assert shim.call("tools/list")["tools"]


def test_batches_only_on_2025_03_26(wat_daemon: Daemon) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "in a batch"}},
        },
        {"jsonrpc": "2.0", "id": 3, "method": "nope/nope"},
    ]
    with Shim(wat_daemon.home) as shim:
        shim.initialize("2025-03-26")
        shim.send(batch)
        answers = shim.recv()
        assert isinstance(answers, list)
        by_id = {a["id"]: a for a in answers}
        assert set(by_id) == {1, 2, 3}  # the notification gets no answer
        assert by_id[1]["result"]["tools"]
        assert by_id[2]["result"]["content"][0]["text"] == '{"text": "in a batch"}'
        assert by_id[3]["error"]["code"] == -32601
        shim.send([])
        assert shim.recv()["error"]["code"] == -32600
    with Shim(wat_daemon.home) as shim:
        shim.initialize("2025-06-18")
        shim.send(batch)
        refused = shim.recv()
        assert refused["error"]["code"] == -32600
        assert "2025-03-26" in refused["error"]["message"]


def test_tool_calls_results_and_errors(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home) as shim:
        shim.initialize("2025-06-18")
        unknown = shim.request("tools/call", {"name": "nope", "arguments": {}})
        assert unknown["error"]["code"] == -32602
        assert "tools/list" in unknown["error"]["message"]
        missing = shim.call("tools/call", {"name": "echo", "arguments": {}})
        assert missing["isError"] is True
        assert "'text' is a required property" in missing["content"][0]["text"]
        wrong = shim.call("tools/call", {"name": "echo", "arguments": {"text": 3}})
        assert wrong["isError"] is True
        assert "arguments.text: 3 is not of type 'string'" in wrong["content"][0]["text"]
        failed = shim.call("tools/call", {"name": "fail", "arguments": {}})
        assert failed["isError"] is True
        assert failed["content"][0]["text"] == "the tool failed on purpose"
        assert failed["_meta"]["dev.kami/error"]["kind"] == "tool_failed"
        assert "dev.kami/usage" in failed["_meta"]
        ok = shim.call("tools/call", {"name": "echo", "arguments": {"text": "hi", "times": 2}})
        assert ok["isError"] is False
        assert ok["structuredContent"] == {"text": "hi", "times": 2}
        assert set(ok["_meta"]["dev.kami/usage"]) == {
            "wall_ms",
            "fuel_consumed",
            "peak_memory_bytes",
            "host_calls",
        }
        assert ok["_meta"]["dev.kami/tool"] == {"id": "dev.test.echo", "version": "0.1.0"}


def test_modern_era_envelope_errors(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home) as shim:
        discover = shim.call("server/discover", modern())
        assert discover["supportedVersions"] == ["2026-07-28"]
        assert discover["resultType"] == "complete"
        assert {"ttlMs", "cacheScope"} <= set(discover)
        tools = shim.call("tools/list", modern())
        assert tools["resultType"] == "complete"
        assert tools["cacheScope"] == "private"
        assert tools["ttlMs"] == 0
        assert tools["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "kami"

        missing = shim.request("tools/list", {})
        assert missing["error"]["code"] == -32602
        half = shim.request(
            "tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}
        )
        assert half["error"]["code"] == -32602
        assert "clientCapabilities" in half["error"]["message"]
        future = shim.request(
            "tools/list", modern(None, **{"io.modelcontextprotocol/protocolVersion": "2099-01-01"})
        )
        assert future["error"]["code"] == -32022
        assert future["error"]["data"] == {"supported": ["2026-07-28"], "requested": "2099-01-01"}
        # The first request decided the era: no handshake now, and no ping at 2026-07-28.
        late = shim.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
        assert late["error"]["code"] == -32022
        assert shim.request("ping", modern())["error"]["code"] == -32601
        call = shim.call("tools/call", modern({"name": "echo", "arguments": {"text": "m"}}))
        assert call["structuredContent"] == {"text": "m"}
        assert call["resultType"] == "complete"


def test_a_legacy_session_refuses_modern_requests(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home) as shim:
        shim.initialize()
        answer = shim.request("tools/list", modern())
        assert answer["error"]["code"] == -32600
        again = shim.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
        assert again["error"]["code"] == -32600


def test_cancelling_a_call_frees_its_slot(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home, "--max-in-flight", "1") as shim:
        shim.initialize()
        looping = shim.start("tools/call", {"name": "loop", "arguments": {}})
        # Wait until the loop really runs: then it holds the session's only call slot.
        while wat_daemon.call("daemon.status")["calls_in_flight"] == 0:
            time.sleep(0.02)
        cancelled_at = time.monotonic()
        shim.notify("notifications/cancelled", {"requestId": looping, "reason": "test"})
        answer = shim.request("tools/call", {"name": "echo", "arguments": {"text": "next"}})
        assert answer["result"]["structuredContent"] == {"text": "next"}
        _assert_stopped_early(wat_daemon, cancelled_at, deadline_s=4.0)
        # The cancelled request never gets an answer: the next line answers the ping.
        assert shim.request("ping")["result"] == {}


def _assert_stopped_early(daemon: Daemon, since: float, *, deadline_s: float) -> None:
    """The cancelled loop stopped well before its own deadline, and was audited so."""
    while daemon.call("daemon.status")["calls_in_flight"]:
        assert time.monotonic() - since < deadline_s / 2, "the cancelled call kept running"
        time.sleep(0.02)
    audit = run_kamictl(daemon.home, "audit", "--json", "--limit", "5")
    assert audit.returncode == 0, audit.stderr
    entries = json.loads(audit.stdout)["entries"]
    kinds = {(row["tool"], row["outcome"]) for row in entries}
    assert ("dev.test.loop", "cancelled") in kinds, kinds


@pytest.mark.examples
def test_progress_and_log_notifications(examples_daemon: Daemon) -> None:
    with Shim(examples_daemon.home) as shim:
        shim.initialize("2025-11-25")
        arguments = {"name": "echo", "arguments": {"text": "hi"}, "_meta": {"progressToken": "p1"}}
        shim.call("tools/call", arguments)
        progress = [n["params"] for n in shim.notifications if n["method"].endswith("progress")]
        assert [p["progress"] for p in progress] == [0, 1]
        assert {p["progressToken"] for p in progress} == {"p1"}
        # No log notifications until the client asks for them.
        assert not [n for n in shim.notifications if n["method"] == "notifications/message"]
        assert shim.call("logging/setLevel", {"level": "info"}) == {}
        shim.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        log = shim.notification("notifications/message")["params"]
        assert log == {
            "level": "info",
            "logger": "dev.kami.echo",
            "data": "echoing 2 characters x1",
        }
        assert shim.call("logging/setLevel", {"level": "error"}) == {}
        shim.notifications.clear()
        shim.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        assert not shim.notifications
    with Shim(examples_daemon.home) as shim:
        # 2026-07-28: logging is a per-request opt-in in _meta.
        params = modern({"name": "echo", "arguments": {"text": "hey"}})
        shim.call("tools/call", params)
        assert not shim.notifications
        params["_meta"]["io.modelcontextprotocol/logLevel"] = "debug"
        shim.call("tools/call", params)
        assert shim.notification("notifications/message")["params"]["data"] == (
            "echoing 3 characters x1"
        )


def test_large_results_are_cut_with_a_note(wat_daemon: Daemon) -> None:
    with Shim(wat_daemon.home, "--max-result-bytes", "4096") as shim:
        shim.initialize()
        result = shim.call("tools/call", {"name": "echo", "arguments": {"text": "é" * 5_000}})
        assert len(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()) <= 4096
        assert result["isError"] is False
        assert "structuredContent" not in result
        text, note = (block["text"] for block in result["content"])
        assert text.startswith('{"text": "éé')
        assert "cut" in note
        assert "--max-result-bytes" in note
        assert result["_meta"]["dev.kami/truncated"]["limit"] == 4096
        small = shim.call("tools/call", {"name": "echo", "arguments": {"text": "fits"}})
        assert "dev.kami/truncated" not in small["_meta"]


def test_stdin_eof_exits_promptly(wat_daemon: Daemon) -> None:
    shim = Shim(wat_daemon.home)
    shim.initialize()
    assert shim.call("tools/list")["tools"]
    assert shim.close(timeout=10) == 0


def test_pipelined_requests_are_answered_before_exit(wat_daemon: Daemon) -> None:
    lines = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {}},
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}},
        },
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "kamictl", "mcp"],
        input="".join(json.dumps(m) + "\n" for m in lines),
        capture_output=True,
        text=True,
        env={**os.environ, "KAMI_HOME": str(wat_daemon.home)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [a["id"] for a in answers] == [1, 2]


def test_stdout_carries_only_protocol_messages() -> None:
    code = (
        "import os, sys\n"
        "from kamictl.mcp import guard_stdout\n"
        "out = guard_stdout()\n"
        "print('stray print')\n"
        "os.write(1, b'stray write\\n')\n"
        'out.write(b\'{"jsonrpc": "2.0"}\\n\'); out.flush()\n'
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout == '{"jsonrpc": "2.0"}\n'
    assert "stray print" in proc.stderr
    assert "stray write" in proc.stderr


def test_initialize_is_answered_before_kamid_runs(kami_home: Path, tmp_path: Path) -> None:
    """With no daemon at all, the handshake still completes; calls then start kamid."""
    with Shim(kami_home) as shim:
        try:
            result = shim.initialize()
            assert result["protocolVersion"] == "2025-11-25"
            assert shim.call("tools/list") == {"tools": []}
        finally:
            run_kamictl(kami_home, "daemon", "stop")


def test_unreachable_daemon_answers_with_an_error(kami_home: Path) -> None:
    with Shim(kami_home, "--connect-timeout", "1", env={"KAMI_NO_AUTOSTART": "1"}) as shim:
        shim.initialize()
        # Without autostart the shim waits a while for a daemon, then gives up with -32010.
        answer = shim.wait(shim.start("tools/list"))
        assert answer["error"]["code"] == -32010
        assert "kamictl daemon start" in answer["error"]["message"]


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_daemon_restart_mid_session(wat_daemon: Daemon, era: str) -> None:
    """kill -9 the daemon during a call: that call fails, the shim starts a new kamid,
    attaches again, tells the client to refetch, and the session carries on."""
    home = wat_daemon.home
    wrap = modern if era == "modern" else (lambda p=None: p or {})
    shim = Shim(home)
    try:
        if era == "legacy":
            shim.initialize()
            assert (
                shim.call("resources/subscribe", {"uri": "kami://tools/dev.test.echo/readme"}) == {}
            )
        else:
            listen = shim.start(
                "subscriptions/listen", modern({"notifications": {"toolsListChanged": True}})
            )
            ack = shim.notification("notifications/subscriptions/acknowledged")
            assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen
        assert shim.call("tools/call", wrap({"name": "echo", "arguments": {"text": "before"}}))
        looping = shim.start("tools/call", wrap({"name": "loop", "arguments": {}}))
        while wat_daemon.call("daemon.status")["calls_in_flight"] == 0:
            time.sleep(0.02)
        assert wat_daemon.proc is not None
        wat_daemon.proc.send_signal(signal.SIGKILL)
        lost = shim.wait(looping)
        assert lost["error"]["code"] == -32010
        assert "may or may not have run" in lost["error"]["message"]
        # The next request starts a new kamid; the session goes on, and the client hears
        # that it should refetch what may have changed meanwhile.
        after = shim.call("tools/call", wrap({"name": "echo", "arguments": {"text": "after"}}))
        assert after["structuredContent"] == {"text": "after"}
        changed = shim.notification("notifications/tools/list_changed")
        if era == "modern":
            assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen
        else:
            updated = shim.notification("notifications/resources/updated")
            assert updated["params"]["uri"] == "kami://tools/dev.test.echo/readme"
    finally:
        shim.close()
        run_kamictl(home, "daemon", "stop")


@pytest.mark.parametrize(
    "version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
)
def test_every_answer_fits_the_sdks_schema_of_its_revision(
    wat_daemon: Daemon, version: str
) -> None:
    """The SDK's per-revision wire models accept each result and notification KAMI sends."""
    from mcp_types import methods

    is_modern = version == "2026-07-28"
    wrap = modern if is_modern else (lambda p=None: p or {})
    requests: list[tuple[str, dict[str, Any]]] = [
        ("tools/list", {}),
        (
            "tools/call",
            {"name": "echo", "arguments": {"text": "hi"}, "_meta": {"progressToken": 7}},
        ),
        ("tools/call", {"name": "echo", "arguments": {}}),
        ("tools/call", {"name": "fail", "arguments": {}}),
        ("resources/list", {}),
        ("resources/read", {"uri": "kami://tools/dev.test.echo/readme"}),
        ("resources/read", {"uri": "kami://tools/dev.test.echo/manifest"}),
        ("resources/templates/list", {}),
        ("prompts/list", {}),
        ("prompts/get", {"name": "echo.shout", "arguments": {"text": "x"}}),
    ]
    with Shim(wat_daemon.home) as shim:
        if is_modern:
            requests.insert(0, ("server/discover", {}))
        else:
            methods.validate_server_result("initialize", version, shim.initialize(version))
            requests.append(("ping", {}))
        for method, params in requests:
            if is_modern and "_meta" in params:
                params = modern({k: v for k, v in params.items() if k != "_meta"}, progressToken=7)
            else:
                params = wrap(params)
            result = shim.call(method, params)
            methods.validate_server_result(method, version, result)
        assert shim.notifications  # progress
        for note in shim.notifications:
            methods.parse_server_notification(note["method"], version, note.get("params"))


def test_an_idle_session_reattaches_when_kamid_comes_back(wat_daemon: Daemon) -> None:
    """A stopped kamid stays stopped until someone starts it (the idle shim only waits);
    when it is back, the shim attaches again by itself and the client hears about it."""
    with Shim(wat_daemon.home) as shim:
        shim.initialize()
        assert shim.call("tools/list")["tools"]
        wat_daemon.stop()
        assert not wat_daemon.paths.socket.exists()  # the shim did not restart it
        restarted = Daemon(wat_daemon.home).start()
        try:
            shim.notification("notifications/tools/list_changed")
            assert shim.call("tools/call", {"name": "echo", "arguments": {"text": "back"}})
        finally:
            restarted.stop()


def test_traps_limits_and_output_schemas(daemon: Daemon, tmp_path: Path) -> None:
    install_wat(daemon, tmp_path, "trap.wat", "dev.test.trap")
    install_wat(
        daemon, tmp_path, "fuel_bomb.wat", "dev.test.spin", "[security]\nmax_fuel = 100000\n"
    )
    schema = """
[arguments.text]
type = "string"
required = true

[arguments.extra]
type = "integer"

[output_schema]
type = "object"
required = ["text"]
additionalProperties = false
properties = { text = { type = "string" } }
"""
    install_wat(daemon, tmp_path, "echo.wat", "dev.test.typed", schema)
    with Shim(daemon.home) as shim:
        shim.initialize()
        tools = {t["name"]: t for t in shim.call("tools/list")["tools"]}
        assert tools["typed"]["outputSchema"]["required"] == ["text"]
        assert "outputSchema" not in tools["trap"]
        trapped = shim.call("tools/call", {"name": "trap", "arguments": {}})
        assert trapped["isError"] is True
        assert "trapped" in trapped["content"][0]["text"]
        spun = shim.call("tools/call", {"name": "spin", "arguments": {}})
        assert spun["isError"] is True
        assert spun["_meta"]["dev.kami/error"]["limit"] == "fuel"
        typed = shim.call("tools/call", {"name": "typed", "arguments": {"text": "t"}})
        assert typed["structuredContent"] == {"text": "t"}
        # Output that breaks the declared schema is the tool's bug, reported as such.
        broken = shim.call("tools/call", {"name": "typed", "arguments": {"text": "t", "extra": 1}})
        assert broken["isError"] is True
        assert "outputSchema" in broken["content"][0]["text"]
        # Uninstalling a tool the agent sees tells it so.
        shim.notifications.clear()
        daemon.call("tools.uninstall", {"tool": "dev.test.trap"})
        shim.notification("notifications/tools/list_changed")
        assert "trap" not in {t["name"] for t in shim.call("tools/list")["tools"]}


def test_pages_and_long_messages(wat_daemon: Daemon) -> None:
    """Speaks to kamid directly: mcp.attach with a small page size, then raw MCP lines."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(wat_daemon.paths.socket))
        reader = sock.makefile("rb")

        def send(message: dict[str, Any]) -> dict[str, Any]:
            sock.sendall(json.dumps(message).encode() + b"\n")
            answer: dict[str, Any] = json.loads(reader.readline())
            return answer

        attach = {"era": "legacy", "protocol_version": "2025-11-25", "page_size": 2}
        attached = send({"jsonrpc": "2.0", "id": 0, "method": "mcp.attach", "params": attach})
        assert sorted(attached["result"]["tools"]) == [
            "dev.test.echo",
            "dev.test.fail",
            "dev.test.loop",
        ]
        names, cursor, pages = [], None, 0
        while True:
            params: dict[str, Any] = {"cursor": cursor} if cursor else {}
            page = send({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params})
            names += [t["name"] for t in page["result"]["tools"]]
            pages += 1
            cursor = page["result"].get("nextCursor")
            if cursor is None:
                break
        assert (names, pages) == (["echo", "fail", "loop"], 2)
        bad = send({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": "??"}})
        assert bad["error"]["code"] == -32602
        # A message far longer than one read, both ways.
        uri = "kami://tools/" + "x" * 300_000
        long = send({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": uri}})
        assert long["error"]["data"]["uri"] == uri


def test_grant_and_revoke_announce_the_changed_annotations(wat_daemon: Daemon) -> None:
    def echo_hints() -> dict[str, Any]:
        tools = shim.call("tools/list")["tools"]
        hints: dict[str, Any] = next(t for t in tools if t["name"] == "echo")["annotations"]
        return hints

    with Shim(wat_daemon.home) as shim:
        shim.initialize()
        assert echo_hints()["openWorldHint"] is False
        grant = run_kamictl(wat_daemon.home, "grant", "dev.test.echo", "--net", "example.com")
        assert grant.returncode == 0, grant.stderr
        shim.notification("notifications/tools/list_changed")
        assert echo_hints()["openWorldHint"] is True
        # A grant that changes nothing announces nothing; a revoke announces again.
        again = run_kamictl(wat_daemon.home, "grant", "dev.test.echo", "--net", "example.com")
        assert again.returncode == 0, again.stderr
        revoke = run_kamictl(wat_daemon.home, "revoke", "dev.test.echo", "--net", "example.com")
        assert revoke.returncode == 0, revoke.stderr
        shim.notification("notifications/tools/list_changed")
        assert echo_hints()["openWorldHint"] is False
        assert not [
            n for n in shim.notifications if n["method"] == "notifications/tools/list_changed"
        ]
