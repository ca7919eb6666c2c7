"""What kamid loads to start: what every autostarted `kamictl` command waits for."""

from __future__ import annotations

from tests.conftest import modules_loaded


def test_the_daemon_starts_without_httpx() -> None:
    # httpx (with its command line, rich and click) is ~55 ms of start-up; only a
    # registry fetch or a tool's HTTP request needs it, and it is imported then.
    setup = "import kamid.daemon, kamid.service, kamid.hostapi, kamid.registry"
    assert modules_loaded(setup, ["httpx", "rich", "click"]) == []
