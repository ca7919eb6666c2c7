"""Publisher keys: Ed25519 key pairs kept by ``kamictl`` (never by the daemon).

``kamictl keygen --name NAME`` writes ``NAME.key`` (the private seed, mode 0600) and
``NAME.pub`` into the keys directory: ``$KAMI_HOME/keys`` when ``KAMI_HOME`` is set, else
``$XDG_CONFIG_HOME/kami/keys`` (``~/.config/kami/keys``). A private key file that others can
read is refused, the way ssh refuses one.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from pathlib import Path

import attrs

from kamid.protocol import (
    InvalidParams,
    Paths,
    SignedContent,
    ToolSignature,
    encode_public_key,
    key_id_of,
)

__all__ = ["KeyPair", "generate", "keys_dir", "load", "sign"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_KEY = "default"


@attrs.frozen
class KeyPair:
    name: str
    seed: bytes = attrs.field(repr=False)
    public_key: bytes

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    @property
    def public_text(self) -> str:
        return encode_public_key(self.public_key)


def keys_dir() -> Path:
    """Where keys live: beside kamid.toml (``$KAMI_HOME/keys`` or ``~/.config/kami/keys``)."""
    return Paths.from_env().config_file.parent / "keys"


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidParams(
            f"key name {name!r}: use letters, digits, '.', '_' and '-' (up to 64), like "
            "my-publisher"
        )
    return name


def generate(name: str = DEFAULT_KEY, *, directory: Path | None = None) -> tuple[KeyPair, Path]:
    """Creates a new key pair and writes it; refuses to overwrite an existing key.

    Raises:
        InvalidParams: a bad name, or a key of that name exists already.
    """
    import nacl.signing

    _check_name(name)
    directory = directory or keys_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{name}.key"
    signing = nacl.signing.SigningKey.generate()
    pair = KeyPair(name=name, seed=bytes(signing), public_key=bytes(signing.verify_key))
    body = {
        "kami_key": 1,
        "algorithm": "ed25519",
        "name": name,
        "key_id": pair.key_id,
        "public_key": pair.public_text,
        "seed": base64.b64encode(pair.seed).decode("ascii"),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise InvalidParams(
            f"{path} exists already; choose another --name (keys are never overwritten)"
        ) from exc
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(body, indent=2) + "\n")
    (directory / f"{name}.pub").write_text(pair.public_text + "\n", encoding="utf-8")
    return pair, path


def load(name_or_path: str = DEFAULT_KEY) -> KeyPair:
    """Reads a private key by name (in :func:`keys_dir`) or by path.

    Raises:
        InvalidParams: missing, readable by others, or not a KAMI key file.
    """
    candidate = Path(name_or_path).expanduser()
    if "/" in name_or_path or name_or_path.endswith(".key"):
        path = candidate
    else:
        path = keys_dir() / f"{_check_name(name_or_path)}.key"
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidParams(
            f"no key {path}; create one with `kamictl keygen --name {path.stem}`"
        ) from exc
    except OSError as exc:
        raise InvalidParams(f"{path}: cannot read: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidParams(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); a private key "
            f"must be private: chmod 600 {path}"
        )
    try:
        body = json.loads(text)
        seed = base64.b64decode(body["seed"], validate=True)
        if body.get("kami_key") != 1 or len(seed) != 32:
            raise ValueError("not a KAMI Ed25519 key")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidParams(f"{path} is not a key written by `kamictl keygen` ({exc})") from exc
    import nacl.signing

    signing = nacl.signing.SigningKey(seed)
    return KeyPair(name=path.stem, seed=seed, public_key=bytes(signing.verify_key))


def sign(pair: KeyPair, content: SignedContent) -> ToolSignature:
    """Signs ``content`` (its :meth:`~kamid.protocol.SignedContent.payload`)."""
    import nacl.signing

    signed = nacl.signing.SigningKey(pair.seed).sign(content.payload())
    return ToolSignature(
        content=content,
        key_id=pair.key_id,
        public_key=pair.public_text,
        signature=base64.b64encode(signed.signature).decode("ascii"),
    )
