"""Hostile installs and tampered files: refused, with the store left as it was."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TYPE_CHECKING, Any

from tests.adversarial.conftest import error_of
from tests.conftest import Daemon, make_tool, wat_component

if TYPE_CHECKING:
    from pathlib import Path

    from tests.adversarial.conftest import Hostile

Snapshot = dict[str, Any]


def test_manifest_over_the_ceilings(hostile: Hostile, before: Snapshot, tmp_path: Path) -> None:
    tool = make_tool(
        tmp_path,
        wat_component("echo.wat"),
        tool_id="dev.adv.greedy",
        extra="[security]\nmax_memory_mb = 100000\nmax_fuel = 10_000_000_000_000\n",
    )
    exc = error_of(hostile.daemon, "tools.install", {"path": str(tool), "approve": True})
    assert exc.code == -32003
    assert "max_memory_mb = 100000 asks for" in exc.message
    assert "at most 268435456 ([ceilings].memory_bytes" in exc.message
    assert "max_fuel" in exc.message
    assert "Nothing was installed" in exc.message
    assert exc.data["ceilings"] == {"memory_bytes": 268435456, "fuel": 20_000_000_000}
    hostile.assert_contained(before)


def test_manifest_above_defaults_needs_approval(
    hostile: Hostile, before: Snapshot, tmp_path: Path
) -> None:
    # Below the ceiling but above the default: a request like any other, shown and refused
    # unless approved (approving would make it the tool's own limit).
    tool = make_tool(
        tmp_path,
        wat_component("echo.wat"),
        tool_id="dev.adv.hungry",
        extra="[security]\nmax_memory_mb = 200\n",
    )
    exc = error_of(hostile.daemon, "tools.install", {"path": str(tool)})
    assert exc.code == -32003
    assert "limit: memory_bytes = 209715200 (daemon default 134217728)" in exc.data["requested"]
    assert "kamictl install --yes" in exc.message
    hostile.assert_contained(before)


def test_wasi_http_import_is_refused(hostile: Hostile, before: Snapshot, tmp_path: Path) -> None:
    tool = make_tool(tmp_path, wat_component("wasi_http_import.wat"), tool_id="dev.adv.http")
    exc = error_of(hostile.daemon, "tools.install", {"path": str(tool), "approve": True})
    assert exc.code == -32008
    assert "wasi:http" in exc.message
    assert "kami:tool/http" in exc.message  # what to use instead
    hostile.assert_contained(before)


def test_unknown_import_is_refused(hostile: Hostile, before: Snapshot, tmp_path: Path) -> None:
    tool = make_tool(tmp_path, wat_component("unknown_import.wat"), tool_id="dev.adv.unknown")
    exc = error_of(hostile.daemon, "tools.install", {"path": str(tool), "approve": True})
    assert exc.code == -32008
    assert "which KAMI does not provide" in exc.message
    hostile.assert_contained(before)


def test_assets_smuggling_a_symlink(hostile: Hostile, before: Snapshot, tmp_path: Path) -> None:
    # assets/key -> the operator's own secret: copying it would hand it to the tool.
    tool = make_tool(
        tmp_path,
        wat_component("security_fs.wat"),
        tool_id="dev.adv.smuggler",
        extra='[security]\nfs = "read-only"\n',
    )
    (tool / "assets").mkdir()
    os.symlink(hostile.canary / "secret.txt", tool / "assets" / "key")
    exc = error_of(hostile.daemon, "tools.install", {"path": str(tool), "approve": True})
    assert exc.code == -32008
    assert "symlink" in exc.message
    hostile.assert_contained(before)


def test_granting_kami_home_to_a_tool(hostile: Hostile, before: Snapshot) -> None:
    for host in (str(hostile.paths.data), str(hostile.paths.data.parent), "/", "/proc"):
        exc = error_of(
            hostile.daemon,
            "tools.grant",
            {"tool": "dev.adv.probe", "paths": [{"host_path": host, "guest_path": "/x"}]},
        )
        assert exc.code == -32003, host
        assert "never reach" in exc.message or "whole filesystem" in exc.message
    # A symlink elsewhere that points into KAMI_HOME is resolved first, then refused.
    link = hostile.root / "innocent"
    os.symlink(hostile.paths.data / "blobs", link)
    try:
        exc = error_of(
            hostile.daemon,
            "tools.grant",
            {"tool": "dev.adv.probe", "paths": [{"host_path": str(link), "guest_path": "/x"}]},
        )
        assert exc.code == -32003
        assert "is inside" in exc.message
    finally:
        link.unlink()
    hostile.assert_contained(before)


def _contained(daemon: Daemon, tools: Any) -> None:
    assert daemon.call("tools.list") == tools
    assert daemon.call("tools.exec", {"tool": "dev.adv.other", "input": [1]})["output"] == [1]


def test_tampered_blob(kami_home: Path, tmp_path: Path) -> None:
    daemon = Daemon(kami_home).start()
    try:
        for tool_id in ("dev.adv.victim", "dev.adv.other"):
            fixture = "echo.wat" if tool_id == "dev.adv.other" else "err.wat"
            tool = make_tool(tmp_path, wat_component(fixture), tool_id=tool_id)
            daemon.call("tools.install", {"path": str(tool)})
        victim = daemon.call("tools.inspect", {"tool": "dev.adv.victim"})
        tools = daemon.call("tools.list")
    finally:
        daemon.stop()
    # Offline: the attacker edits the blob and removes the native code built from it.
    blob = daemon.paths.blobs / victim["tool"]["sha256"][:2] / victim["tool"]["sha256"]
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    blob.write_bytes(wat_component("echo.wat") + b"\0")
    for aot in daemon.paths.aot.glob(f"{victim['tool']['sha256']}*"):
        aot.unlink()
    daemon = Daemon(kami_home).start()
    try:
        exc = error_of(daemon, "tools.exec", {"tool": "dev.adv.victim", "input": {}})
        assert exc.code == -32002
        assert "was modified on disk" in exc.message
        assert "reinstall" in exc.message
        _contained(daemon, tools)
    finally:
        daemon.stop()


def test_tampered_aot_file(kami_home: Path, tmp_path: Path) -> None:
    # A custom section makes the victim a component of its own (its own hash and AOT file).
    victim_wasm = wat_component("echo.wat") + b"\x00\x05\x04kami"
    daemon = Daemon(kami_home).start()
    try:
        for tool_id, wasm in (("dev.adv.victim", victim_wasm), ("dev.adv.other", None)):
            tool = make_tool(tmp_path, wasm or wat_component("echo.wat"), tool_id=tool_id)
            daemon.call("tools.install", {"path": str(tool)})
        tools = daemon.call("tools.list")
    finally:
        daemon.stop()
    victim_sha = hashlib.sha256(victim_wasm).hexdigest()
    (victim_aot,) = daemon.paths.aot.glob(f"{victim_sha}*.cwasm")
    # Offline: native code of another component (one that fails every call) replaces it.
    from kamid.engine import Engine
    from tests.engine.conftest import DictIndex

    evil = wat_component("err.wat")
    evil_wasm = tmp_path / "evil.wasm"
    evil_wasm.write_bytes(evil)
    engine = Engine(aot_dir=tmp_path / "aot", aot_index=DictIndex())
    engine.precompile(hashlib.sha256(evil).hexdigest(), evil_wasm)
    (evil_native,) = (tmp_path / "aot").glob("*.cwasm")
    victim_aot.write_bytes(evil_native.read_bytes())
    daemon = Daemon(kami_home).start()
    try:
        # The swapped file is refused (its hash is not the recorded one) and rebuilt from
        # the verified blob: the victim still echoes; the evil code never runs.
        result = daemon.call("tools.exec", {"tool": "dev.adv.victim", "input": {"x": 1}})
        assert result["output"] == {"x": 1}
        assert daemon.call("daemon.status")["cache"]["rejected"] == 1
        assert "recompiling" in daemon.log()
        _contained(daemon, tools)
    finally:
        daemon.stop()
