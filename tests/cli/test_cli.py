"""kamictl against a real daemon: the user-facing flows and their bad-input paths."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Daemon, make_tool, run_kamictl, wat_component

if TYPE_CHECKING:
    from pathlib import Path


def test_install_list_inspect_exec_uninstall(daemon: Daemon, tmp_path: Path) -> None:
    home = daemon.home
    tool = make_tool(tmp_path, wat_component("echo.wat"))
    r = run_kamictl(home, "install", str(tool))
    assert r.returncode == 0, r.stderr
    assert "installed dev.test.echo 0.1.0" in r.stderr

    r = run_kamictl(home, "list", "--json")
    tools = json.loads(r.stdout)["tools"]
    assert [t["id"] for t in tools] == ["dev.test.echo"]

    r = run_kamictl(home, "inspect", "echo", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["tool"]["sha256"] == tools[0]["sha256"]
    assert info["cache"] == "memory"

    r = run_kamictl(home, "exec", "dev.test.echo", "--input", '{"text": "hi"}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"text": "hi"}

    r = run_kamictl(home, "exec", "echo", "--input", "[1, 2]", "--json")
    result = json.loads(r.stdout)
    assert result["output"] == [1, 2]
    assert result["usage"]["fuel_consumed"] > 0
    assert result["usage"]["wall_ms"] > 0

    r = run_kamictl(home, "uninstall", "echo")
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "exec", "echo", "--input", "{}")
    assert r.returncode == 1
    assert 'no tool "echo"' in r.stderr


def test_reinstall_is_idempotent_and_new_version_replaces(daemon: Daemon, tmp_path: Path) -> None:
    tool = make_tool(tmp_path, wat_component("echo.wat"))
    assert daemon.call("tools.install", {"path": str(tool)})["changed"] is True
    again = daemon.call("tools.install", {"path": str(tool)})
    assert again["changed"] is False
    newer = make_tool(tmp_path, wat_component("echo.wat"), version="0.2.0")
    result = daemon.call("tools.install", {"path": str(newer)})
    assert result["changed"] is True
    assert result["replaced"] == "0.1.0"
    assert [t["version"] for t in daemon.call("tools.list")["tools"]] == ["0.2.0"]


def test_run_adhoc_component(daemon: Daemon, tmp_path: Path) -> None:
    wasm = tmp_path / "echo.wasm"
    wasm.write_bytes(wat_component("echo.wat"))
    r = run_kamictl(daemon.home, "run", str(wasm), "--input", '"x"')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "x"
    assert daemon.call("tools.list")["tools"] == []


def test_autostart_and_no_autostart(kami_home: Path) -> None:
    r = run_kamictl(kami_home, "--no-autostart", "list")
    assert r.returncode == 3
    assert "kamictl daemon start" in r.stderr
    r = run_kamictl(kami_home, "list", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"tools": []}
    r = run_kamictl(kami_home, "daemon", "status", "--json")
    assert r.returncode == 0
    pid = json.loads(r.stdout)["pid"]
    r = run_kamictl(kami_home, "daemon", "start")
    assert f"already running (pid {pid}" in r.stderr
    r = run_kamictl(kami_home, "daemon", "stop")
    assert r.returncode == 0, r.stderr
    assert "kamid stopped" in r.stderr
    r = run_kamictl(kami_home, "daemon", "status", "--no-autostart")
    assert r.returncode == 3


def test_input_that_is_not_json_is_a_usage_error(daemon: Daemon) -> None:
    r = run_kamictl(daemon.home, "exec", "anything", "--input", "{text: hi}")
    assert r.returncode == 2
    assert "--input is not valid JSON" in r.stderr


def test_usage_error_exit_code(kami_home: Path) -> None:
    assert run_kamictl(kami_home, "frobnicate").returncode == 2


BAD_MANIFESTS = [
    ("", "missing [tool] table"),
    ("[tool]\nid = 'x'\n", "[tool].name is required; [tool].version is required"),
    (
        "[tool]\nid='X'\nname='x'\nversion='1.0.0'\ndescription='d'\nwasm='tool.wasm'\n",
        "[tool].id must be a reverse-DNS id",
    ),
    (
        "[tool]\nid='dev.t.x'\nname='x'\nversion='1.0'\ndescription='d'\nwasm='tool.wasm'\n",
        '[tool].version must be a semantic version like "1.2.3"',
    ),
    (
        "[tool]\nid='dev.t.x'\nname='x'\nversion='1.0.0'\ndescription='d'\nwasm='tool.wasm'\n"
        "[security]\nmax_memory_mb = '64MB'\n",
        "[security].max_memory_mb must be an integer (got '64MB')",
    ),
    ("[tool\n", "not valid TOML"),
]


@pytest.mark.parametrize(("manifest", "message"), BAD_MANIFESTS)
def test_invalid_manifest_changes_nothing(
    daemon: Daemon, tmp_path: Path, manifest: str, message: str
) -> None:
    tool = tmp_path / "bad"
    tool.mkdir()
    (tool / "tool.toml").write_text(manifest)
    (tool / "tool.wasm").write_bytes(wat_component("echo.wat"))
    r = run_kamictl(daemon.home, "install", str(tool))
    assert r.returncode == 1
    assert message in r.stderr
    assert str(tool / "tool.toml") in r.stderr
    assert daemon.call("tools.list")["tools"] == []


def test_missing_manifest(daemon: Daemon, tmp_path: Path) -> None:
    r = run_kamictl(daemon.home, "install", str(tmp_path))
    assert r.returncode == 1
    assert "no tool.toml here" in r.stderr


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("core_module.wat", "core WebAssembly module, not a component"),
        ("wrong_export.wat", "kami:tool/tool@0.1.0"),
    ],
)
def test_wasm_that_is_not_a_kami_tool_changes_nothing(
    daemon: Daemon, tmp_path: Path, fixture: str, message: str
) -> None:
    tool = make_tool(tmp_path, wat_component(fixture))
    r = run_kamictl(daemon.home, "install", str(tool))
    assert r.returncode == 1
    assert message in r.stderr
    assert daemon.call("tools.list")["tools"] == []
    # No blob was left behind either.
    blobs = [p for p in daemon.paths.blobs.rglob("*") if p.is_file()]
    assert blobs == []


def test_requested_capabilities_need_approval(daemon: Daemon, tmp_path: Path) -> None:
    tool = make_tool(tmp_path, wat_component("echo.wat"), extra='[security]\nenv = ["HOME"]\n')
    r = run_kamictl(daemon.home, "install", str(tool))
    assert r.returncode == 1
    assert "environment: HOME" in r.stderr
    assert "--yes" in r.stderr
    assert daemon.call("tools.list")["tools"] == []
    r = run_kamictl(daemon.home, "install", str(tool), "--yes")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("fixture", "code", "words"),
    [
        ("trap.wat", 1, "trapped"),
        ("loop.wat", 1, "timeout_ms"),
        ("memory_bomb.wat", 1, "memory"),
        ("err.wat", 1, ""),
    ],
)
def test_failing_tools_leave_daemon_serving(
    daemon: Daemon, tmp_path: Path, fixture: str, code: int, words: str
) -> None:
    tool = make_tool(
        tmp_path,
        wat_component(fixture),
        tool_id="dev.test.bad",
        extra="[security]\ntimeout_ms = 500\nmax_memory_mb = 16\n",
    )
    daemon.call("tools.install", {"path": str(tool)})
    r = run_kamictl(daemon.home, "exec", "dev.test.bad", "--input", "{}", "--json")
    assert r.returncode == code
    error = json.loads(r.stdout)["error"]
    assert words in json.dumps(error)
    status = daemon.call("daemon.status")
    assert status["calls_failed"] == 1
    echo = make_tool(tmp_path, wat_component("echo.wat"))
    daemon.call("tools.install", {"path": str(echo)})
    assert daemon.call("tools.exec", {"tool": "dev.test.echo", "input": 5})["output"] == 5
