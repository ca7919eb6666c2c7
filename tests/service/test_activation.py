"""kamid under a service manager: socket activation, sd_notify, SIGHUP, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import TYPE_CHECKING

import pytest

from kamid.protocol import KamiError
from kamid.systemd import Notifier, listen_socket

from ._spawn import NotifySocket, ServiceDaemon, listening_socket

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def service(kami_home: Path) -> Iterator[ServiceDaemon]:
    daemon = ServiceDaemon(kami_home)
    yield daemon
    daemon.stop()


def test_socket_activation_notify_reload_and_stop(
    service: ServiceDaemon, notify: NotifySocket
) -> None:
    listener = listening_socket(service.paths.socket)
    proc = service.spawn(listen=listener, notify=notify)
    ready = notify.wait_for("READY", "1")
    assert ready["STATUS"] == f"serving {service.paths.socket}"
    assert ready["MAINPID"] == str(proc.pid)
    status = service.call("daemon.status")
    assert status["pid"] == proc.pid
    assert "(socket from systemd)" in service.log()

    # SIGHUP with a good config: applied at once; [engine] waits for a restart.
    service.write_config("[scheduler]\nmax_queue = 7\n[engine]\nworkers = 3\n")
    service.signal(signal.SIGHUP)
    notify.wait_for("RELOADING", "1")
    assert "READY" in notify.wait_for("READY", "1")
    assert service.call("daemon.status")["scheduler"]["max_queue"] == 7
    assert "[engine].workers changed but only take effect when kamid restarts" in service.log()

    # SIGHUP with a bad config: refused, logged, the running config kept.
    service.write_config("[scheduler]\nmax_queue = -1\n")
    service.signal(signal.SIGHUP)
    notify.wait_for("RELOADING", "1")
    refused = notify.wait_for("READY", "1")
    assert refused["STATUS"].startswith("reload refused:")
    assert service.call("daemon.status")["scheduler"]["max_queue"] == 7
    log = service.log()
    assert "max_queue must be a number >= 0 (got -1)" in log
    assert "kept the running configuration" in log
    metrics = service.call("metrics.get")["text"]
    assert 'kami_config_reloads_total{result="ok"} 1' in metrics
    assert 'kami_config_reloads_total{result="error"} 1' in metrics

    service.signal(signal.SIGTERM)
    notify.wait_for("STOPPING", "1")
    assert service.wait() == 0
    # The socket is systemd's: it stays, and connections queue until kamid is back.
    assert service.paths.socket.exists()
    assert not service.paths.pid_file.exists()
    service.write_config("")  # (a kamid starting on the invalid one would exit 1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as early:
        early.settimeout(60)
        early.connect(str(service.paths.socket))
        early.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}\n')
        again = service.spawn(listen=listener, notify=notify)
        answer = json.loads(early.makefile("rb").readline())
    assert answer["result"]["pid"] == again.pid
    listener.close()


def test_a_passed_socket_that_kamid_cannot_serve_is_refused(service: ServiceDaemon) -> None:
    service.paths.run.mkdir(parents=True, mode=0o700)
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram.bind(str(service.paths.socket))
    with datagram:
        proc = service.spawn(listen=datagram)
        assert proc.wait(timeout=60) == 1
    log = service.log()
    assert "AF_UNIX SOCK_DGRAM" in log
    assert "ListenStream=%t/kami/kamid.sock" in log


def test_listen_fds_meant_for_another_process_are_ignored(service: ServiceDaemon) -> None:
    proc = service.spawn(env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    service.wait_serving()
    assert service.call("daemon.status")["pid"] == proc.pid
    assert "LISTEN_PID=1 is not this process" in service.log()


def test_listen_socket_reads_and_clears_the_environment() -> None:
    env = {"LISTEN_FDS": "0", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "x"}
    assert listen_socket(env) is None
    assert env == {}
    assert listen_socket({}) is None
    with pytest.raises(KamiError, match="passed 2 sockets"):
        listen_socket({"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid())})
    with pytest.raises(KamiError, match="not a number"):
        listen_socket({"LISTEN_FDS": "x"})


@pytest.mark.parametrize("abstract", [True, False])
def test_notifier_sends_datagrams_to_paths_and_abstract_names(
    abstract: bool, tmp_path: Path
) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        receiver.bind("\0kami-notify-test-" + os.urandom(4).hex())
        address = "@" + receiver.getsockname()[1:].decode()
    else:
        address = str(tmp_path / "notify")
        receiver.bind(address)
    with receiver:
        env = {"NOTIFY_SOCKET": address}
        notifier = Notifier(env)
        assert env == {}  # children must not notify in kamid's name
        notifier.ready("serving")
        notifier.stopping()
        assert receiver.recv(4096).decode().splitlines()[:2] == ["READY=1", "STATUS=serving"]
        assert receiver.recv(4096).decode().startswith("STOPPING=1\n")


def test_notifier_without_a_socket_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    gone = Notifier({"NOTIFY_SOCKET": "@kami-nobody-listens-here"})
    assert gone.notify("READY=1") is False  # logged once, never raised
