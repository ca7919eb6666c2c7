"""The operator's commands end to end: install approval, grant, revoke, audit, purge."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from typing import TYPE_CHECKING

from kamictl._cmd_security import parse_duration_or_time, parse_fs, parse_limit, parse_net
from kamid.protocol import KamiError
from tests.adversarial.conftest import error_of
from tests.conftest import Daemon, make_tool, run_kamictl, short_tempdir, wat_component

if TYPE_CHECKING:
    from pathlib import Path


def test_spec_parsing() -> None:
    assert parse_fs("sandbox") == {"fs": "sandbox"}
    path = parse_fs("/srv/in:/in:rw")["path"]
    assert path == {"host_path": "/srv/in", "guest_path": "/in", "mode": "rw"}
    assert parse_fs("/srv/in:/in")["path"]["mode"] == "ro"
    assert parse_net("api.example.com:GET,post") == {
        "host": "api.example.com",
        "methods": ["GET", "POST"],
    }
    assert parse_net("api.example.com:8443")["host"] == "api.example.com:8443"
    assert parse_net("[::1]:GET")["host"] == "[::1]"
    assert parse_limit("memory_bytes=512M") == ("memory_bytes", 512 * 1024 * 1024)
    assert parse_limit("fuel=20_000_000_000") == ("fuel", 20_000_000_000)
    assert parse_duration_or_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_duration_or_time("2026-01-02T03:04:05+00:00") == 1767323045.0


def test_install_shows_requests_and_what_the_component_can_use(
    daemon: Daemon, tmp_path: Path
) -> None:
    tool = make_tool(
        tmp_path,
        wat_component("echo.wat"),
        extra='[security]\nfs = "sandbox"\nnet = [{ host = "api.example.com" }]\n',
    )
    r = run_kamictl(daemon.home, "install", str(tool), "--json")
    assert r.returncode == 1
    error = json.loads(r.stdout)["error"]
    rows = {c["kind"]: c for c in error["data"]["capabilities"]}
    assert rows["network"]["used"] is False
    assert "does not import kami:tool/http" in rows["network"]["note"]
    assert rows["filesystem"]["used"] is False
    assert daemon.call("tools.list")["tools"] == []
    r = run_kamictl(daemon.home, "install", str(tool), "--yes")
    assert r.returncode == 0, r.stderr
    assert "requested but unused" in r.stderr  # the granted table, on stderr
    grants = daemon.call("tools.inspect", {"tool": "echo"})["grants"]
    assert grants["fs"] == "sandbox"
    assert grants["net"] == [{"host": "api.example.com", "methods": ["GET", "HEAD"]}]


def test_grant_revoke_and_audit_from_the_cli(daemon: Daemon, tmp_path: Path) -> None:
    daemon.call("tools.install", {"path": str(make_tool(tmp_path, wat_component("echo.wat")))})
    host = short_tempdir("kgrant")
    r = run_kamictl(
        daemon.home,
        "grant",
        "echo",
        "--fs",
        f"{host}/sub/..:/work:rw",
        "--env",
        "TOKEN=abc",
        "--limit",
        "memory_bytes=64M",
    )
    assert r.returncode == 0, r.stderr
    assert f"granted: path: {host} at /work (rw)" in r.stderr
    inspect = daemon.call("tools.inspect", {"tool": "echo"})
    assert inspect["grants"]["paths"] == [
        {"host_path": str(host), "guest_path": "/work", "mode": "rw"}
    ]
    assert inspect["limits"]["memory_bytes"] == 64 * 1024 * 1024
    r = run_kamictl(daemon.home, "grant", "echo", "--fs", f"{daemon.home}/data:/db")
    assert r.returncode == 1
    assert "never reach" in r.stderr
    r = run_kamictl(daemon.home, "revoke", "echo", "--env", "NOPE")
    assert r.returncode == 1
    assert "not granted" in r.stderr
    r = run_kamictl(daemon.home, "revoke", "echo", "--fs", "/work", "--env", "TOKEN", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["grants"]["env"] == {}
    assert run_kamictl(daemon.home, "exec", "echo", "--input", "[1]").returncode == 0
    r = run_kamictl(daemon.home, "audit", "--tool", "echo", "--json")
    entries = json.loads(r.stdout)["entries"]
    actions = [(e["action"], e["outcome"]) for e in reversed(entries)]
    assert actions == [
        ("install", "ok"),
        ("grant", "ok"),
        ("grant", "policy_denied"),
        ("revoke", "invalid_params"),
        ("revoke", "ok"),
        ("exec", "ok"),
    ]
    run = entries[0]
    assert run["client"] == "kamictl"
    assert run["input_sha256"] == hashlib.sha256(b"[1]").hexdigest()
    assert run["usage"]["fuel_consumed"] > 0
    assert run["hosts"] == []
    assert "changes" in entries[-2]["detail"]
    r = run_kamictl(daemon.home, "audit", "--since", "1h")
    assert r.returncode == 0
    assert "exec" in r.stdout
    r = run_kamictl(daemon.home, "audit", "--json", "--since", "2000-01-01")
    assert len(json.loads(r.stdout)["entries"]) == 6
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    r = run_kamictl(daemon.home, "audit", "--json", "--since", future)
    assert json.loads(r.stdout)["entries"] == []
    r = run_kamictl(daemon.home, "audit", "--since", "yesterday")
    assert r.returncode == 2
    assert "duration" in r.stderr


def test_uninstall_purge_deletes_the_sandbox(daemon: Daemon, tmp_path: Path) -> None:
    fs = wat_component("security_fs.wat")
    tool = make_tool(tmp_path, fs, extra='[security]\nfs = "sandbox"\n')
    daemon.call("tools.install", {"path": str(tool), "approve": True})
    assert daemon.call("tools.exec", {"tool": "echo", "input": "w0kept"})["output"] == "ok:"
    box = daemon.paths.data / "sandboxes" / "dev.test.echo"
    assert (box / "kept").read_text() == "pwned"
    # Persistent: across an uninstall without --purge and a reinstall, and a restart.
    daemon.call("tools.uninstall", {"tool": "echo"})
    assert (box / "kept").exists()
    daemon.call("tools.install", {"path": str(tool), "approve": True})
    daemon.stop()
    daemon.start()
    assert daemon.call("tools.exec", {"tool": "echo", "input": "r0kept"})["output"] == "ok:pwned"
    r = run_kamictl(daemon.home, "uninstall", "echo", "--purge")
    assert r.returncode == 0, r.stderr
    assert "deleted its sandbox" in r.stderr
    assert not box.exists()


def test_reinstall_keeps_the_operators_grants(daemon: Daemon, tmp_path: Path) -> None:
    first = make_tool(tmp_path, wat_component("echo.wat"))
    daemon.call("tools.install", {"path": str(first)})
    daemon.call("tools.grant", {"tool": "echo", "kv": True, "env": {"A": "1"}})
    second = make_tool(
        tmp_path, wat_component("echo.wat"), version="0.2.0", extra='[security]\nenv = ["B"]\n'
    )
    daemon.call("tools.install", {"path": str(second), "approve": True})
    grants = daemon.call("tools.inspect", {"tool": "echo"})["grants"]
    assert grants["kv"] is True
    assert grants["env"] == {"A": "1", "B": None}


def test_audit_survives_a_restart_and_records_installs_and_uninstalls(
    daemon: Daemon, tmp_path: Path
) -> None:
    daemon.call("tools.install", {"path": str(make_tool(tmp_path, wat_component("err.wat")))})
    for _ in range(3):
        with contextlib.suppress(KamiError):
            daemon.call("tools.exec", {"tool": "echo", "input": {}})
    daemon.call("tools.uninstall", {"tool": "echo"})
    daemon.stop()  # rows still queued are written on the way out
    daemon.start()
    entries = daemon.call("audit.list", {"tool": "dev.test.echo"})["entries"]
    actions = [e["action"] for e in reversed(entries)]
    assert actions == ["install", "exec", "exec", "exec", "uninstall"]
    assert {e["outcome"] for e in entries if e["action"] == "exec"} == {"tool_failed"}
    assert entries[0]["detail"] == {"purged": False}


def test_limits_are_edited_in_kamid_toml_keeping_comments(kami_home: Path, tmp_path: Path) -> None:
    config = "# the operator's notes\n[limits]\n# ten seconds is plenty\ntimeout_ms = 10000\n"
    daemon = Daemon(kami_home).start(config=config)
    try:
        loop = make_tool(tmp_path, wat_component("loop.wat"), tool_id="dev.test.loop")
        daemon.call("tools.install", {"path": str(loop)})
        r = run_kamictl(kami_home, "limits", "--set", "timeout_ms=300", "--set", "fuel=5G")
        assert r.returncode == 0, r.stderr
        assert "set [limits].timeout_ms = 300" in r.stderr
        text = daemon.paths.config_file.read_text()
        assert "# the operator's notes" in text
        assert "# ten seconds is plenty" in text
        assert "timeout_ms = 300" in text
        # Applied at once: the loop now stops at 300 ms.
        exc = error_of(daemon, "tools.exec", {"tool": "dev.test.loop", "input": {}})
        assert exc.data == {**exc.data, "limit": "timeout_ms", "value": 300}
        # Invalid: a default above its ceiling. Refused, and the file is untouched.
        r = run_kamictl(kami_home, "limits", "--set", "memory_bytes=8G")
        assert r.returncode == 1
        assert "[limits].memory_bytes = 8589934592 is above [ceilings].memory_bytes" in r.stderr
        assert "nothing was changed" in r.stderr
        assert daemon.paths.config_file.read_text() == text
        r = run_kamictl(kami_home, "limits", "--json")
        assert json.loads(r.stdout)["defaults"]["timeout_ms"] == 300
        audit = daemon.call("audit.list", {"tool": "kamid"})["entries"]
        assert [e["outcome"] for e in audit] == ["invalid_params", "ok"]
    finally:
        daemon.stop()
    # A restart reads the edited file.
    daemon.start()
    try:
        assert daemon.call("limits.get")["defaults"]["timeout_ms"] == 300
    finally:
        daemon.stop()
