"""A guest speaking wasi:filesystem directly tries to leave its mounts, and cannot.

tests/fixtures/security_fs.wat calls open-at, read, write, symlink-at and link-at with
the paths it is given, from the preopen it is told. Everything outside a mount, and
every change to a read-only mount, comes back as a WASI error (``not-permitted``);
nothing outside changes.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest

from kamid.hostapi import HostContext
from kamid.sandbox import Limits, Preopen, SandboxSpec
from tests.conftest import short_tempdir

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from kamid.engine import Engine
    from tests.engine.conftest import Wasm

ERRORS = [
    "access", "would-block", "already", "bad-descriptor", "busy", "deadlock", "quota",
    "exist", "file-too-large", "illegal-byte-sequence", "in-progress", "interrupted",
    "invalid", "io", "is-directory", "loop", "too-many-links", "message-size",
    "name-too-long", "no-device", "no-entry", "no-lock", "insufficient-memory",
    "insufficient-space", "not-directory", "not-empty", "not-recoverable", "unsupported",
    "no-tty", "no-such-device", "overflow", "not-permitted", "pipe", "read-only",
    "invalid-seek", "text-file-busy", "cross-device",
]  # fmt: skip


class Guest:
    def __init__(self, engine: Engine, wasm: Wasm, root: Path) -> None:
        self.engine, self.wasm, self.root = engine, wasm, root
        self.data = root / "sandbox"
        self.assets = root / "assets"
        for d in (self.data, self.assets):
            d.mkdir()
        (self.data / "mine.txt").write_text("inside")
        (self.data / "sub").mkdir()
        (self.assets / "a.txt").write_text("asset")
        (root / "secret.txt").write_text("SECRET")
        self.spec = SandboxSpec(
            preopens=(
                Preopen(host=str(self.data), guest="/data", writable=True),
                Preopen(host=str(self.assets), guest="/assets"),
            )
        )

    def __call__(self, command: str) -> str:
        outcome = self.engine.call(
            self.wasm.sha256,
            self.wasm.path,
            json.dumps(command),
            limits=Limits(timeout_ms=5_000),
            host=HostContext(tool_id="dev.test.fs"),
            sandbox=self.spec,
        )
        value: str = outcome.value
        if value.startswith("err:") and value[4:].isdigit():
            return "err:" + ERRORS[int(value[4:])]
        return value

    def outside(self) -> list[str]:
        return [*sorted(os.listdir(self.root)), (self.root / "secret.txt").read_text()]


@pytest.fixture
def guest(engine: Engine, wasm: Callable[[str], Wasm]) -> Guest:
    return Guest(engine, wasm("security_fs"), short_tempdir("kfs"))


def test_reads_and_writes_inside_the_sandbox_work(guest: Guest) -> None:
    assert guest("r0mine.txt") == "ok:inside"
    assert guest("w0new.txt") == "ok:"
    assert (guest.data / "new.txt").read_text() == "pwned"
    assert guest("r1a.txt") == "ok:asset"


@pytest.mark.parametrize(
    "command",
    [
        "r0../secret.txt",  # .. out of the sandbox
        "r0../../../../etc/passwd",
        "r0/etc/passwd",  # absolute paths are not paths in a WASI directory
        "r0sub/../../secret.txt",
        "w0../escape.txt",
        "w0/tmp/escape.txt",
        "r1../secret.txt",
        "r1../sandbox/mine.txt",  # from one mount into another through ..
    ],
)
def test_traversal_and_absolute_paths_are_denied(guest: Guest, command: str) -> None:
    before = guest.outside()
    assert guest(command) == "err:not-permitted"
    assert guest.outside() == before


def test_symlinks_pointing_out_cannot_be_followed(guest: Guest) -> None:
    before = guest.outside()
    assert guest("s0/etc/passwd|abs") == "err:not-permitted"  # absolute target refused
    assert guest("s0../secret.txt|rel") == "ok:"  # may exist, but leads nowhere:
    assert guest("r0rel") == "err:not-permitted"
    assert guest("w0rel") == "err:not-permitted"
    # One planted from outside (by a careless operator) is no better.
    os.symlink(guest.root / "secret.txt", guest.data / "planted")
    assert guest("r0planted") == "err:not-permitted"
    assert guest.outside() == before


def test_hard_links_cannot_reach_out_or_across_mounts(guest: Guest) -> None:
    before = guest.outside()
    assert guest("l0../secret.txt|stolen") == "err:not-permitted"
    assert guest("l1a.txt|copy") == "err:not-permitted"  # links in the read-only mount
    assert guest("l0mine.txt|twin") == "ok:"  # inside one writable mount: allowed
    assert guest("r0twin") == "ok:inside"
    assert guest.outside() == before


@pytest.mark.parametrize("command", ["w1a.txt", "w1new.txt", "s1x|y", "l1a.txt|b"])
def test_read_only_mounts_refuse_every_change(guest: Guest, command: str) -> None:
    assert guest(command) == "err:not-permitted"
    assert sorted(os.listdir(guest.assets)) == ["a.txt"]
    assert (guest.assets / "a.txt").read_text() == "asset"


def test_no_grant_means_no_directories(guest: Guest) -> None:
    guest.spec = SandboxSpec()
    assert guest("r0mine.txt") == "err:nodir"
