"""Connection leases (``kamid.server.ConnectionLease``): after a fast-lane answer the call
thread reads the connection's next call itself. Everything it cannot run goes back to
trio, and leased calls keep every rule a lone call keeps.

These daemons linger a second instead of 2 ms, so that every call a test sends right
after an answer meets the lease, however loaded the machine is.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from kamid.protocol import InvalidParams, NotFound, ParseError, ShuttingDown
from tests.conftest import Daemon

from .test_fast_lane import _exec, _install
from .test_socket import connect, read_message, send

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator
    from pathlib import Path

LINGER = "[server]\nlease_linger_ms = 1000\n"
#: Room for a spinning call of a second or so (service_spin.wat: ~1.6 ms, 8.4e6 fuel a byte).
LONG_CALLS = "[limits]\nfuel = 100000000000\ntimeout_ms = 120000\n"


@pytest.fixture
def lingering(kami_home: Path) -> Iterator[Daemon]:
    daemon = Daemon(kami_home).start(config=LINGER + LONG_CALLS)
    yield daemon
    daemon.stop()


class _Client:
    """One connection, one request at a time, each sent as soon as the answer before it
    is read (what a hot client does, and what a lease serves)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.next_id = 0

    def call(
        self, value: Any, tool: str = "dev.test.echo", *, timeout_ms: int | None = None
    ) -> dict[str, Any]:
        self.next_id += 1
        send(self.sock, _exec(self.next_id, value, tool, timeout_ms=timeout_ms))
        reply = read_message(self.sock, self.buf)
        assert reply["id"] == self.next_id, reply
        return reply

    def raw(self, *pieces: bytes, pause_s: float = 0.0) -> None:
        for piece in pieces:
            self.sock.sendall(piece)
            time.sleep(pause_s)

    def read(self) -> dict[str, Any]:
        return read_message(self.sock, self.buf)


def _leased(daemon: Daemon) -> int:
    count: int = daemon.call("daemon.status")["calls_leased"]
    return count


def test_back_to_back_calls_run_under_the_lease_and_each_is_recorded(
    lingering: Daemon, tmp_path: Path
) -> None:
    _install(lingering, tmp_path, "echo.wat")
    with connect(lingering) as sock:
        client = _Client(sock)
        outputs = [client.call({"n": i})["result"]["output"] for i in range(20)]
    # The lease ends with the connection; it posts what it counted, and gives its slot back.
    status = lingering.wait_until(
        lambda s: s["scheduler"]["running"] == 0, "the lease's slot given back"
    )
    assert outputs == [{"n": i} for i in range(20)]
    # The first call resolves the tool (dispatcher), the second takes the fast lane and
    # the lease; the other 18 ran under it.
    assert status["calls_leased"] == 18, (status, lingering.log())
    assert status["calls_fast"] == 19
    assert status["calls_served"] == 20
    # Each leased call is counted by the scheduler's observer (the activity window).
    assert status["activity"]["tools"][0]["calls"] == 20, status["activity"]
    entries = lingering.call("audit.list", {"tool": "dev.test.echo"})["entries"]
    assert [e["outcome"] for e in entries if e["action"] == "exec"] == ["ok"] * 20


def test_what_the_lease_cannot_run_goes_back_to_trio(lingering: Daemon, tmp_path: Path) -> None:
    _install(lingering, tmp_path, "echo.wat")
    with connect(lingering) as sock:
        client = _Client(sock)
        client.call(0)
        client.call(1)  # the fast lane: the connection is lent from here on
        leased = _leased(lingering)

        # Two requests in one write: the lease runs only a single line. Trio starts
        # both, and they may answer in either order (each carries its id).
        client.raw(b"".join(_line(_exec(i, i)) for i in (10, 11)))
        replies = [client.read() for _ in range(2)]
        assert sorted((r["id"], r["result"]["output"]) for r in replies) == [(10, 10), (11, 11)]

        client.call(2)  # a fresh lease
        client.raw(_line({"jsonrpc": "2.0", "id": "s", "method": "daemon.status"}))
        assert client.read()["result"]["calls_leased"] >= leased

        client.call(3)
        client.raw(b"{this is not json\n")
        assert client.read()["error"]["code"] == ParseError.code

        client.call(4)
        missing = client.call(5, tool="dev.test.nope")
        assert missing["error"]["code"] == NotFound.code, missing

        client.call(6)
        client.raw(_line({"jsonrpc": "2.0", "id": "p", "method": "tools.exec", "params": {}}))
        assert client.read()["error"]["code"] == InvalidParams.code

        client.call(7)
        half = _line(_exec(70, 70))
        client.raw(half[:20], half[20:], pause_s=0.05)  # a frame in two pieces
        assert client.read()["result"]["output"] == 70

        assert client.call(8)["result"]["output"] == 8  # the connection still serves
    assert _leased(lingering) > leased


def test_a_lease_gives_way_to_a_call_waiting_for_its_slot(kami_home: Path, tmp_path: Path) -> None:
    # One slot for the whole daemon: a client calling back to back would keep it for as
    # long as it likes if its lease did not end when another call waits.
    one_slot = "[scheduler]\nmax_concurrent = 1\nqueue_timeout_s = 10\n"
    daemon = Daemon(kami_home).start(config=LINGER + one_slot)
    stop = threading.Event()
    counts: list[int] = []

    def hot_client() -> None:
        with connect(daemon) as sock:
            client = _Client(sock)
            while not stop.is_set():
                client.call(len(counts))
                counts.append(1)

    try:
        _install(daemon, tmp_path, "echo.wat")
        daemon.call("tools.exec", {"tool": "dev.test.echo", "input": 0})  # resolved, cached
        hot = threading.Thread(target=hot_client)
        hot.start()
        try:
            daemon.wait_until(lambda s: s["calls_leased"] > 10, "serving the hot client")
            other = daemon.call("tools.exec", {"tool": "dev.test.echo", "input": "other"})
            before = len(counts)
            daemon.wait_until(lambda s: len(counts) > before + 10, "the hot client going on")
        finally:
            stop.set()
            hot.join(timeout=30)
    finally:
        daemon.stop()
    assert other["output"] == "other"


@contextlib.contextmanager
def _spinning_under_a_lease(daemon: Daemon, tmp_path: Path) -> Iterator[_Client]:
    """A connection whose third call (id 99, ~1 s of spinning) runs under its lease."""
    _install(daemon, tmp_path, "service_spin.wat", "dev.test.spin")
    with connect(daemon) as sock:
        client = _Client(sock)
        client.call("a", tool="dev.test.spin")
        client.call("b", tool="dev.test.spin")  # the fast lane: the lease starts
        send(sock, _exec(99, "x" * 600, "dev.test.spin"))
        _wait_for_the_leased_call(daemon, ended_before=2)
        yield client


def _wait_for_the_leased_call(daemon: Daemon, *, ended_before: int) -> None:
    # Until the inbox delivers it, a fast call that has answered still counts in flight:
    # wait for the calls before to be counted as ended, and the leased one as running.
    daemon.wait_until(
        lambda s: s["calls_served"] + s["calls_failed"] == ended_before and s["calls_in_flight"],
        "running the leased call",
    )


def test_a_stopping_daemon_lets_a_leased_call_finish(lingering: Daemon, tmp_path: Path) -> None:
    with _spinning_under_a_lease(lingering, tmp_path) as client:
        stopping = lingering.call("daemon.stop", {})
        reply = client.read()
        # Whatever comes next is not run: the lease has ended, and trio refuses it or
        # has closed the connection already.
        try:
            later: dict[str, Any] | None = client.call("c", tool="dev.test.spin")
        except (EOFError, ConnectionError):
            later = None
    assert stopping["in_flight"] == 1
    assert reply["id"] == 99
    assert reply["result"]["output"] == "x" * 600, reply
    assert later is None or later["error"]["code"] == ShuttingDown.code, later
    assert lingering.proc is not None
    assert lingering.proc.wait(timeout=30) == 0


def test_a_call_after_an_uninstall_during_a_leased_call_is_not_run(
    lingering: Daemon, tmp_path: Path
) -> None:
    with _spinning_under_a_lease(lingering, tmp_path) as client:
        lingering.call("tools.uninstall", {"tool": "dev.test.spin"})
        assert client.read()["result"]["output"] == "x" * 600  # it started before
        gone = client.call("c", tool="dev.test.spin")  # sent within the lease's linger
    assert gone["error"]["code"] == NotFound.code, gone
    assert _leased(lingering) == 1  # the spinning call; not the one after the uninstall


def test_a_client_that_hangs_up_during_a_leased_call_cancels_it(
    lingering: Daemon, tmp_path: Path
) -> None:
    _install(lingering, tmp_path, "loop.wat", "dev.test.loop")
    with connect(lingering) as sock:
        client = _Client(sock)
        for _ in range(3):
            failed = client.call({}, tool="dev.test.loop", timeout_ms=50)
            assert failed["error"]["data"]["limit"] == "timeout_ms"
        send(sock, _exec(9, {}, "dev.test.loop", timeout_ms=60_000))
        _wait_for_the_leased_call(lingering, ended_before=3)
    lingering.wait_until(
        lambda s: s["calls_in_flight"] == 0, "done with the call its client left", timeout=15
    )
    status = lingering.call("daemon.status")
    entries = lingering.call("audit.list", {"tool": "dev.test.loop"})["entries"]
    assert entries[0]["outcome"] == "cancelled"
    assert status["calls_leased"] >= 1


def test_a_reload_that_adds_a_rate_limit_ends_the_lease(kami_home: Path, tmp_path: Path) -> None:
    daemon = Daemon(kami_home).start(config=LINGER)
    try:
        _install(daemon, tmp_path, "echo.wat")
        with connect(daemon) as sock:
            client = _Client(sock)
            client.call(0)
            client.call(1)  # the fast lane: the lease starts
            rated = '[scheduler]\nmax_queue = 7\n[scheduler.tools."dev.test.echo"]\n'
            daemon.paths.config_file.write_text(LINGER + rated + "calls_per_minute = 1\n")
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.wait_until(lambda s: s["scheduler"]["max_queue"] == 7, "the reload applied")
            replies = [client.call(i) for i in range(2, 5)]
    finally:
        daemon.stop()
    # The first call after the reload takes the one token there is; the next ones wait
    # a minute for theirs, so they are refused.
    assert replies[0]["result"]["output"] == 2, replies[0]
    assert [r["error"]["data"]["reason"] for r in replies[1:]] == ["rate_limited"] * 2, replies


def test_leases_can_be_turned_off(kami_home: Path, tmp_path: Path) -> None:
    daemon = Daemon(kami_home).start(config="[server]\nlease_linger_ms = 0\n")
    try:
        _install(daemon, tmp_path, "echo.wat")
        with connect(daemon) as sock:
            client = _Client(sock)
            assert [client.call(i)["result"]["output"] for i in range(10)] == list(range(10))
        status = daemon.call("daemon.status")
    finally:
        daemon.stop()
    assert status["calls_fast"] == 9
    assert status["calls_leased"] == 0


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"
