"""One real kamid for the network tests, with the real example tools installed on demand.

Compiling a componentize-py tool takes 10-40 s, so every network test shares one daemon
(session scope) and installs the built examples under fresh tool ids, each with the
grants the test needs: the component is the same, so the daemon's AOT cache serves every
install after the first. ``tests/conftest.py`` loads this module as a plugin, so any test
can ask for the ``net_daemon`` fixture.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import pytest

from kamid.protocol import load_manifest
from tests.conftest import Daemon, daemon_with_examples, run_kamictl

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
    """The network examples installed from a cached template home (tests/conftest.py);
    later installs of the same components under other ids hit its AOT cache."""
    with daemon_with_examples(built_examples, _NET_EXAMPLES, name="net-home", prefix="kn") as d:
        yield NetDaemon(d, built_examples)
