"""Profiles (which tools an agent sees) and ``kamictl mcp-config`` (how a client runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from tests.conftest import daemon_env, run_kamictl
from tests.mcp._stdio import Shim, modern
from tests.mcp.conftest import install_wat

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Daemon


def test_profile_commands(wat_daemon: Daemon) -> None:
    home = wat_daemon.home
    created = run_kamictl(home, "profile", "create", "narrow", "--tools", "echo,dev.future.tool")
    assert created.returncode == 0, created.stderr
    assert "profile narrow: dev.future.tool, dev.test.echo" in created.stdout
    assert "not installed yet: dev.future.tool" in created.stdout

    again = run_kamictl(home, "profile", "create", "narrow", "--tools", "loop")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "--replace" in again.stderr

    unknown = run_kamictl(home, "profile", "create", "other", "--tools", "nope")
    assert unknown.returncode == 1
    assert 'no tool "nope" is installed' in unknown.stderr

    bad = run_kamictl(home, "profile", "create", "Bad Name", "--tools", "echo")
    assert bad.returncode == 1
    assert "not valid" in bad.stderr

    listed = json.loads(run_kamictl(home, "profile", "list", "--json").stdout)
    assert [(p["name"], p["tools"], p["missing"]) for p in listed["profiles"]] == [
        ("narrow", ["dev.future.tool", "dev.test.echo"], ["dev.future.tool"])
    ]
    assert "narrow" in run_kamictl(home, "profile", "list").stdout

    replaced = run_kamictl(home, "profile", "create", "narrow", "--tools", "loop", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    deleted = run_kamictl(home, "profile", "delete", "narrow")
    assert deleted.returncode == 0, deleted.stderr
    missing = run_kamictl(home, "profile", "delete", "narrow")
    assert missing.returncode == 1
    assert 'no profile "narrow"' in missing.stderr


def test_an_agent_sees_and_calls_only_its_profile(wat_daemon: Daemon, tmp_path: Path) -> None:
    home = wat_daemon.home
    assert run_kamictl(home, "profile", "create", "only-echo", "--tools", "echo").returncode == 0
    with Shim(home, "--profile", "only-echo") as shim:
        shim.initialize()
        assert [t["name"] for t in shim.call("tools/list")["tools"]] == ["echo"]
        denied = shim.request("tools/call", {"name": "fail", "arguments": {}})
        assert denied["error"]["code"] == -32602
        assert shim.call("tools/call", {"name": "echo", "arguments": {"text": "audited"}})
        entry = wat_daemon.call("audit.list", {"tool": "dev.test.echo", "limit": 1})["entries"][0]
        assert (entry["client"], entry["profile"]) == ("kami-tests", "only-echo")
        resources = [r["uri"] for r in shim.call("resources/list")["resources"]]
        assert all("dev.test.echo" in uri for uri in resources)
        hidden = shim.request("resources/read", {"uri": "kami://tools/dev.test.loop/manifest"})
        assert hidden["error"]["code"] == -32002

        # Changing the profile changes what the agent sees, and tells it so.
        replaced = run_kamictl(
            home, "profile", "create", "only-echo", "--tools", "echo,fail", "--replace"
        )
        assert replaced.returncode == 0, replaced.stderr
        shim.notification("notifications/tools/list_changed")
        assert [t["name"] for t in shim.call("tools/list")["tools"]] == ["echo", "fail"]
        # A tool outside the profile comes and goes without a word to this agent.
        install_wat(wat_daemon, tmp_path, "echo.wat", "dev.test.outside")
        shim.notifications.clear()
        assert [t["name"] for t in shim.call("tools/list")["tools"]] == ["echo", "fail"]
        assert not shim.notifications

    with Shim(home, "--tools", "loop,dev.test.fail") as shim:
        shim.call("server/discover", modern())
        names = [t["name"] for t in shim.call("tools/list", modern())["tools"]]
        assert names == ["fail", "loop"]

    with Shim(home, "--profile", "missing") as shim:
        shim.initialize()
        refused = shim.request("tools/list")
        assert refused["error"]["code"] == -32001
        assert "kamictl profile create missing" in refused["error"]["message"]


def test_tool_names_are_unique_and_mcp_safe(wat_daemon: Daemon, tmp_path: Path) -> None:
    install_wat(wat_daemon, tmp_path / "a", "echo.wat", "dev.other.echo")
    with Shim(wat_daemon.home) as shim:
        shim.initialize()
        names = sorted(t["name"] for t in shim.call("tools/list")["tools"])
        assert names == ["dev_other_echo", "dev_test_echo", "fail", "loop"]
        called = shim.call(
            "tools/call", {"name": "dev_other_echo", "arguments": {"text": "which one"}}
        )
        assert called["_meta"]["dev.kami/tool"]["id"] == "dev.other.echo"


def test_mcp_config_prints_and_merges(daemon: Daemon, tmp_path: Path) -> None:
    env_home = tmp_path / "user"
    config = env_home / ".config" / "Claude" / "claude_desktop_config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}, "theme": "dark"}))
    env = {"HOME": str(env_home)}

    printed = _kamictl(daemon.home, env, "mcp-config", "--client", "claude")
    assert printed.returncode == 0, printed.stderr
    entry = json.loads(printed.stdout)["mcpServers"]["kami"]
    assert os.path.isabs(entry["command"])
    assert entry["args"][-1] == "mcp"
    assert entry["env"]["KAMI_HOME"] == str(daemon.home)
    assert str(config) in printed.stderr

    assert run_kamictl(daemon.home, "profile", "create", "p1", "--tools", "dev.x.y").returncode == 0
    wrote = _kamictl(
        daemon.home, env, "mcp-config", "--client", "claude", "--profile", "p1", "--write"
    )
    assert wrote.returncode == 0, wrote.stderr
    data = json.loads(config.read_text())
    assert data["theme"] == "dark"
    assert data["mcpServers"]["other"] == {"command": "x"}
    assert data["mcpServers"]["kami-p1"]["args"][-2:] == ["--profile", "p1"]
    backups = list(config.parent.glob("claude_desktop_config.json.bak-*"))
    assert len(backups) == 1
    assert "theme" in backups[0].read_text()

    same = _kamictl(
        daemon.home, env, "mcp-config", "--client", "claude", "--profile", "p1", "--write"
    )
    assert "already had" in same.stdout

    cursor = _kamictl(daemon.home, env, "mcp-config", "--client", "cursor", "--write")
    assert cursor.returncode == 0, cursor.stderr
    cursor_file = env_home / ".cursor" / "mcp.json"
    assert "kami" in json.loads(cursor_file.read_text())["mcpServers"]

    unknown = _kamictl(daemon.home, env, "mcp-config", "--client", "claude", "--profile", "zz")
    assert unknown.returncode == 2
    assert 'no profile "zz"' in unknown.stderr

    cursor_file.write_text("{not json")
    broken = _kamictl(daemon.home, env, "mcp-config", "--client", "cursor", "--write")
    assert broken.returncode == 2
    assert "not valid JSON" in broken.stderr
    assert cursor_file.read_text() == "{not json"


def _kamictl(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**daemon_env(home), **env}
    full.pop("XDG_CONFIG_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "kamictl", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
