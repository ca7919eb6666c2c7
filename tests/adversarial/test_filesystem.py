"""Filesystem and environment escapes, by a Python guest (libc, os module) and a WAT one.

The probe (tests/adversarial/probe) has a sandbox at /data, a read-only path grant at
/ro and a writable one at /rw, and two granted variables. Everything else it tries must
fail inside the guest, with the daemon serving on and nothing outside changed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from tests.adversarial.conftest import OWN_VALUE, OWN_VAR, SECRET_VAR
from tests.security.test_wasi_fs import ERRORS

if TYPE_CHECKING:
    from tests.adversarial.conftest import Hostile

Snapshot = dict[str, Any]


def denied(result: dict[str, Any]) -> bool:
    """The step failed with an OS error (PermissionError, FileNotFoundError, ...)."""
    return "error" in result and result.get("errno") is not None


def test_dotdot_traversal(hostile: Hostile, before: Snapshot) -> None:
    results = hostile.probe(
        {"op": "read", "path": "/data/../../../../etc/passwd"},
        {"op": "read", "path": "/data/../dev.adv.fs/anything"},  # a neighbour's sandbox
        {"op": "read", "path": "/data/../../kami.db"},
        {"op": "listdir", "path": "/data/.."},
        {"op": "write", "path": "/data/../escaped.txt"},
        {"op": "read", "path": "/ro/../canary/secret.txt"},
        {"op": "write", "path": "/rw/../canary/secret.txt"},
    )
    assert all(denied(r) for r in results), results
    assert "not permitted" in results[0]["error"].lower()
    assert not (hostile.paths.data / "sandboxes" / "escaped.txt").exists()
    hostile.assert_contained(before)


def test_absolute_paths_outside_the_mounts(hostile: Hostile, before: Snapshot) -> None:
    results = hostile.probe(
        {"op": "read", "path": "/etc/passwd"},
        {"op": "read", "path": str(hostile.canary / "secret.txt")},
        {"op": "read", "path": str(hostile.paths.database)},
        {"op": "listdir", "path": "/"},
        {"op": "write", "path": "/tmp/escaped.txt"},
        {"op": "read", "path": "/proc/self/environ"},
    )
    assert all(denied(r) for r in results), results
    assert not os.path.exists("/tmp/escaped.txt")
    hostile.assert_contained(before)


def test_chdir_then_relative_escape(hostile: Hostile, before: Snapshot) -> None:
    results = hostile.probe(
        {"op": "chdir_read", "dir": "/data", "path": "../../canary/secret.txt"},
        {"op": "chdir_read", "dir": "/ro", "path": "../canary/secret.txt"},
    )
    assert all(denied(r) for r in results), results
    hostile.assert_contained(before)


def test_symlink_created_inside_pointing_out(hostile: Hostile, before: Snapshot) -> None:
    secret = str(hostile.canary / "secret.txt")
    results = hostile.probe(
        {"op": "symlink", "target": secret, "path": "/data/abs"},  # absolute: refused
        {"op": "symlink", "target": "../../../canary/secret.txt", "path": "/data/rel"},
        {"op": "read", "path": "/data/rel"},
        {"op": "write", "path": "/data/rel"},
        {"op": "symlink", "target": "/ro", "path": "/rw/ro-again"},
        {"op": "write", "path": "/rw/ro-again/ro.txt"},
    )
    made_abs, made_rel, read, write, made_cross, write_cross = results
    assert denied(made_abs)
    assert made_rel == {"ok": "linked"}  # a dangling link may exist...
    assert denied(read)
    assert denied(write)
    assert denied(made_cross)
    assert denied(write_cross)
    box = hostile.sandbox("dev.adv.probe")
    (box / "rel").unlink()
    hostile.assert_contained(before)


def test_symlink_planted_inside_pointing_out(hostile: Hostile, before: Snapshot) -> None:
    # A link put into the sandbox from outside (an operator's mistake, an old escape try).
    box = hostile.sandbox("dev.adv.probe")
    os.symlink(hostile.canary / "secret.txt", box / "planted")
    os.symlink(hostile.canary, box / "planted-dir")
    try:
        results = hostile.probe(
            {"op": "read", "path": "/data/planted"},
            {"op": "write", "path": "/data/planted"},
            {"op": "read", "path": "/data/planted-dir/secret.txt"},
            {"op": "listdir", "path": "/data/planted-dir"},
        )
        assert all(denied(r) for r in results), results
    finally:
        (box / "planted").unlink()
        (box / "planted-dir").unlink()
    hostile.assert_contained(before)


def test_hard_links(hostile: Hostile, before: Snapshot) -> None:
    results = hostile.probe(
        {"op": "link", "src": "/data/../../canary/secret.txt", "path": "/data/stolen"},
        {"op": "link", "src": "/ro/ro.txt", "path": "/data/from-ro"},  # across mounts
        {"op": "link", "src": "/ro/ro.txt", "path": "/rw/from-ro"},
        {"op": "write", "path": "/data/mine"},
        {"op": "link", "src": "/data/mine", "path": "/ro/into-ro"},
        {"op": "link", "src": "/data/mine", "path": "/data/twin"},  # inside: fine
    )
    *escapes, wrote, into_ro, twin = results
    assert all(denied(r) for r in escapes), escapes
    assert wrote == {"ok": "written"}
    assert denied(into_ro)
    assert twin == {"ok": "linked"}
    box = hostile.sandbox("dev.adv.probe")
    for name in ("mine", "twin"):
        (box / name).unlink()
    hostile.assert_contained(before)


def test_writes_to_a_read_only_path_grant(hostile: Hostile, before: Snapshot) -> None:
    results = hostile.probe(
        {"op": "write", "path": "/ro/ro.txt"},
        {"op": "write", "path": "/ro/new.txt"},
        {"op": "unlink", "path": "/ro/ro.txt"},
        {"op": "rename", "src": "/ro/ro.txt", "path": "/ro/moved.txt"},
        {"op": "rename", "src": "/ro/ro.txt", "path": "/rw/stolen.txt"},
        {"op": "mkdir", "path": "/ro/dir"},
        {"op": "symlink", "target": "ro.txt", "path": "/ro/link"},
        {"op": "read", "path": "/ro/ro.txt"},
    )
    *writes, read = results
    assert all(denied(r) for r in writes), writes
    assert read == {"ok": "read me, never write me"}
    assert os.listdir(hostile.rw) == []
    hostile.assert_contained(before)


def test_writes_to_read_only_assets(hostile: Hostile, before: Snapshot) -> None:
    # The WAT guest, straight through wasi:filesystem: /assets is preopen 0.
    def fs(command: str) -> str:
        value: str = hostile.exec("dev.adv.assets", command)["output"]
        return "err:" + ERRORS[int(value[4:])] if value[4:].isdigit() else value

    assert fs("r0a.txt") == "ok:asset"
    for command in ("w0a.txt", "w0new.txt", "s0a.txt|b", "l0a.txt|b", "r0../../blobs", "w0../x"):
        assert fs(command) == "err:not-permitted", command
    hostile.assert_contained(before)


@pytest.mark.parametrize(
    "command",
    ["r0../canary", "r0../../kami.db", "w0../dev.adv.probe/x", "s0/etc/passwd|x", "w1ro.txt"],
)
def test_wasi_level_escapes(hostile: Hostile, before: Snapshot, command: str) -> None:
    # dev.adv.fs: its sandbox is preopen 0, the read-only /ro preopen 1.
    value = hostile.exec("dev.adv.fs", command)["output"]
    assert value.startswith("err:"), value
    assert ERRORS[int(value[4:])] == "not-permitted"
    hostile.assert_contained(before)


def test_no_filesystem_grant_means_no_files(hostile: Hostile, before: Snapshot) -> None:
    assert hostile.exec("dev.adv.nofs", "r0anything")["output"] == "err:nodir"
    assert hostile.exec("dev.adv.nofs", "w0anything")["output"] == "err:nodir"
    hostile.assert_contained(before)


def test_environment_probing(hostile: Hostile, before: Snapshot) -> None:
    results = hostile.probe(
        {"op": "environ"},
        *({"op": "getenv", "name": name} for name in ("HOME", "PATH", "KAMI_HOME", SECRET_VAR)),
    )
    environ, *probes = results
    # Exactly what was granted: the operator's value, and kamid's own value of OWN_VAR.
    assert environ == {"ok": {"KAMI_ADV_GIVEN": "operator-value", OWN_VAR: OWN_VALUE}}
    assert probes == [{"ok": None}] * 4
    hostile.assert_contained(before)


def test_revoked_grants_are_gone_at_the_next_call(hostile: Hostile, before: Snapshot) -> None:
    hostile.call("tools.revoke", {"tool": "dev.adv.probe", "env": ["KAMI_ADV_GIVEN"]})
    try:
        environ = hostile.probe({"op": "environ"})[0]
        assert environ == {"ok": {OWN_VAR: OWN_VALUE}}
    finally:
        hostile.call(
            "tools.grant", {"tool": "dev.adv.probe", "env": {"KAMI_ADV_GIVEN": "operator-value"}}
        )
    hostile.assert_contained(before)
