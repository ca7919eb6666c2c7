"""Grant and revoke as pure functions: what they accept, canonicalize and refuse."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from kamid.grants import apply_grant, apply_revoke, canonical_host_path, check_guest_path
from kamid.protocol import (
    FsGrant,
    Grants,
    GrantToolParams,
    InvalidParams,
    NetGrant,
    Paths,
    PolicyDenied,
    RevokeToolParams,
)
from kamid.sandbox import CEILINGS
from tests.conftest import short_tempdir

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def home() -> Path:
    return short_tempdir("kh")


@pytest.fixture
def paths(home: Path) -> Paths:
    return Paths.under(home)


@pytest.fixture
def outside() -> Path:
    return short_tempdir("kout")


def grant(grants: Grants, layout: Paths, **kw: object) -> tuple[Grants, list[str]]:
    params = GrantToolParams(tool="t", **kw)  # type: ignore[arg-type]
    return apply_grant(grants, params, paths=layout, ceilings=CEILINGS)


def test_host_paths_are_canonicalized(paths: Paths, outside: Path) -> None:
    (outside / "real").mkdir()
    os.symlink(outside / "real", outside / "link")
    assert canonical_host_path(str(outside / "link"), paths) == str(outside / "real")
    assert canonical_host_path(f"{outside}/real/../real/.", paths) == str(outside / "real")


@pytest.mark.parametrize("where", ["home", "data", "inside", "parent", "root", "proc"])
def test_kami_home_and_system_dirs_are_refused(
    home: Path, paths: Paths, outside: Path, where: str
) -> None:
    paths.data.mkdir(parents=True)
    (paths.data / "sandboxes" / "other").mkdir(parents=True)
    target = {
        "home": str(home),
        "data": str(paths.data),
        "inside": str(paths.data / "sandboxes" / "other"),
        "parent": str(home.parent),
        "root": "/",
        "proc": "/proc/self",
    }[where]
    with pytest.raises(PolicyDenied) as info:
        canonical_host_path(target, paths)
    assert "never reach" in info.value.message or "whole filesystem" in info.value.message


def test_a_symlink_into_kami_home_is_refused(paths: Paths, outside: Path) -> None:
    paths.data.mkdir(parents=True)
    os.symlink(paths.data, outside / "sneaky")
    with pytest.raises(PolicyDenied, match="is inside"):
        canonical_host_path(str(outside / "sneaky"), paths)


@pytest.mark.parametrize(
    ("raw", "words"),
    [("relative/dir", "absolute"), ("/no/such/dir/at/all", "does not exist")],
)
def test_bad_host_paths(paths: Paths, raw: str, words: str) -> None:
    with pytest.raises(InvalidParams, match=words):
        canonical_host_path(raw, paths)


def test_a_file_is_not_a_directory(paths: Paths, outside: Path) -> None:
    (outside / "f").write_text("x")
    with pytest.raises(InvalidParams, match="not a directory"):
        canonical_host_path(str(outside / "f"), paths)


@pytest.mark.parametrize(
    "guest", ["work", "/", "/work/", "/a/../b", "/a//b", "/./a", "/data", "/data/x", "/assets"]
)
def test_bad_guest_paths(guest: str) -> None:
    with pytest.raises(InvalidParams):
        check_guest_path(guest)


def test_good_guest_path() -> None:
    assert check_guest_path("/work/input") == "/work/input"
    assert check_guest_path("/database") == "/database"  # /data only as a whole component


def test_grant_adds_and_reports_changes(paths: Paths, outside: Path) -> None:
    new, changes = grant(
        Grants(),
        paths,
        fs="sandbox",
        paths=(FsGrant(host_path=str(outside), guest_path="/work", mode="rw"),),
        env={"FOO": "bar", "HOME": None},
        net=(NetGrant(host="api.example.com", methods=("get", "POST")),),
        kv=True,
        invoke=("dev.example.other",),
        limits={"fuel": 20_000_000_000},
    )
    assert new.fs == "sandbox"
    assert new.paths == (FsGrant(host_path=str(outside), guest_path="/work", mode="rw"),)
    assert new.env == {"FOO": "bar", "HOME": None}
    assert new.net == (NetGrant(host="api.example.com", methods=("GET", "POST")),)
    assert (new.kv, new.invoke) == (True, ("dev.example.other",))
    assert new.limits == {"fuel": 20_000_000_000}
    assert len(changes) == 8
    again, none = grant(new, paths, env={"FOO": "bar"}, kv=True)
    assert again == new
    assert none == []


def test_grant_replaces_a_path_at_the_same_guest_path(paths: Paths, outside: Path) -> None:
    other = short_tempdir("kout2")
    first, _ = grant(Grants(), paths, paths=(FsGrant(host_path=str(outside), guest_path="/w"),))
    second, changes = grant(first, paths, paths=(FsGrant(host_path=str(other), guest_path="/w"),))
    assert [g.host_path for g in second.paths] == [str(other)]
    assert "was" in changes[0]


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"env": {"1BAD": "x"}}, InvalidParams),
        ({"env": {"OK": "a\0b"}}, InvalidParams),
        ({"net": (NetGrant(host="", methods=("GET",)),)}, InvalidParams),
        ({"net": (NetGrant(host="a.example.com", methods=("FETCH",)),)}, InvalidParams),
        ({"invoke": ("Not An Id",)}, InvalidParams),
        ({"limits": {"bogus": 1}}, InvalidParams),
        ({"limits": {"fuel": 0}}, InvalidParams),
        ({"limits": {"memory_bytes": CEILINGS.memory_bytes + 1}}, PolicyDenied),
    ],
)
def test_grant_refuses_bad_values_and_changes_nothing(
    paths: Paths, kw: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        grant(Grants(), paths, **kw)


def test_revoke_removes_exactly_what_it_names(paths: Paths, outside: Path) -> None:
    full, _ = grant(
        Grants(),
        paths,
        fs="read-only",
        paths=(FsGrant(host_path=str(outside), guest_path="/work"),),
        env={"A": "1", "B": None},
        net=(NetGrant(host="a.example.com"), NetGrant(host="b.example.com")),
        kv=True,
        invoke=("dev.x.y",),
        limits={"fuel": 5},
    )
    less, changes = apply_revoke(
        full,
        RevokeToolParams(
            tool="t",
            fs=True,
            paths=(str(outside),),
            env=("A",),
            net=("a.example.com",),
            kv=True,
            invoke=("dev.x.y",),
            limits=("fuel",),
        ),
    )
    assert less == Grants(env={"B": None}, net=(NetGrant(host="b.example.com"),))
    assert len(changes) == 7
    nothing, lines = apply_revoke(full, RevokeToolParams(tool="t", all=True))
    assert nothing == Grants()
    assert lines


@pytest.mark.parametrize(
    "kw",
    [
        {"env": ("NOPE",)},
        {"net": ("nope.example.com",)},
        {"paths": ("/nope",)},
        {"fs": True},
        {"kv": True},
        {"invoke": ("dev.no.pe",)},
        {"limits": ("fuel",)},
    ],
)
def test_revoking_what_was_not_granted_is_an_error(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidParams, match="not granted"):
        apply_revoke(Grants(), RevokeToolParams(tool="t", **kw))  # type: ignore[arg-type]
