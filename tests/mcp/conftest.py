"""Fixtures for the MCP tests: daemons with WAT tools (fast) or the real examples."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import shutil
from typing import TYPE_CHECKING

import pytest

from tests._examples import toolchain
from tests.conftest import Daemon, make_tool, short_tempdir, wat_component

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
    must leave it as they found it.

    Installing compiles each example to native code (tens of seconds on two cores), so the
    installed home is kept as a template in the toolchain folder and copied: a session
    whose examples, schema and wasmtime match an earlier one compiles nothing.
    """
    template = _examples_template(built_examples)
    home = short_tempdir("kx")
    shutil.copytree(template, home, dirs_exist_ok=True)
    daemon = Daemon(home).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


def _examples_template(built_examples: dict[str, Path]) -> Path:
    from kamid.store._schema import MIGRATIONS

    digest = hashlib.sha256(importlib.metadata.version("wasmtime").encode())
    for tool_id in MCP_EXAMPLES:
        digest.update(str(built_examples[tool_id]).encode())
        digest.update((built_examples[tool_id] / "tool.toml").read_bytes())
    digest.update("\0".join(MIGRATIONS).encode())
    template = toolchain() / "mcp-home" / digest.hexdigest()[:16]
    if template.exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with (template.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if template.exists():
            return template
        home = short_tempdir("kt")
        try:
            daemon = Daemon(home).start()
            try:
                for tool_id in MCP_EXAMPLES:
                    path = str(built_examples[tool_id])
                    daemon.call("tools.install", {"path": path, "approve": True})
            finally:
                daemon.stop()
            for leftover in ("logs", "run"):
                shutil.rmtree(home / leftover, ignore_errors=True)
            (home / "daemon.stderr").unlink(missing_ok=True)
            staging = template.with_name(template.name + ".staging")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(home, staging)
            staging.rename(template)  # atomic: other sessions see all of it or none
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return template
