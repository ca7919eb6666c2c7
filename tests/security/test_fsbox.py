"""Sandbox directories, the quota measure, installed assets and a call's WASI plan."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import pytest

from kamid.fsbox import MIN_ENTRY_BYTES, FsBox, measure
from kamid.protocol import FsGrant, Grants, InvalidTool, LimitExceeded, Paths, PolicyDenied
from kamid.sandbox import Preopen
from tests.conftest import short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def box() -> Iterator[FsBox]:
    home = short_tempdir("kb")
    yield FsBox(Paths.under(home))
    shutil.rmtree(home, ignore_errors=True)


def test_measure_counts_sizes_once_and_never_follows_links(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "big", tmp_path / "big-again")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "empty").touch()
    # A link pointing at something huge outside counts as the link itself.
    os.symlink("/usr", tmp_path / "out")
    total = measure(tmp_path)
    assert 100_000 <= total <= 100_000 + 4 * 8192
    assert total >= 100_000 + 3 * MIN_ENTRY_BYTES  # d, empty and the link cost something


def test_measure_stops_early(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_bytes(b"x" * 10_000)
    assert measure(tmp_path, stop_above=20_000) < measure(tmp_path)


def test_env_grants_use_the_operators_value_or_kamids_own(box: FsBox) -> None:
    grants = Grants(env={"SET": "operator", "OWN": None, "MISSING": None})
    plan = box.plan("dev.t.x", grants, quota=1, assets_digest=None, environ={"OWN": "mine"})
    assert plan.sandbox.env == (("OWN", "mine"), ("SET", "operator"))
    assert plan.sandbox.preopens == ()
    assert any("MISSING" in note for note in plan.notes)


def test_sandbox_is_writable_until_over_quota(box: FsBox) -> None:
    grants = Grants(fs="sandbox")
    plan = box.plan("dev.t.x", grants, quota=50_000, assets_digest=None)
    folder = box.sandbox_dir("dev.t.x")
    assert plan.sandbox.preopens == (Preopen(host=str(folder), guest="/data", writable=True),)
    box.check_after("dev.t.x", plan)  # empty: fine
    (folder / "fill").write_bytes(b"x" * 60_000)
    with pytest.raises(LimitExceeded) as info:
        box.check_after("dev.t.x", plan)
    assert info.value.data["limit"] == "sandbox_bytes"
    assert "kamictl grant" in info.value.message
    again = box.plan("dev.t.x", grants, quota=50_000, assets_digest=None)
    assert again.sandbox.preopens[0].writable is False
    assert again.check_dir is None
    assert "read-only" in again.notes[0]
    assert box.purge("dev.t.x")
    assert not folder.exists()
    assert not box.purge("dev.t.x")


def test_purge_does_not_follow_links_out(box: FsBox) -> None:
    outside = short_tempdir("kvictim")
    (outside / "keep").write_text("precious")
    folder = box.sandbox_dir("dev.t.x")
    folder.mkdir(parents=True)
    os.symlink(outside, folder / "escape")
    assert box.purge("dev.t.x")
    assert (outside / "keep").read_text() == "precious"


def test_assets_are_copied_content_addressed_and_read_only(box: FsBox, tmp_path: Path) -> None:
    assert box.import_assets(tmp_path) is None
    (tmp_path / "assets" / "sub").mkdir(parents=True)
    (tmp_path / "assets" / "a.txt").write_text("alpha")
    (tmp_path / "assets" / "sub" / "b.txt").write_text("beta")
    info = box.import_assets(tmp_path)
    assert info is not None
    assert (info.files, info.size) == (2, 9)
    copy = box.assets_dir(info.digest)
    assert (copy / "sub" / "b.txt").read_text() == "beta"
    assert oct((copy / "a.txt").stat().st_mode & 0o777) == "0o400"
    assert box.import_assets(tmp_path) == info  # same content, same digest, no new copy
    plan = box.plan("dev.t.x", Grants(fs="read-only"), quota=1, assets_digest=info.digest)
    assert plan.sandbox.preopens == (Preopen(host=str(copy), guest="/assets", writable=False),)
    box.collect_assets(keep=set())
    assert not copy.exists()


@pytest.mark.parametrize("where", ["inside", "itself"])
def test_assets_with_symlinks_are_refused(box: FsBox, tmp_path: Path, where: str) -> None:
    secret = short_tempdir("ksecret")
    (secret / "id_rsa").write_text("PRIVATE")
    if where == "itself":
        os.symlink(secret, tmp_path / "assets")
    else:
        (tmp_path / "assets").mkdir()
        os.symlink(secret / "id_rsa", tmp_path / "assets" / "key")
    with pytest.raises(InvalidTool, match="symlink"):
        box.import_assets(tmp_path)
    assert not box.assets.exists() or not any(box.assets.iterdir())


def test_a_path_grant_that_changed_is_refused(box: FsBox) -> None:
    target = short_tempdir("kt")
    grants = Grants(paths=(FsGrant(host_path=str(target), guest_path="/w", mode="rw"),))
    plan = box.plan("dev.t.x", grants, quota=1, assets_digest=None)
    assert plan.sandbox.preopens == (Preopen(host=str(target), guest="/w", writable=True),)
    os.rmdir(target)
    os.symlink("/etc", target)
    with pytest.raises(PolicyDenied, match="no longer is the directory"):
        box.plan("dev.t.x", grants, quota=1, assets_digest=None)
