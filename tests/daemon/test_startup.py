"""What kamid loads to start: what every autostarted `kamictl` command waits for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Daemon, modules_loaded


def test_the_daemon_starts_without_httpx() -> None:
    # httpx (with its command line, rich and click) is ~55 ms of start-up; only a
    # registry fetch or a tool's HTTP request needs it, and it is imported then.
    setup = "import kamid.daemon, kamid.service, kamid.hostapi, kamid.registry"
    assert modules_loaded(setup, ["httpx", "rich", "click"]) == []


def test_tuned_environ_adds_the_copy_threshold_once() -> None:
    from kamid.tuning import NON_TEMPORAL_THRESHOLD, tuned_environ

    setting = f"glibc.cpu.x86_non_temporal_threshold={NON_TEMPORAL_THRESHOLD}"
    added = tuned_environ({"HOME": "/h"})
    if added is None:
        pytest.skip("not glibc on x86-64: kamid leaves the environment alone")
    assert added == {"HOME": "/h", "GLIBC_TUNABLES": setting}
    assert tuned_environ(added) is None  # set already: no second restart
    kept = tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{setting}"}
    # An operator's own threshold wins.
    assert tuned_environ({"GLIBC_TUNABLES": "glibc.cpu.x86_non_temporal_threshold=1"}) is None


def test_the_daemon_runs_with_the_threshold(daemon: Daemon) -> None:
    from kamid.tuning import tuned_environ

    if tuned_environ({}) is None:
        pytest.skip("not glibc on x86-64")
    assert daemon.proc is not None
    environ = Path(f"/proc/{daemon.proc.pid}/environ").read_bytes().split(b"\0")
    # Restarted in place: the same pid, now with the setting, and serving.
    assert any(b"x86_non_temporal_threshold=" in entry for entry in environ)
    assert daemon.call("daemon.status")["pid"] == daemon.proc.pid
