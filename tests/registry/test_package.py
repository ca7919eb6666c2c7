"""The .kami format, what a signature covers, and publisher keys; no daemon needed."""

from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
from typing import TYPE_CHECKING

import attrs
import pytest

from kamictl import _keys, package
from kamid.protocol import (
    IntegrityError,
    InvalidParams,
    InvalidTool,
    PolicyDenied,
    SignedContent,
    read_package,
    write_package,
)
from kamid.signing import TrustStore, check_signature
from kamid.store import KeyRow
from tests.conftest import make_tool, wat_component

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def tool_dir(tmp_path: Path) -> Path:
    tool = make_tool(tmp_path, wat_component("echo.wat"), extra='[security]\nfs = "read-only"\n')
    (tool / "assets" / "sub").mkdir(parents=True)
    (tool / "assets" / "a.txt").write_text("alpha")
    (tool / "assets" / "sub" / "b.txt").write_text("beta")
    return tool


@pytest.fixture
def key(tmp_path: Path) -> _keys.KeyPair:
    return _keys.generate("k", directory=tmp_path / "keys")[0]


def zip_of(entries: list[tuple[str, bytes]], *, mode: int = stat.S_IFREG | 0o644) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of one test
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            z.writestr(info, data)
    return buffer.getvalue()


def test_pack_and_read_round_trip_deterministically(tool_dir: Path, key: _keys.KeyPair) -> None:
    pkg, data = package.pack(tool_dir, key=key)
    assert package.pack(tool_dir, key=key)[1] == data  # same inputs, same bytes
    back = read_package(data, source="t.kami")
    assert back.manifest == pkg.manifest
    assert back.manifest_text == (tool_dir / "tool.toml").read_bytes()
    assert back.component == (tool_dir / "tool.wasm").read_bytes()
    assert back.assets == (("a.txt", b"alpha"), ("sub/b.txt", b"beta"))
    assert back.signature == pkg.signature
    assert back.content() == pkg.content()
    assert back.content().assets_sha256 is not None
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names == ["tool.toml", "tool.sig", "tool.wasm", "assets/a.txt", "assets/sub/b.txt"]


def test_signed_payload_is_the_documented_text(tool_dir: Path) -> None:
    content = SignedContent(
        tool="dev.test.echo",
        version="0.1.0",
        manifest_sha256="a" * 64,
        component_sha256="b" * 64,
    )
    assert content.payload() == (
        b"kami-signature-v1\ntool dev.test.echo\nversion 0.1.0\n"
        + b"manifest-sha256 "
        + b"a" * 64
        + b"\ncomponent-sha256 "
        + b"b" * 64
        + b"\nassets-sha256 none\n"
    )


def test_signature_covers_manifest_component_and_assets(tool_dir: Path, key: _keys.KeyPair) -> None:
    pkg, _ = package.pack(tool_dir, key=key)
    assert pkg.signature is not None
    check_signature(pkg.signature, pkg.content(), source="t")  # valid as made
    changes = {
        "manifest_sha256": "tool.toml changed",
        "component_sha256": "the component changed",
        "assets_sha256": "the assets changed",
        "version": "it was signed as dev.test.echo 0.1.0",
    }
    for field, words in changes.items():
        other = attrs.evolve(pkg.content(), **{field: "f" * 64 if "sha" in field else "9.9.9"})
        with pytest.raises(IntegrityError, match=words):
            check_signature(pkg.signature, other, source="t")


def test_a_capability_change_breaks_the_signature(tool_dir: Path, key: _keys.KeyPair) -> None:
    package.sign_path(tool_dir, key)
    manifest = tool_dir / "tool.toml"
    manifest.write_text(manifest.read_text() + 'net = [{ host = "evil.example.org" }]\n')
    with pytest.raises(InvalidTool, match="stale"):
        package.pack(tool_dir)
    changed = package.read_tool_dir(tool_dir)
    assert changed.signature is not None
    with pytest.raises(IntegrityError, match=r"tool\.toml changed since it was signed"):
        check_signature(changed.signature, changed.content(), source="t")


def test_signing_a_package_rewrites_it(tool_dir: Path, key: _keys.KeyPair, tmp_path: Path) -> None:
    _, data = package.pack(tool_dir)
    path = tmp_path / "t.kami"
    path.write_bytes(data)
    assert read_package(data, source="t").signature is None
    package.sign_path(path, key)
    signed = read_package(path.read_bytes(), source="t")
    assert signed.signature is not None
    assert signed.signature.key_id == key.key_id
    check_signature(signed.signature, signed.content(), source="t")


COMPONENT = b"\0asm\x0d\x00\x01\x00"
MANIFEST = (
    b'[tool]\nid = "dev.t.t"\nname = "t"\nversion = "1.0.0"\ndescription = "d"\nwasm = "t.wasm"\n'
)


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([("../evil", b"x")], "'..'"),
        ([("assets/../../evil", b"x")], "'..'"),
        ([("/etc/passwd", b"x")], "absolute"),
        ([("C:/x", b"x")], "absolute"),
        ([("a\\b", b"x")], "backslash"),
        ([("tool.toml", MANIFEST), ("t.wasm", COMPONENT), ("x.py", b"x")], "unexpected entry"),
        ([("tool.toml", MANIFEST), ("tool.toml", MANIFEST)], "appears twice"),
        ([("t.wasm", b"\0asm\x0d\x00\x01\x00")], "no tool.toml"),
        ([("tool.toml", MANIFEST)], "not in the package"),
        ([("tool.toml", MANIFEST), ("t.wasm", b"\0asm\x01\x00\x00\x00")], "core WebAssembly"),
        ([("tool.toml", MANIFEST.replace(b"t.wasm", b"../t.wasm"))], "inside the tool directory"),
        (
            [("tool.toml", MANIFEST), ("t.wasm", b"\0asm\x0d\x00\x01\x00"), ("tool.sig", b"{")],
            "not valid JSON",
        ),
    ],
)
def test_hostile_archives_are_refused(entries: list[tuple[str, bytes]], words: str) -> None:
    with pytest.raises(InvalidTool, match=words):
        read_package(zip_of(entries), source="bad.kami")


def test_symlinks_and_special_files_are_refused() -> None:
    link = zip_of(
        [("tool.toml", MANIFEST), ("assets/x", b"/etc/passwd")], mode=stat.S_IFLNK | 0o777
    )
    with pytest.raises(InvalidTool, match="symlink"):
        read_package(link, source="bad.kami")
    fifo = zip_of([("tool.toml", MANIFEST)], mode=stat.S_IFIFO | 0o644)
    with pytest.raises(InvalidTool, match="special file"):
        read_package(fifo, source="bad.kami")


def test_oversize_and_not_a_zip() -> None:
    big = zip_of([("tool.toml", MANIFEST), ("t.wasm", b"\0asm\x0d\x00\x01\x00" + b"\0" * 5000)])
    with pytest.raises(InvalidTool, match="more than 1000 bytes"):
        read_package(big, source="big.kami", max_bytes=1000)
    with pytest.raises(InvalidTool, match="not a zip archive"):
        read_package(b"{}", source="x.kami")


def test_encrypted_entries_are_refused() -> None:
    data = bytearray(zip_of([("tool.toml", MANIFEST)]))
    # Set the "encrypted" bit in the local and the central header of the only entry.
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.index(sig) + (6 if sig == b"PK\x03\x04" else 8)
        data[at] |= 1
    with pytest.raises(InvalidTool, match="encrypted"):
        read_package(bytes(data), source="x.kami")


def test_write_package_refuses_nothing_it_reads_back(tool_dir: Path) -> None:
    pkg = package.read_tool_dir(tool_dir)
    assert read_package(write_package(pkg), source="t").content() == pkg.content()


def test_keys_are_private_and_never_overwritten(tmp_path: Path) -> None:
    pair, path = _keys.generate("mine", directory=tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "mine.pub").read_text().strip() == pair.public_text
    with pytest.raises(InvalidParams, match="exists already"):
        _keys.generate("mine", directory=tmp_path)
    assert _keys.load(str(path)).public_key == pair.public_key
    os.chmod(path, 0o644)
    with pytest.raises(InvalidParams, match="chmod 600"):
        _keys.load(str(path))
    with pytest.raises(InvalidParams, match="key name"):
        _keys.generate("../x", directory=tmp_path)


def test_trust_policy(tool_dir: Path, key: _keys.KeyPair, tmp_path: Path) -> None:
    pkg, _ = package.pack(tool_dir, key=key)
    unsigned, _ = package.pack(make_tool(tmp_path / "u", wat_component("echo.wat")))
    empty = TrustStore([])
    assert empty.judge(unsigned.signature, unsigned.content(), source="s", require=False) is None
    with pytest.raises(PolicyDenied, match="not signed"):
        empty.judge(unsigned.signature, unsigned.content(), source="s", require=True)
    signer = empty.judge(pkg.signature, pkg.content(), source="s", require=False)
    assert signer is not None
    assert signer.trusted is False
    with pytest.raises(PolicyDenied, match="not in the trust store"):
        empty.judge(pkg.signature, pkg.content(), source="s", require=True)
    trusted = TrustStore(
        [KeyRow(key_id=key.key_id, public_key=key.public_text, name="k", added_at=0)]
    )
    signer = trusted.judge(pkg.signature, pkg.content(), source="s", require=True)
    assert signer is not None
    assert signer.trusted
    assert signer.name == "k"
    impostor = TrustStore(
        [KeyRow(key_id=key.key_id, public_key="ed25519:" + "A" * 43 + "=", name="x", added_at=0)]
    )
    with pytest.raises(PolicyDenied, match="public key does not"):
        impostor.judge(pkg.signature, pkg.content(), source="s", require=False)
