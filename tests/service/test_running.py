"""A running kamid: draining on SIGTERM, the scheduler's limits over the socket, metrics
over HTTP, ``kamictl metrics`` and ``kamictl status``, JSON logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from kamid.protocol import Busy, DaemonUnreachable, KamiError, ShuttingDown
from tests.conftest import daemon_env, make_tool, run_kamictl, wat_component

from ._exposition import parse
from ._spawn import ServiceDaemon

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

#: Room for a spinning call of a few seconds (service_spin.wat burns ~8.4e6 fuel per byte).
LONG_CALLS = "[limits]\nfuel = 100000000000\ntimeout_ms = 120000\n"
#: service_spin.wat spins 2^20 iterations per input byte: ~1.6 ms each here.
SPIN_BYTES = 1500


@pytest.fixture
def service(kami_home: Path) -> Iterator[ServiceDaemon]:
    daemon = ServiceDaemon(kami_home)
    yield daemon
    daemon.stop()


def install(service: ServiceDaemon, fixture: str, tool_id: str) -> None:
    tool = make_tool(service.home / "tools", wat_component(fixture), tool_id=tool_id)
    service.call("tools.install", {"path": str(tool), "approve": True})


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Runs ``fn`` in a thread; the returned function joins it and returns or raises."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> Any:
        thread.join(timeout=120)
        assert not thread.is_alive()
        if "error" in box:
            raise box["error"]
        return box["value"]

    return join


def test_sigterm_lets_in_flight_calls_finish_and_refuses_new_ones(
    service: ServiceDaemon,
) -> None:
    # A grace period far longer than the calls, however loaded the machine is.
    service.write_config(
        LONG_CALLS + '[server]\ngrace_s = 300\n[metrics]\nlisten = "127.0.0.1:0"\n'
    )
    service.spawn()
    service.wait_serving()
    install(service, "service_spin.wat", "dev.test.spin")
    text = "x" * SPIN_BYTES
    calls = [
        in_thread(lambda: service.call("tools.exec", {"tool": "spin", "input": text}))
        for _ in range(2)
    ]
    status = service.wait_until(lambda s: s["scheduler"]["running"] == 2, "running 2 calls")
    metrics_url = f"http://{status['metrics_address']}"
    with service.client() as late:
        late.call("daemon.status")  # connected before the signal
        service.signal(signal.SIGTERM)
        # Probes see the drain (the signal is handled asynchronously: wait for it).
        while httpx.get(f"{metrics_url}/ready").status_code == 200:
            time.sleep(0.02)
        assert httpx.get(f"{metrics_url}/ready").status_code == 503
        assert httpx.get(f"{metrics_url}/health").status_code == 200
        with pytest.raises(ShuttingDown, match="kamid is shutting down; retry once it has"):
            late.call("tools.exec", {"tool": "spin", "input": "x"})
        running = late.call("daemon.status")["scheduler"]["running"]
    assert running == 2  # still draining: the refusal above was not after the fact
    with pytest.raises(DaemonUnreachable):  # the listener is closed
        service.call("daemon.status")
    for call in calls:
        assert call()["output"] == text
    assert service.wait() == 0
    assert "SIGTERM: stopping" in service.log()


def test_queue_and_rate_limits_answer_busy(service: ServiceDaemon) -> None:
    service.write_config(
        LONG_CALLS + "[scheduler]\nmax_concurrent = 1\nmax_queue = 1\nqueue_timeout_s = 120\n"
        '[scheduler.tools."dev.test.rated"]\ncalls_per_minute = 2\n'
    )
    service.spawn()
    service.wait_serving()
    install(service, "loop.wat", "dev.test.loop")
    install(service, "echo.wat", "dev.test.echo")
    install(service, "echo.wat", "dev.test.rated")

    # A tool's rate: two calls a minute, the third is refused with when to retry.
    for _ in range(2):
        assert service.call("tools.exec", {"tool": "rated", "input": 1})["output"] == 1
    with pytest.raises(Busy) as rated:
        service.call("tools.exec", {"tool": "rated", "input": 1})
    assert "(dev.test.rated may be called 2 times per minute); retry in" in rated.value.message
    assert rated.value.data["reason"] == "rate_limited"
    assert 0 < rated.value.data["retry_after_s"] <= 30

    # One slot, one queue place: a running call, a waiting one, and a refused one.
    running = in_thread(
        lambda: service.call("tools.exec", {"tool": "loop", "input": 1, "timeout_ms": 8000})
    )
    service.wait_until(lambda s: s["scheduler"]["running"] == 1, "running the loop")
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiting.connect(str(service.paths.socket))
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools.exec"}
    waiting.sendall(
        json.dumps({**request, "params": {"tool": "echo", "input": 2}}).encode() + b"\n"
    )
    service.wait_until(lambda s: s["scheduler"]["queued_interactive"] == 1, "queueing")
    with pytest.raises(Busy) as full:
        service.call("tools.exec", {"tool": "echo", "input": 3})
    assert full.value.message == "busy: 1 calls waiting; retry"
    assert full.value.data["reason"] == "queue_full"

    # The waiting client goes away: its place is free at once, while the loop still runs.
    waiting.close()
    status = service.wait_until(
        lambda s: s["scheduler"]["queued_interactive"] == 0, "freeing the queue place"
    )
    assert status["scheduler"]["running"] == 1

    # A shorter queue timeout, applied live by SIGHUP: the next waiter gives up.
    service.write_config(
        LONG_CALLS + "[scheduler]\nmax_concurrent = 1\nmax_queue = 1\nqueue_timeout_s = 0.2\n"
    )
    service.signal(signal.SIGHUP)
    service.wait_until(lambda s: s["scheduler"]["queue_timeout_s"] == 0.2, "reloading")
    with pytest.raises(Busy) as timed_out:
        service.call("tools.exec", {"tool": "echo", "input": 4})
    assert timed_out.value.message.startswith("busy: waited 0.2 s for a free slot")
    assert timed_out.value.data["reason"] == "queue_timeout"
    with pytest.raises(KamiError) as stopped:
        running()
    assert stopped.value.data["limit"] == "timeout_ms"

    families = parse(service.call("metrics.get")["text"])
    rejections = families["kami_scheduler_rejections_total"]
    for reason in ("rate_limited", "queue_full", "queue_timeout"):
        assert rejections.value(reason=reason) == 1
    calls = families["kami_calls_total"]
    assert calls.value(tool="dev.test.echo", outcome="cancelled") == 1  # the one that left
    assert calls.value(tool="dev.test.echo", outcome="busy") == 2
    assert calls.value(tool="dev.test.loop", outcome="limit_exceeded") == 1
    assert calls.value(tool="dev.test.rated", outcome="ok") == 2


def test_metrics_over_http_and_from_kamictl(service: ServiceDaemon) -> None:
    service.spawn("--metrics-listen", "127.0.0.1:0")
    service.wait_serving()
    install(service, "echo.wat", "dev.test.echo")
    for i in range(3):
        service.call("tools.exec", {"tool": "echo", "input": i, "priority": "batch"})
    batch = run_kamictl(service.home, "exec", "echo", "--input", "7", "--batch")
    assert (batch.returncode, batch.stdout.strip()) == (0, "7"), batch.stderr
    address = service.call("daemon.status")["metrics_address"]
    assert address.startswith("127.0.0.1:")
    with httpx.Client(base_url=f"http://{address}") as http:  # one kept-alive connection
        scraped = http.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        families = parse(scraped.text)
        assert families["kami_calls_total"].value(tool="dev.test.echo", outcome="ok") == 4
        assert (
            families["kami_call_queue_wait_seconds"].value(
                "kami_call_queue_wait_seconds_count", priority="batch"
            )
            == 4
        )
        assert families["kami_cache_misses_total"].value() >= 1
        assert families["kami_connections"].value() >= 0
        assert (http.get("/health").status_code, http.get("/health").text) == (200, "ok\n")
        assert http.get("/ready").text == "ready\n"
        head = http.head("/metrics")
        assert (head.status_code, head.content) == (200, b"")
        assert int(head.headers["content-length"]) > 0
        assert http.get("/nope").status_code == 404
        posted = http.post("/metrics", content=b"x")
        assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
    # Malformed HTTP gets a 400 and the server keeps serving.
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert raw.recv(1024).startswith(b"HTTP/1.1 400 ")
    assert httpx.get(f"http://{address}/health").status_code == 200

    printed = run_kamictl(service.home, "metrics")
    assert printed.returncode == 0, printed.stderr
    assert parse(printed.stdout)["kami_calls_total"].value(tool="dev.test.echo", outcome="ok") == 4


def test_a_bad_metrics_address_is_a_usage_error(kami_home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kamid", "--foreground", "--metrics-listen", "9464"],
        env=daemon_env(kami_home),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "'9464' is not HOST:PORT; use e.g. 127.0.0.1:9464" in done.stderr


def test_status_dashboard_once_and_watching(service: ServiceDaemon) -> None:
    service.spawn()
    service.wait_serving()
    install(service, "echo.wat", "dev.test.echo")
    for i in range(4):
        service.call("tools.exec", {"tool": "echo", "input": i})
    once = run_kamictl(service.home, "status")
    assert once.returncode == 0, once.stderr
    for words in ("calls/s", "p99", "component cache", "dev.test.echo", "0/64"):
        assert words in once.stdout
    as_json = json.loads(run_kamictl(service.home, "status", "--json").stdout)
    assert as_json["daemon"]["activity"]["tools"][0]["calls"] == 4

    watch = subprocess.Popen(
        [sys.executable, "-m", "kamictl", "status", "--watch", "--interval", "0.2"],
        env=daemon_env(service.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        seen = ""
        while seen.count("Ctrl-C to quit") < 2:  # two frames: it refreshes
            line = watch.stdout.readline()
            assert line, f"kamictl status --watch ended early: {watch.stderr}"
            seen += line
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
    assert watch.returncode == 0, err
    assert "dev.test.echo" in seen
    assert "Traceback" not in err

    bad = run_kamictl(service.home, "status", "--watch", "--interval", "0")
    assert bad.returncode == 2
    assert "--interval must be 0.1 to 3600 seconds" in bad.stderr


def test_json_logs_are_one_object_per_line(service: ServiceDaemon) -> None:
    service.spawn("--log-format", "json")
    service.wait_serving()
    service.signal(signal.SIGTERM)
    assert service.wait() == 0
    lines = [json.loads(line) for line in service.log().splitlines()]
    assert {"ts", "level", "logger", "message", "pid"} <= set(lines[0])
    assert any(line["message"].startswith("kamid 0.1.0 serving on") for line in lines)
    assert lines[-1]["message"] == "kamid stopped"
    # The daemon's log file gets the same format.
    for line in service.paths.daemon_log.read_text().splitlines():
        json.loads(line)


def test_worker_processes_serve_calls_and_stop_with_kamid(service: ServiceDaemon) -> None:
    service.write_config("[engine]\nprocess_workers = 2\n")
    service.spawn()
    service.wait_serving()
    install(service, "echo.wat", "dev.test.echo")
    outputs = [service.call("tools.exec", {"tool": "echo", "input": i})["output"] for i in range(5)]
    assert outputs == list(range(5))
    status = service.call("daemon.status")
    assert status["scheduler"]["max_concurrent"] == 2
    cache = status["cache"]
    assert cache["memory_hits"] + cache["disk_hits"] >= 5  # counted in the workers
    deadline = time.monotonic() + 60  # the second worker may still be starting
    while len(pids := worker_pids(service)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 2
    service.signal(signal.SIGTERM)
    assert service.wait() == 0
    for pid in pids:  # reaped, not left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def worker_pids(service: ServiceDaemon) -> list[int]:
    lines = service.log().splitlines()
    return [int(line.split()[-2]) for line in lines if "worker process" in line]
