"""The MCP Inspector CLI (``--cli`` mode) lists and calls KAMI's tools through kamictl mcp."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from tests.mcp._inspector import inspector

if TYPE_CHECKING:
    from tests.conftest import Daemon


def run_inspector(home: object, *args: str) -> Any:
    executable = inspector()
    if executable is None:
        pytest.skip("node and npm are needed for the MCP Inspector")
    proc = subprocess.run(
        [
            str(executable),
            "--cli",
            "-e",
            f"KAMI_HOME={home}",
            sys.executable,
            "-m",
            "kamictl",
            "mcp",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


@pytest.mark.examples
def test_inspector_lists_and_calls_the_examples(examples_daemon: Daemon) -> None:
    home = examples_daemon.home
    listed = run_inspector(home, "--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    assert set(tools) == {"echo", "hello"}
    assert tools["hello"]["inputSchema"]["required"] == ["name"]
    assert tools["hello"]["annotations"]["readOnlyHint"] is True

    echoed = run_inspector(
        home, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=inspected"
    )
    assert echoed["isError"] is False
    assert echoed["structuredContent"] == {"echo": "inspected", "length": 9}

    greeted = run_inspector(
        home, "--method", "tools/call", "--tool-name", "hello", "--tool-arg", "name=Inspector"
    )
    assert greeted["structuredContent"] == {"greeting": "Hello, Inspector!"}

    resources = run_inspector(home, "--method", "resources/list")
    uris = {r["uri"] for r in resources["resources"]}
    assert "kami://tools/dev.kami.echo/readme" in uris
