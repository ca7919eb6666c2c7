"""Hostile registries and artifacts, served over real HTTP: each is refused with a clear
error, and the store is exactly as it was (tools, grants, origins, blobs)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import zipfile
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from kamictl import _keys, package
from kamid.protocol import (
    IntegrityError,
    InvalidTool,
    KamiError,
    NotFound,
    PolicyDenied,
    parse_manifest,
    read_package,
    write_package,
)
from tests.conftest import Daemon, make_tool, short_tempdir, wat_component
from tests.registry.conftest import RegistryServer, publish, snapshot

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from kamictl._keys import KeyPair


@pytest.fixture(scope="module")
def hostile_daemon(server: RegistryServer, http_root: Path, publisher: KeyPair) -> Iterator[Daemon]:
    """One daemon with dev.test.echo 1.0.0 installed from a good registry."""
    home = short_tempdir()
    daemon = Daemon(home).start()
    publish(http_root / "good", publisher, "1.0.0")
    daemon.call("registry.add", {"name": "good", "url": server.url("good/index.json")})
    daemon.call("tools.install", {"ref": "dev.test.echo"})
    yield daemon
    daemon.stop()
    shutil.rmtree(home, ignore_errors=True)


def registry(
    daemon: Daemon, server: RegistryServer, http_root: Path, name: str, key: KeyPair | None
) -> Path:
    """A registry offering dev.test.echo 1.1.0, added to the daemon; returns its directory."""
    reg = http_root / name
    publish(reg, key, "1.1.0")
    daemon.call("registry.add", {"name": name, "url": server.url(f"{name}/index.json")})
    return reg


def edit_index(reg: Path, change: Any) -> None:
    index = json.loads((reg / "index.json").read_text())
    change(index)
    (reg / "index.json").write_text(json.dumps(index))


def entry(index: dict[str, Any], version: str = "1.1.0") -> dict[str, Any]:
    result: dict[str, Any] = index["tools"]["dev.test.echo"]["versions"][version]
    return result


def refused(daemon: Daemon, params: dict[str, Any], error: type[KamiError], words: str) -> str:
    before = snapshot(daemon)
    with pytest.raises(error) as info:
        daemon.call("tools.install", params)
    assert words in info.value.message, info.value.message
    assert snapshot(daemon) == before, "a refused install changed the store"
    return info.value.message


def test_tampered_artifact(
    hostile_daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = registry(hostile_daemon, server, http_root, "tampered", publisher)
    artifact = next((reg / "artifacts").rglob("*.kami"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    message = refused(
        hostile_daemon,
        {"ref": "dev.test.echo@1.1.0", "registry": "tampered"},
        IntegrityError,
        "but the index says",
    )
    assert "tampered with or replaced" in message


@pytest.mark.parametrize(
    ("signed", "message"),
    [
        # Signed: the signature covers tool.toml, so the listed one cannot pass for it.
        (True, "tool.toml changed since it was signed"),
        # Unsigned: the artifact's own tool.toml must still be the one the index lists.
        (False, "its tool.toml is not the manifest the index lists"),
    ],
    ids=["signed", "unsigned"],
)
def test_swapped_manifest_in_the_index(
    hostile_daemon: Daemon,
    server: RegistryServer,
    http_root: Path,
    publisher: KeyPair,
    signed: bool,
    message: str,
) -> None:
    """The index lists a manifest asking for less (or more) than the artifact's."""
    name = "swapped" if signed else "swapped-unsigned"
    reg = registry(hostile_daemon, server, http_root, name, publisher if signed else None)
    edit_index(
        reg,
        lambda ix: entry(ix).update(
            manifest=entry(ix)["manifest"].replace("A test tool.", "A harmless tool.")
        ),
    )
    refused(
        hostile_daemon, {"ref": "dev.test.echo@1.1.0", "registry": name}, IntegrityError, message
    )


def test_valid_artifact_with_a_swapped_manifest(
    hostile_daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    """The registry serves a repacked artifact asking for the network, with the index's
    hashes updated to match: only the signature can tell, and it does."""
    reg = registry(hostile_daemon, server, http_root, "repacked", publisher)
    artifact = next((reg / "artifacts").rglob("*.kami"))
    original = read_package(artifact.read_bytes(), source="a")
    wider = original.manifest_text + b'[security]\nnet = [{ host = "evil.example.org" }]\n'
    forged = attrs.evolve(
        original, manifest_text=wider, manifest=parse_manifest(wider.decode(), source="x")
    )
    data = write_package(forged)
    artifact.write_bytes(data)

    def update(ix: dict[str, Any]) -> None:
        entry(ix).update(
            manifest=wider.decode(), sha256=hashlib.sha256(data).hexdigest(), size=len(data)
        )

    edit_index(reg, update)
    refused(
        hostile_daemon,
        {"ref": "dev.test.echo@1.1.0", "registry": "repacked", "approve": True},
        IntegrityError,
        "does not match: tool.toml changed since it was signed",
    )


def test_entry_pointing_at_another_tool(
    hostile_daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = registry(hostile_daemon, server, http_root, "other-id", publisher)

    def alias(ix: dict[str, Any]) -> None:
        ix["tools"]["dev.test.victim"] = copy.deepcopy(ix["tools"]["dev.test.echo"])

    edit_index(reg, alias)
    refused(
        hostile_daemon,
        {"ref": "dev.test.victim", "registry": "other-id"},
        IntegrityError,
        "the entry's manifest is for dev.test.echo, not dev.test.victim",
    )


def test_downgrade_attempts(
    hostile_daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = http_root / "old"
    publish(reg, publisher, "0.9.0")
    hostile_daemon.call("registry.add", {"name": "old", "url": server.url("old/index.json")})
    refused(
        hostile_daemon,
        {"ref": "dev.test.echo", "registry": "old"},
        PolicyDenied,
        "would downgrade it from 1.0.0",
    )
    # An old (validly signed) artifact relabelled as a new version.

    def relabel(ix: dict[str, Any]) -> None:
        versions = ix["tools"]["dev.test.echo"]["versions"]
        versions["2.0.0"] = versions.pop("0.9.0")

    edit_index(reg, relabel)
    refused(
        hostile_daemon,
        {"ref": "dev.test.echo@2.0.0", "registry": "old"},
        IntegrityError,
        "manifest says version 0.9.0",
    )
    # Updates follow the tool's own registry and never go down.
    update = hostile_daemon.call("tools.update", {"tool": "echo"})["updates"][0]
    assert update["status"] == "current"


def test_truncated_download(
    hostile_daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = registry(hostile_daemon, server, http_root, "truncated", publisher)
    artifact = next((reg / "artifacts").rglob("*.kami"))
    server.truncate.add("/" + artifact.relative_to(http_root).as_posix())
    refused(
        hostile_daemon,
        {"ref": "dev.test.echo@1.1.0", "registry": "truncated"},
        IntegrityError,
        "was cut short",
    )


def test_index_that_is_not_json(
    hostile_daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = registry(hostile_daemon, server, http_root, "garbage", publisher)
    (reg / "index.json").write_text("<html>502 Bad Gateway</html>")
    refused(
        hostile_daemon,
        {"ref": "dev.test.echo", "registry": "garbage"},
        IntegrityError,
        "the index is not JSON",
    )
    # Nor is such a registry added in the first place.
    (http_root / "garbage2").mkdir()
    (http_root / "garbage2" / "index.json").write_text('{"tools": []}')
    before = hostile_daemon.call("registry.list")
    with pytest.raises(IntegrityError, match="not a KAMI registry index"):
        hostile_daemon.call(
            "registry.add", {"name": "garbage2", "url": server.url("garbage2/index.json")}
        )
    with pytest.raises(NotFound, match="HTTP 404"):
        hostile_daemon.call("registry.add", {"name": "gone", "url": server.url("nope/index.json")})
    assert hostile_daemon.call("registry.list") == before


def test_malformed_entries_and_remote_file_urls(
    hostile_daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = registry(hostile_daemon, server, http_root, "malformed", publisher)
    edit_index(reg, lambda ix: entry(ix).update(sha256="not-a-hash"))
    refused(
        hostile_daemon,
        {"ref": "dev.test.echo", "registry": "malformed"},
        IntegrityError,
        "sha256: must be 64 lower-case hex digits",
    )
    # A remote index must not make the daemon read its own files.
    edit_index(reg, lambda ix: entry(ix).update(sha256="0" * 64, artifact="file:///etc/passwd"))
    refused(
        hostile_daemon,
        {"ref": "dev.test.echo", "registry": "malformed"},
        IntegrityError,
        "a remote index may not point at file:// artifacts",
    )


def test_hostile_packages_by_url(
    hostile_daemon: Daemon, server: RegistryServer, http_root: Path, tmp_path: Path
) -> None:
    (http_root / "bad").mkdir(exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("tool.toml", b"x")
        z.writestr("../../escape.sh", b"#!/bin/sh\n")
    (http_root / "bad" / "traversal.kami").write_bytes(buffer.getvalue())
    refused(
        hostile_daemon,
        {"package": server.url("bad/traversal.kami")},
        InvalidTool,
        "'..'",
    )
    (http_root / "bad" / "notzip.kami").write_bytes(b"MZ\x90\x00 not a zip")
    refused(hostile_daemon, {"package": server.url("bad/notzip.kami")}, InvalidTool, "not a zip")
    # A package whose tool.sig belongs to other content.
    tool = make_tool(tmp_path, wat_component("echo.wat"), version="1.5.0")
    key_pkg, _ = package.pack(tool)
    other = make_tool(tmp_path / "o", wat_component("err.wat"), version="1.5.0")
    pair, _ = _keys.generate("t", directory=tmp_path / "k")
    signed_other, _ = package.pack(other, key=pair)
    lying = attrs.evolve(key_pkg, signature=signed_other.signature)
    (http_root / "bad" / "lying.kami").write_bytes(write_package(lying))
    refused(
        hostile_daemon,
        {"package": server.url("bad/lying.kami")},
        IntegrityError,
        "the component changed since it was signed",
    )
    assert not list((hostile_daemon.home / "cache" / "staging").glob("*"))
