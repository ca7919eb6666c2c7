"""A daemon full of hostile tools, and the three checks every adversarial case makes.

Every case asserts that the attack was (1) denied with a clear error, (2) left the daemon
serving other calls, and (3) left the store unchanged: the installed tools, their grants,
their blobs, and the directories outside every sandbox. :class:`Hostile` holds the
daemon and does (2) and (3) in :meth:`Hostile.assert_contained`.

The daemon is shared by the whole session (the Python probe takes a while to compile);
cases that need their own configuration start their own daemon with WAT tools only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kamid.engine import wat2wasm
from kamid.protocol import KamiError
from tests.adversarial._probe import build_probe
from tests.conftest import Daemon, make_tool, short_tempdir, wat_component

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The hostile daemon's configuration: small limits so that every bomb goes off fast.
CONFIG = """
[server]
max_connections = 24
max_frame_bytes = 1048576
idle_timeout_s = 3
frame_timeout_s = 1

[limits]
timeout_ms = 3000
fuel = 5_000_000_000
memory_bytes = 134217728
max_input_bytes = 65536
max_output_bytes = 65536
max_guest_output_bytes = 4096
max_host_calls = 500
sandbox_bytes = 1048576

[ceilings]
memory_bytes = 268435456
fuel = 20_000_000_000
"""

#: Set in the daemon's environment; the probe is granted the first, never the second.
OWN_VAR, OWN_VALUE = "KAMI_ADV_OWN", "from-kamid"
SECRET_VAR, SECRET_VALUE = "KAMI_ADV_SECRET", "never-for-tools"

#: tool id -> (fixture, [security] lines)
WAT_TOOLS: dict[str, tuple[str, str]] = {
    "dev.adv.echo": ("echo.wat", ""),
    "dev.adv.fuel": ("fuel_bomb.wat", "max_fuel = 20_000_000"),
    "dev.adv.loop": ("loop.wat", "timeout_ms = 400"),
    "dev.adv.memory": ("memory_bomb.wat", "max_memory_mb = 16"),
    "dev.adv.bigmem": ("big_memory.wat", "max_memory_mb = 16"),
    "dev.adv.stack": ("adversarial_stack.wat", ""),
    "dev.adv.output": ("big_output.wat", ""),
    "dev.adv.flood": ("stdout_flood.wat", ""),
    "dev.adv.host": ("adversarial_hostflood.wat", ""),
    "dev.adv.table": ("adversarial_table.wat", ""),
    "dev.adv.memories": ("adversarial_memories.wat", ""),
    "dev.adv.fs": ("security_fs.wat", 'fs = "sandbox"'),
    "dev.adv.assets": ("security_fs.wat", 'fs = "read-only"'),
    "dev.adv.nofs": ("security_fs.wat", ""),
}


def instances_wat(count: int) -> str:
    """A component instantiating an empty core module ``count`` times (an instance bomb)."""
    lines = "\n".join(f"  (core instance $e{i} (instantiate $empty))" for i in range(count))
    return f"""(component
  (core module $empty)
{lines}
  (core module $m
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "run") (param $ptr i32) (param $len i32) (result i32) (unreachable)))
  (core instance $i (instantiate $m))
  (type $r (result string (error string)))
  (func $run (param "input" string) (result $r)
    (canon lift (core func $i "run") (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc"))))
  (instance $tool (export "run" (func $run)))
  (export "kami:tool/tool@0.1.0" (instance $tool)))
"""


def error_of(daemon: Daemon, method: str, params: Any) -> KamiError:
    """The error ``method`` fails with (the test fails if it succeeds)."""
    with pytest.raises(KamiError) as info:
        daemon.call(method, params)
    return info.value


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by content hash, links by target, dirs as such."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class Hostile:
    """The shared daemon with its hostile tools and the directories around them."""

    def __init__(self, daemon: Daemon, root: Path) -> None:
        self.daemon = daemon
        self.root = root
        #: Files no tool may read or change: outside every mount.
        self.canary = root / "canary"
        #: Operator path grants: read-only at /ro, read-write at /rw (the probe only).
        self.ro = root / "ro"
        self.rw = root / "rw"

    @property
    def paths(self) -> Any:
        return self.daemon.paths

    def call(self, method: str, params: Any = None) -> Any:
        return self.daemon.call(method, params)

    def exec(self, tool: str, value: Any, **extra: Any) -> Any:
        return self.call("tools.exec", {"tool": tool, "input": value, **extra})

    def error(self, tool: str, value: Any, **extra: Any) -> KamiError:
        return error_of(self.daemon, "tools.exec", {"tool": tool, "input": value, **extra})

    def probe(self, *steps: dict[str, Any]) -> list[dict[str, Any]]:
        """Runs the probe's steps; one result per step."""
        result: list[dict[str, Any]] = self.exec("dev.adv.probe", list(steps))["output"]
        return result

    def sandbox(self, tool: str) -> Path:
        path: Path = self.paths.data / "sandboxes" / tool
        return path

    def snapshot(self) -> dict[str, Any]:
        """The state an attack must leave alone."""
        tools = self.call("tools.list")["tools"]
        return {
            "tools": [(t["id"], t["version"], t["sha256"]) for t in tools],
            "grants": {
                t["id"]: self.call("tools.inspect", {"tool": t["id"]})["grants"] for t in tools
            },
            # Files only: a refused install may leave an empty shard directory behind.
            "blobs": {k: v for k, v in tree(self.paths.blobs).items() if v != "dir"},
            "assets": tree(self.paths.data / "assets"),
            "sandboxes": sorted(os.listdir(self.paths.data / "sandboxes")),
            "canary": tree(self.canary),
            "ro": tree(self.ro),
        }

    def assert_contained(self, before: dict[str, Any]) -> None:
        """The daemon still serves other calls, and nothing outside the attack changed."""
        status = self.call("daemon.status")
        assert status["pid"] == self.daemon.proc.pid  # type: ignore[union-attr]
        witness = self.exec("dev.adv.echo", {"still": "serving"})
        assert witness["output"] == {"still": "serving"}
        assert self.snapshot() == before


def _start(root: Path, probe_dir: Path) -> Hostile:
    home = short_tempdir("kadv")
    (root / "canary").mkdir()
    (root / "canary" / "secret.txt").write_text("SECRET")
    (root / "ro").mkdir()
    (root / "ro" / "ro.txt").write_text("read me, never write me")
    (root / "rw").mkdir()
    saved = {k: os.environ.get(k) for k in (OWN_VAR, SECRET_VAR)}
    os.environ[OWN_VAR], os.environ[SECRET_VAR] = OWN_VALUE, SECRET_VALUE
    try:
        daemon = Daemon(home).start(config=CONFIG)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    hostile = Hostile(daemon, root)
    try:
        tools = root / "tools"
        for tool_id, (fixture, security) in WAT_TOOLS.items():
            extra = f"[security]\n{security}\n" if security else ""
            tool = make_tool(tools, wat_component(fixture), tool_id=tool_id, extra=extra)
            if tool_id == "dev.adv.assets":
                (tool / "assets").mkdir()
                (tool / "assets" / "a.txt").write_text("asset")
            daemon.call("tools.install", {"path": str(tool), "approve": True})
        instances = make_tool(
            tools,
            wat2wasm(instances_wat(150)),
            tool_id="dev.adv.instances",
        )
        daemon.call("tools.install", {"path": str(instances), "approve": True})
        probe = tools / "probe"
        shutil.copytree(probe_dir, probe)
        daemon.call("tools.install", {"path": str(probe), "approve": True})
        daemon.call(
            "tools.grant",
            {
                "tool": "dev.adv.probe",
                "env": {"KAMI_ADV_GIVEN": "operator-value", OWN_VAR: None},
                "paths": [
                    {"host_path": str(root / "ro"), "guest_path": "/ro", "mode": "ro"},
                    {"host_path": str(root / "rw"), "guest_path": "/rw", "mode": "rw"},
                ],
            },
        )
        daemon.call(
            "tools.grant",
            {
                "tool": "dev.adv.fs",
                "paths": [{"host_path": str(root / "ro"), "guest_path": "/ro", "mode": "ro"}],
            },
        )
        # First calls create the sandbox directories, so that no case sees them appear.
        hostile.probe({"op": "listdir", "path": "/data"})
        hostile.exec("dev.adv.fs", "r0nothing")
    except BaseException:
        daemon.stop()  # a setup that failed must not leave a daemon running
        raise
    return hostile


@pytest.fixture(scope="session")
def hostile() -> Iterator[Hostile]:
    root = short_tempdir("kadvroot")
    hostile = _start(root, build_probe())
    try:
        yield hostile
    finally:
        hostile.daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(hostile.daemon.home, ignore_errors=True)


@pytest.fixture
def before(hostile: Hostile) -> dict[str, Any]:
    """The hostile daemon's state before the case ran."""
    return hostile.snapshot()
