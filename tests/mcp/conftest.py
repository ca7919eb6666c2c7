"""Fixtures for the MCP tests: daemons with WAT tools (fast) or the real examples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import Daemon, daemon_with_examples, make_tool, wat_component

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: echo.wat returns its input; with declared arguments and a prompt.
ECHO_EXTRA = """
[arguments.text]
type = "string"
description = "What to echo"
required = true

[arguments.times]
type = "integer"
description = "A number the tool ignores"

[prompts.shout]
title = "Shout it"
description = "Echo something loudly."
text = "Call echo with {text} in capitals. {{not a placeholder}}"

[prompts.shout.arguments.text]
description = "What to shout"
required = true
"""
#: The examples the MCP tests call: the Python echo and the JavaScript hello.
MCP_EXAMPLES = ("dev.kami.echo", "dev.kami.hello")
#: loop.wat never returns; this deadline stops it.
LOOP_EXTRA = """
[security]
timeout_ms = 4000
"""


def install_wat(
    daemon: Daemon, root: Path, fixture: str, tool_id: str, extra: str = "", readme: bool = True
) -> Path:
    """Installs a WAT fixture as ``tool_id`` (with a README) and returns its directory."""
    tool_dir = make_tool(root, wat_component(fixture), tool_id=tool_id, extra=extra)
    if readme:
        (tool_dir / "README.md").write_text(f"# {tool_id}\n\nA test tool made of {fixture}.\n")
    daemon.call("tools.install", {"path": str(tool_dir), "approve": True})
    return tool_dir


@pytest.fixture
def wat_daemon(daemon: Daemon, tmp_path: Path) -> Daemon:
    """A daemon with dev.test.echo, dev.test.loop and dev.test.fail installed."""
    install_wat(daemon, tmp_path, "echo.wat", "dev.test.echo", ECHO_EXTRA)
    install_wat(daemon, tmp_path, "loop.wat", "dev.test.loop", LOOP_EXTRA, readme=False)
    install_wat(daemon, tmp_path, "err.wat", "dev.test.fail", readme=False)
    return daemon


@pytest.fixture(scope="session")
def examples_daemon(built_examples: dict[str, Path]) -> Iterator[Daemon]:
    """One daemon for the session with the real examples installed; the tests share it and
    must leave it as they found it."""
    with daemon_with_examples(built_examples, MCP_EXAMPLES, name="mcp-home", prefix="kx") as d:
        yield d
