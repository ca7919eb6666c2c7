"""What a tool signature covers, and the ``tool.sig`` file that carries one.

Shared by the publisher's side (``kamictl sign``, which holds the private key) and the
daemon (which verifies); the Ed25519 arithmetic itself lives with each of them (PyNaCl),
this module only defines the bytes. The signed payload is six ASCII lines::

    kami-signature-v1
    tool dev.kami.echo
    version 0.1.0
    manifest-sha256 <sha256 of the exact bytes of tool.toml>
    component-sha256 <sha256 of the component (.wasm)>
    assets-sha256 <digest of the assets/ directory, or "none">

each ending in ``\\n``. Hashes are lower-case hex. Signing the manifest's exact bytes
(rather than a re-serialization) means there is nothing to canonicalize: what the daemon
parses, shows for approval and stores is what was signed, so changing any requested
capability, the id or the version changes the signature.

The assets digest is the sha256 of, for every regular file under ``assets/`` in the
byte order of its ``/``-separated relative path: the path, a NUL byte, the file's sha256
in hex, and a NUL byte. No files (or no directory) is ``none``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import InvalidTool

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = [
    "ASSETS_DIR",
    "PAYLOAD_HEADER",
    "SIGNATURE_FILE",
    "SignedContent",
    "ToolSignature",
    "assets_digest",
    "decode_public_key",
    "digest_assets",
    "encode_public_key",
    "key_id_of",
]

#: The signature's file name, next to tool.toml in a tool directory and in a package.
SIGNATURE_FILE = "tool.sig"
#: The directory next to tool.toml whose files a tool gets at /assets.
ASSETS_DIR = "assets"
PAYLOAD_HEADER = "kami-signature-v1"
_KEY_PREFIX = "ed25519:"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def key_id_of(public_key: bytes) -> str:
    """A key's short id: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def encode_public_key(public_key: bytes) -> str:
    """``ed25519:`` and the standard base64 of the 32 raw bytes."""
    return _KEY_PREFIX + base64.b64encode(public_key).decode("ascii")


def decode_public_key(text: str) -> bytes:
    """The 32 raw bytes of an ``ed25519:BASE64`` public key (the prefix is optional).

    Raises:
        ValueError: not a base64-encoded 32-byte key; the message shows the expected form.
    """
    body = text.strip().removeprefix(_KEY_PREFIX) if isinstance(text, str) else ""
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            f"{text!r} is not an Ed25519 public key; expected ed25519: followed by 44 base64 "
            "characters, as printed by `kamictl keygen`"
        )
    return raw


@attrs.frozen(kw_only=True)
class SignedContent:
    """Everything a signature vouches for."""

    tool: str
    version: str
    manifest_sha256: str
    component_sha256: str
    assets_sha256: str | None = None

    def payload(self) -> bytes:
        """The exact bytes that are signed (see the module docstring)."""
        lines = [
            PAYLOAD_HEADER,
            f"tool {self.tool}",
            f"version {self.version}",
            f"manifest-sha256 {self.manifest_sha256}",
            f"component-sha256 {self.component_sha256}",
            f"assets-sha256 {self.assets_sha256 or 'none'}",
        ]
        text = "".join(line + "\n" for line in lines)
        if any(c in "\r\n" for line in lines for c in line):
            raise ValueError("a signed field contains a line break")
        return text.encode("ascii")

    def differences(self, other: SignedContent) -> list[str]:
        """How ``other`` (what is there now) differs from this (what was signed)."""
        out = []
        if (self.tool, self.version) != (other.tool, other.version):
            out.append(
                f"it was signed as {self.tool} {self.version}, but this is "
                f"{other.tool} {other.version}"
            )
        for field, what in (
            ("manifest_sha256", "tool.toml"),
            ("component_sha256", "the component"),
            ("assets_sha256", "the assets"),
        ):
            signed, now = getattr(self, field), getattr(other, field)
            if signed != now:
                out.append(
                    f"{what} changed since it was signed (signed {signed or 'none'}, "
                    f"now {now or 'none'})"
                )
        return out


@attrs.frozen(kw_only=True)
class ToolSignature:
    """The contents of ``tool.sig``: the signature, the key, and what it claims to cover.

    The claimed :attr:`content` only explains a failure; a verifier always rebuilds the
    payload from the bytes it actually has.
    """

    content: SignedContent
    key_id: str
    #: ``ed25519:BASE64``.
    public_key: str
    #: Standard base64 of the 64-byte Ed25519 signature.
    signature: str

    def raw_public_key(self) -> bytes:
        return decode_public_key(self.public_key)

    def raw_signature(self) -> bytes:
        return base64.b64decode(self.signature, validate=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "kami_signature": 1,
            "algorithm": "ed25519",
            "key_id": self.key_id,
            "public_key": self.public_key,
            "signature": self.signature,
            "tool": self.content.tool,
            "version": self.content.version,
            "manifest_sha256": self.content.manifest_sha256,
            "component_sha256": self.content.component_sha256,
            "assets_sha256": self.content.assets_sha256,
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> ToolSignature:
        """Reads a parsed ``tool.sig`` (or an index entry's ``signature``).

        Raises:
            InvalidTool: a field is missing or malformed; the message names it.
        """

        def bad(message: str) -> InvalidTool:
            return InvalidTool(
                f"{source}: {message}; re-sign the tool with `kamictl sign`",
                data={"file": source},
            )

        if not isinstance(data, dict):
            raise bad("a signature must be a JSON object")
        if data.get("kami_signature") != 1 or data.get("algorithm") != "ed25519":
            raise bad('expected "kami_signature": 1 and "algorithm": "ed25519"')

        def text(key: str, pattern: re.Pattern[str] | None = None) -> str:
            value = data.get(key)
            if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
                raise bad(f"{key} is missing or malformed (got {value!r})")
            return value

        assets = data.get("assets_sha256")
        if assets is not None and not (isinstance(assets, str) and _HEX64.match(assets)):
            raise bad(f"assets_sha256 must be null or 64 hex digits (got {assets!r})")
        sig = cls(
            content=SignedContent(
                tool=text("tool"),
                version=text("version"),
                manifest_sha256=text("manifest_sha256", _HEX64),
                component_sha256=text("component_sha256", _HEX64),
                assets_sha256=assets,
            ),
            key_id=text("key_id", _KEY_ID),
            public_key=text("public_key"),
            signature=text("signature"),
        )
        try:
            raw_key = sig.raw_public_key()
            raw_sig = sig.raw_signature()
        except (ValueError, binascii.Error) as exc:
            raise bad(f"public_key or signature is not valid base64: {exc}") from exc
        if len(raw_sig) != 64:
            raise bad(f"signature must be 64 bytes (got {len(raw_sig)})")
        if key_id_of(raw_key) != sig.key_id:
            raise bad(f"key_id {sig.key_id} does not belong to public_key {sig.public_key}")
        return sig

    @classmethod
    def loads(cls, raw: bytes, *, source: str) -> ToolSignature:
        """Parses the bytes of a ``tool.sig`` file.

        Raises:
            InvalidTool: not JSON, or not a signature.
        """
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidTool(
                f"{source}: not valid JSON ({exc}); re-sign the tool with `kamictl sign`",
                data={"file": source},
            ) from exc
        return cls.from_json(data, source=source)


def digest_assets(files: Iterable[tuple[str, str]]) -> str | None:
    """The assets digest of ``(relative path, sha256 hex of the content)`` pairs.

    Returns:
        The digest, or None when there are no files.
    """
    entries = sorted((path.encode("utf-8"), sha) for path, sha in files)
    if not entries:
        return None
    digest = hashlib.sha256()
    for path, sha in entries:
        digest.update(path + b"\0" + sha.encode("ascii") + b"\0")
    return digest.hexdigest()


def assets_digest(tool_dir: Path) -> str | None:
    """The assets digest of ``tool_dir/assets`` (None when it is missing or has no files).

    Raises:
        InvalidTool: it holds a symlink or anything but files and directories.
    """
    root = tool_dir / ASSETS_DIR
    if not root.is_dir() or root.is_symlink():
        return None
    files: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise InvalidTool(
                    f"{path}: assets may hold only plain files and directories (this is "
                    "a symlink or a special file); replace it with a copy",
                    data={"file": path},
                )
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, "rb") as f:
                files.append((rel, hashlib.file_digest(f, "sha256").hexdigest()))
    return digest_assets(files)
