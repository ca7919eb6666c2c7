"""Malicious clients on the daemon's socket: garbage, giants, trickles, floods, strangers.

Each case speaks the raw socket and checks that it got a clear error (or was dropped with
one), that the daemon kept serving other clients meanwhile, and that the store is as it
was.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.adversarial.conftest import error_of
from tests.conftest import Daemon, call_as_nobody, make_tool, short_tempdir, wat_component
from tests.daemon.test_socket import connect, read_message, send

if TYPE_CHECKING:
    import socket

    from tests.adversarial.conftest import Hostile

Snapshot = dict[str, Any]


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        (b"\x00\xff\xfe garbage \x80\n", -32700, "not valid JSON"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.status"\n', -32700, "not valid JSON"),
        (b"[" * 100_000 + b"\n", -32700, "nests"),
        (b"[1, 2, 3]\n", -32600, "JSON object"),
        (b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "daemon.status"}\n', -32600, "id"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 42}\n', -32600, "method"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools.exec", "params": "x"}\n', -32602, "object"),
    ],
)
def test_malformed_frames(
    hostile: Hostile, before: Snapshot, frame: bytes, code: int, words: str
) -> None:
    buf = bytearray()
    with connect(hostile.daemon) as sock:
        sock.sendall(frame)
        reply = read_message(sock, buf)
        assert reply["error"]["code"] == code, reply
        assert words in reply["error"]["message"]
        # The same connection keeps working: a bad frame costs only itself.
        send(sock, {"jsonrpc": "2.0", "id": "next", "method": "daemon.status"})
        assert read_message(sock, buf)["id"] == "next"
    hostile.assert_contained(before)


def test_exec_cannot_smuggle_grants(hostile: Hostile, before: Snapshot) -> None:
    params = {"tool": "dev.adv.probe", "input": {"op": "environ"}, "grants": {"env": {"X": "1"}}}
    exc = error_of(hostile.daemon, "tools.exec", params)
    assert exc.code == -32602
    assert "grants" in exc.message
    hostile.assert_contained(before)


def test_oversized_frame(hostile: Hostile, before: Snapshot) -> None:
    buf = bytearray()
    with connect(hostile.daemon) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"x" * 2 * 1048576)
        reply = read_message(sock, buf)
        assert reply["error"]["code"] == -32600
        assert reply["error"]["data"] == {"limit": "max_frame_bytes", "value": 1048576}
        assert "1048576-byte limit" in reply["error"]["message"]
    hostile.assert_contained(before)


def test_slowloris_trickle(hostile: Hostile, before: Snapshot) -> None:
    # One byte every 0.3 s: every read arrives in time, but the frame never completes
    # within frame_timeout_s (1 s). The daemon must drop it, and serve others meanwhile.
    frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}).encode()
    with connect(hostile.daemon) as sock:
        sent = 0
        start = time.monotonic()
        while sent < len(frame) and time.monotonic() - start < 10:
            try:
                sock.sendall(frame[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break  # dropped; its farewell is already in our receive buffer
            sent += 1
            assert hostile.call("daemon.status")["pid"]  # others are served meanwhile
            time.sleep(0.3)
        assert sent < len(frame) - 1  # dropped long before it could finish
        reply = read_message(sock, bytearray())
        assert reply["error"]["code"] == -32009, reply
        assert "did not complete in time" in reply["error"]["message"]
    hostile.assert_contained(before)


def test_silent_half_frame(hostile: Hostile, before: Snapshot) -> None:
    with connect(hostile.daemon) as sock:
        sock.sendall(b'{"jsonrpc": "2.0", "id": 1, ')
        assert hostile.call("daemon.status")["pid"]
        buf = bytearray()
        reply = read_message(sock, buf)
        assert reply["error"]["code"] == -32009
        assert "slow" in reply["error"]["message"]
    hostile.assert_contained(before)


def test_connection_flood(hostile: Hostile, before: Snapshot) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(24):
            socks.append(connect(hostile.daemon))
        time.sleep(0.2)  # let the daemon accept them all
        extra = connect(hostile.daemon)
        socks.append(extra)
        buf = bytearray()
        reply = read_message(extra, buf)
        assert reply["error"]["code"] == -32006
        assert "too many connections (24)" in reply["error"]["message"]
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.2)  # the daemon notices the closes
    hostile.assert_contained(before)


@pytest.fixture
def strangers_daemon() -> Any:
    if os.getuid() != 0:
        pytest.skip("dropping to another uid needs root")
    nobody = pwd.getpwnam("nobody").pw_uid
    home = short_tempdir("kadvuid")
    config = f"[server]\nallowed_uids = [{nobody}]\n" if nobody else ""
    daemon = Daemon(home).start(config=config)
    tool = make_tool(home / "t", wat_component("echo.wat"), tool_id="dev.adv.echo")
    daemon.call("tools.install", {"path": str(tool)})
    yield daemon, nobody
    daemon.stop()


def test_foreign_uid_connection(kami_home: Any) -> None:
    if os.getuid() != 0:
        pytest.skip("dropping to another uid needs root")
    daemon = Daemon(kami_home).start()
    try:
        tool = make_tool(kami_home / "t", wat_component("echo.wat"), tool_id="dev.adv.echo")
        daemon.call("tools.install", {"path": str(tool)})
        tools = daemon.call("tools.list")
        nobody = pwd.getpwnam("nobody").pw_uid
        (reply,) = call_as_nobody(
            daemon, [("tools.exec", {"tool": "dev.adv.echo", "input": {"stolen": True}})]
        )
        assert reply["error"]["code"] == -32003
        assert f"uid {nobody} may not use this kamid" in reply["error"]["message"]
        assert "allowed_uids" in reply["error"]["message"]
        assert daemon.call("tools.exec", {"tool": "dev.adv.echo", "input": 1})["output"] == 1
        assert daemon.call("tools.list") == tools
        audit = daemon.call("audit.list", {"tool": "dev.adv.echo"})["entries"]
        assert [e["uid"] for e in audit if e["action"] == "exec"] == [0]
    finally:
        daemon.stop()


def test_allowed_stranger_cannot_change_grants(strangers_daemon: Any) -> None:
    daemon, nobody = strangers_daemon
    grants = daemon.call("tools.inspect", {"tool": "dev.adv.echo"})["grants"]
    exec_reply, grant_reply, revoke_reply, audit_reply = call_as_nobody(
        daemon,
        [
            ("tools.exec", {"tool": "dev.adv.echo", "input": {"hi": 1}}),
            ("tools.grant", {"tool": "dev.adv.echo", "fs": "sandbox", "env": {"HOME": None}}),
            ("tools.revoke", {"tool": "dev.adv.echo", "all": True}),
            ("audit.list", {}),
        ],
    )
    assert exec_reply["result"]["output"] == {"hi": 1}  # allowed to run tools...
    for reply in (grant_reply, revoke_reply, audit_reply):  # ...never to change them
        assert reply["error"]["code"] == -32003, reply
        assert "reserved to the operator" in reply["error"]["message"]
    assert daemon.call("tools.inspect", {"tool": "dev.adv.echo"})["grants"] == grants
    entries = daemon.call("audit.list", {"tool": "dev.adv.echo"})["entries"]
    by_action = {e["action"]: e for e in entries}
    assert by_action["exec"]["uid"] == nobody
    assert by_action["grant"]["outcome"] == "policy_denied"
    assert by_action["grant"]["uid"] == nobody


def test_an_mcp_session_cannot_reach_operator_methods(hostile: Hostile, before: Snapshot) -> None:
    # After mcp.attach the connection speaks MCP only: tools, resources, prompts. The
    # daemon's operator methods are not methods there, whatever an MCP client sends.
    buf = bytearray()
    with connect(hostile.daemon) as sock:
        attach = {"era": "legacy", "protocol_version": "2025-11-25"}
        send(sock, {"jsonrpc": "2.0", "id": 0, "method": "mcp.attach", "params": attach})
        assert "result" in read_message(sock, buf)
        attacks = [
            ("tools.grant", {"tool": "dev.adv.echo", "fs": "sandbox"}),
            ("tools.revoke", {"tool": "dev.adv.probe", "all": True}),
            ("limits.set", {"limits": {"fuel": 1}}),
            ("audit.list", {}),
            ("tools.install", {"path": "/tmp", "approve": True}),
            ("tools.uninstall", {"tool": "dev.adv.echo"}),
        ]
        for i, (method, params) in enumerate(attacks, start=1):
            send(sock, {"jsonrpc": "2.0", "id": i, "method": method, "params": params})
            reply = read_message(sock, buf)
            assert reply["id"] == i
            assert reply["error"]["code"] == -32601, reply
        # What MCP does offer still works on the same connection.
        call = {"name": "echo", "arguments": {"via": "mcp"}}
        send(sock, {"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": call})
        reply = read_message(sock, buf)
        assert reply["id"] == 99
        assert "result" in reply, reply
    hostile.assert_contained(before)
