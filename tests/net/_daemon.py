"""One real kamid for the network tests, with the real example tools installed on demand.

Compiling a componentize-py tool takes 10-40 s, so every network test shares one daemon
(session scope) and installs the built examples under fresh tool ids, each with the
grants the test needs: the component is the same, so the daemon's AOT cache serves every
install after the first. ``tests/conftest.py`` loads this module as a plugin, so any test
can ask for the ``net_daemon`` fixture.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import itertools
import json
import shutil
from typing import TYPE_CHECKING, Any

import pytest

from kamid.protocol import load_manifest
from tests._examples import toolchain
from tests.conftest import Daemon, run_kamictl, short_tempdir

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator, Sequence
    from pathlib import Path

__all__ = ["NetDaemon", "net_daemon"]

_ids = itertools.count(1)
#: Installed (so compiled) in the template home every session starts from.
_NET_EXAMPLES = ("dev.kami.http-fetch", "dev.kami.github-repo")


class NetDaemon:
    """A running kamid plus helpers to install a network tool and call it."""

    def __init__(self, daemon: Daemon, examples: dict[str, Path]) -> None:
        self.daemon = daemon
        self.home = daemon.home
        self._examples = examples

    def install(
        self,
        example: str = "dev.kami.http-fetch",
        *,
        net: Sequence[tuple[str, Sequence[str]]] = (),
        secrets: str = "",
        timeout_ms: int | None = None,
    ) -> str:
        """Installs ``example``'s component under a new id with these requests (approved).

        Args:
            net: ``(host rule, methods)`` pairs for ``[security].net``.
            secrets: TOML appended after ``[security]`` (``[[security.secrets]]`` tables).
        """
        src = self._examples[example]
        manifest = load_manifest(src)
        tool_id = f"dev.test.net{next(_ids)}"
        tool_dir = self.home / "tools" / tool_id
        tool_dir.mkdir(parents=True)
        wasm = (src / manifest.tool.wasm).resolve()
        rules = ", ".join(
            f"{{ host = {json.dumps(host)}, methods = {json.dumps(list(methods))} }}"
            for host, methods in net
        )
        lines = [
            "[tool]",
            f'id = "{tool_id}"',
            f'name = "{tool_id.rsplit(".", 1)[-1]}"',
            'version = "0.1.0"',
            f'description = "{manifest.tool.description}"',
            f'wasm = "{wasm}"',
            "",
            "[security]",
            f"net = [{rules}]",
        ]
        if timeout_ms is not None:
            lines.append(f"timeout_ms = {timeout_ms}")
        (tool_dir / "tool.toml").write_text("\n".join(lines) + "\n" + secrets + "\n")
        self.daemon.call("tools.install", {"path": str(tool_dir), "approve": True})
        return tool_id

    def exec(self, tool: str, input: Any, **params: Any) -> Any:
        """``tools.exec``; raises the daemon's KamiError (a tool error is ToolFailed)."""
        return self.daemon.call("tools.exec", {"tool": tool, "input": input, **params})

    def kamictl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_kamictl(self.home, *args, input=input)


@pytest.fixture(scope="session")
def net_daemon(built_examples: dict[str, Path]) -> Iterator[NetDaemon]:
    home = short_tempdir("kn")
    shutil.copytree(_template(built_examples), home, dirs_exist_ok=True)
    daemon = Daemon(home).start()
    try:
        yield NetDaemon(daemon, built_examples)
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


def _template(built_examples: dict[str, Path]) -> Path:
    """A KAMI home with the network examples installed, kept in the toolchain folder.

    Installing compiles each example to native code (tens of seconds on two cores); a
    session whose examples, schema and wasmtime match an earlier one copies this home and
    compiles nothing. Later installs of the same components under other ids hit its AOT
    cache.
    """
    from kamid.store._schema import MIGRATIONS

    digest = hashlib.sha256(importlib.metadata.version("wasmtime").encode())
    for tool_id in _NET_EXAMPLES:
        digest.update(str(built_examples[tool_id]).encode())
        digest.update((built_examples[tool_id] / "tool.toml").read_bytes())
    digest.update("\0".join(MIGRATIONS).encode())
    template = toolchain() / "net-home" / digest.hexdigest()[:16]
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
                for tool_id in _NET_EXAMPLES:
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
