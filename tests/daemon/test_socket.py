"""The daemon's socket, spoken to raw: framing, errors, timeouts, concurrency, permissions."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from typing import TYPE_CHECKING, Any

import pytest

from kamid.protocol import Cancelled, KamiError
from tests.conftest import Daemon, make_tool, wat_component

if TYPE_CHECKING:
    from pathlib import Path


def connect(daemon: Daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(daemon.paths.socket))
    return sock


def read_message(sock: socket.socket, buf: bytearray) -> dict[str, Any]:
    while b"\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    message: dict[str, Any] = json.loads(line)
    return message


def send(sock: socket.socket, message: Any) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def test_socket_and_directory_are_private(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.paths.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.paths.run.stat().st_mode) == 0o700


def test_malformed_json_gets_parse_error_and_connection_survives(daemon: Daemon) -> None:
    buf = bytearray()
    with connect(daemon) as sock:
        sock.sendall(b"{this is not json\n")
        reply = read_message(sock, buf)
        assert reply["error"]["code"] == -32700
        assert "not valid JSON" in reply["error"]["message"]
        send(sock, {"jsonrpc": "2.0", "id": 7, "method": "daemon.status"})
        reply = read_message(sock, buf)
        assert reply["id"] == 7
        assert reply["result"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ([1, 2], -32600, "JSON object"),
        ({"jsonrpc": "1.0", "id": 1, "method": "daemon.status"}, -32600, '"jsonrpc": "2.0"'),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools.exek"}, -32601, "tools.exec"),
        (
            {"jsonrpc": "2.0", "id": 1, "method": "tools.exec", "params": {"tol": "x"}},
            -32602,
            "tool",
        ),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools.exec", "params": [1]}, -32602, "object"),
        (
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools.exec",
                "params": {"tool": "nope", "input": 1},
            },
            -32001,
            "kamictl list",
        ),
    ],
)
def test_bad_requests_get_clear_errors(daemon: Daemon, message: Any, code: int, words: str) -> None:
    buf = bytearray()
    with connect(daemon) as sock:
        send(sock, message)
        reply = read_message(sock, buf)
        assert reply["error"]["code"] == code, reply
        assert words in reply["error"]["message"]
        send(sock, {"jsonrpc": "2.0", "id": "after", "method": "daemon.status"})
        assert read_message(sock, buf)["id"] == "after"


def test_notification_gets_no_answer(daemon: Daemon) -> None:
    buf = bytearray()
    with connect(daemon) as sock:
        send(sock, {"jsonrpc": "2.0", "method": "daemon.status"})
        send(sock, {"jsonrpc": "2.0", "id": 2, "method": "daemon.status"})
        assert read_message(sock, buf)["id"] == 2


def test_oversized_frame_is_refused_and_daemon_keeps_serving(kami_home: Path) -> None:
    d = Daemon(kami_home).start(config="[server]\nmax_frame_bytes = 4096\n")
    try:
        buf = bytearray()
        with connect(d) as sock:
            # The daemon answers and closes partway through; sending may or may not notice.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"x" * 8192 * 100)
            reply = read_message(sock, buf)
            assert reply["error"]["code"] == -32600
            assert reply["error"]["data"] == {"limit": "max_frame_bytes", "value": 4096}
        assert d.call("daemon.status")["pid"] == d.proc.pid  # type: ignore[union-attr]
    finally:
        d.stop()


def test_silent_and_slow_clients_are_dropped_without_blocking_others(kami_home: Path) -> None:
    d = Daemon(kami_home).start(config="[server]\nidle_timeout_s = 1\nframe_timeout_s = 1\n")
    try:
        silent = connect(d)
        slow = connect(d)
        slow.sendall(b'{"jsonrpc": "2.0", "id": 1, ')  # never finished
        # Others are served while those two hang around.
        assert d.call("daemon.status")["connections"] >= 2
        for sock in (silent, slow):
            buf = bytearray()
            reply = read_message(sock, buf)
            assert reply["error"]["code"] == -32009
            assert sock.recv(10) == b""  # closed by the daemon
            sock.close()
    finally:
        d.stop()


def test_many_concurrent_requests_on_one_connection(daemon: Daemon, tmp_path: Path) -> None:
    daemon.call("tools.install", {"path": str(make_tool(tmp_path, wat_component("echo.wat")))})
    buf = bytearray()
    with connect(daemon) as sock:
        for i in range(50):
            send(
                sock,
                {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "tools.exec",
                    "params": {"tool": "dev.test.echo", "input": {"n": i}},
                },
            )
        replies = [read_message(sock, buf) for _ in range(50)]
    assert sorted(r["id"] for r in replies) == list(range(50))
    assert all(r["result"]["output"] == {"n": r["id"]} for r in replies)


def test_second_daemon_on_same_home_refuses(daemon: Daemon) -> None:
    import subprocess
    import sys

    from tests.conftest import daemon_env

    proc = subprocess.run(
        [sys.executable, "-m", "kamid", "--foreground"],
        env=daemon_env(daemon.home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert f"another kamid (pid {daemon.proc.pid})" in proc.stderr  # type: ignore[union-attr]
    assert "KAMI_HOME" in proc.stderr
    assert daemon.call("daemon.status")["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def test_stale_socket_is_replaced(kami_home: Path) -> None:
    d = Daemon(kami_home).start()
    d.proc.kill()  # type: ignore[union-attr]  # no chance to clean up
    d.stop()
    assert d.paths.socket.exists()
    d2 = Daemon(kami_home).start()
    try:
        assert d2.call("daemon.status")["pid"] == d2.proc.pid  # type: ignore[union-attr]
    finally:
        d2.stop()


def test_foreign_uid_is_refused(daemon: Daemon) -> None:
    if os.getuid() != 0:
        pytest.skip("dropping to another uid needs root")
    import pwd
    import subprocess

    nobody = pwd.getpwnam("nobody").pw_uid
    # The socket dir is 0700 for its owner; let the child reach it so SO_PEERCRED is what
    # refuses it (the directory permission is the first line of defence, tested above).
    os.chmod(daemon.home, 0o711)
    os.chmod(daemon.paths.run, 0o711)
    os.chmod(daemon.paths.socket, 0o666)
    client = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "s.settimeout(10)\n"
        "s.connect(sys.argv[1])\n"
        's.sendall(b\'{"jsonrpc":"2.0","id":1,"method":"daemon.status"}\\n\')\n'
        "data = b''\n"
        "while chunk := s.recv(65536):\n"
        "    data += chunk\n"
        "sys.stdout.write(data.decode())\n"
    )
    proc = subprocess.run(
        ["/usr/bin/env", "python3", "-I", "-c", client, str(daemon.paths.socket)],
        user=nobody,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout.splitlines()[0])
    assert reply["error"]["code"] == -32003
    assert f"uid {nobody} may not use this kamid" in reply["error"]["message"]
    assert "result" not in reply


def _send_loop_call(sock: socket.socket, *, timeout_ms: int) -> None:
    """Starts a call of dev.test.loop (loop.wat) that runs until ``timeout_ms``."""
    params = {"tool": "dev.test.loop", "input": {}, "timeout_ms": timeout_ms}
    send(sock, {"jsonrpc": "2.0", "id": 1, "method": "tools.exec", "params": params})


def test_sigterm_drains_in_flight_call(daemon: Daemon, tmp_path: Path) -> None:
    import signal

    tool = make_tool(tmp_path, wat_component("loop.wat"), tool_id="dev.test.loop")
    daemon.call("tools.install", {"path": str(tool)})
    buf = bytearray()
    with connect(daemon) as sock:
        _send_loop_call(sock, timeout_ms=1500)
        time.sleep(0.3)  # the call is running
        daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        reply = read_message(sock, buf)
        # The in-flight call ran to its own deadline rather than being cut by shutdown.
        assert reply["error"]["data"]["limit"] == "timeout_ms"
    assert daemon.proc.wait(timeout=20) == 0  # type: ignore[union-attr]
    assert not daemon.paths.socket.exists()


def test_daemon_stop_with_a_grace_period_cuts_the_wait(daemon: Daemon, tmp_path: Path) -> None:
    tool = make_tool(tmp_path, wat_component("loop.wat"), tool_id="dev.test.loop")
    daemon.call("tools.install", {"path": str(tool)})
    with pytest.raises(KamiError) as info:
        daemon.call("daemon.stop", {"grace_s": -1})
    assert info.value.code == -32602
    assert "grace_s must be 0-3600" in info.value.message
    assert daemon.call("daemon.status")["calls_in_flight"] == 0  # refused: still serving
    buf = bytearray()
    with connect(daemon) as sock:
        _send_loop_call(sock, timeout_ms=60_000)
        while daemon.call("daemon.status")["calls_in_flight"] == 0:
            time.sleep(0.02)
        assert daemon.call("daemon.stop", {"grace_s": 0.2})["stopping"] is True
        # The configured grace (10 s) would outlast this wait; the given one does not.
        assert daemon.proc.wait(timeout=8) == 0  # type: ignore[union-attr]
        # The running call was stopped at once, and says so.
        reply = read_message(sock, buf)
        assert reply["error"]["code"] == Cancelled.code, reply
    assert "grace period of 0.2 s over with 1 call(s) in flight" in daemon.log()
