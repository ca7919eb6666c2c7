"""Verifying tool signatures (Ed25519, PyNaCl) and the daemon's trust decisions.

What is signed is defined in :mod:`kamid.protocol._signing`; this module checks a
:class:`~kamid.protocol.ToolSignature` against the bytes the daemon actually holds and
decides, under ``[supply_chain].require_signatures``, whether the signer is good enough.
A signature that does not match is always refused, whatever the policy: it means the
tool was changed after it was signed.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from typing import TYPE_CHECKING, Any

import nacl.exceptions
import nacl.signing

from kamid.protocol import IntegrityError, PolicyDenied, SignerInfo

if TYPE_CHECKING:
    from kamid.protocol import SignedContent, ToolSignature
    from kamid.store._supply import KeyRow

__all__ = ["TrustStore", "check_signature", "manifest_digest"]


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of a stored manifest dict in a fixed JSON form (sorted keys, no spaces).

    Recorded at install next to the signer, so that a check at exec time can tell,
    without hashing the component, that the tool row is still the one that was verified.
    """
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_signature(signature: ToolSignature, actual: SignedContent, *, source: str) -> None:
    """Verifies that ``signature`` signs exactly ``actual``.

    Raises:
        IntegrityError: it does not; the message says what changed since signing when the
            signature file tells (a different component, manifest, assets, id or version).
    """
    differences = signature.content.differences(actual)
    try:
        key = nacl.signing.VerifyKey(signature.raw_public_key())
        key.verify(actual.payload(), signature.raw_signature())
    except (nacl.exceptions.BadSignatureError, ValueError, binascii.Error) as exc:
        why = "; ".join(differences) or "the signature bytes do not match the content"
        raise IntegrityError(
            f"{source}: the signature by key {signature.key_id} does not match: {why}. "
            "Nothing was installed; get the tool again from its publisher, or (if you are "
            "the publisher) re-sign it with `kamictl sign`",
            data={"key_id": signature.key_id, "differences": differences},
        ) from exc
    if differences:
        # The signature is over the real content, but the file's claims were edited.
        raise IntegrityError(
            f"{source}: {SIGNATURE_NAME} describes other content than it signs "
            f"({'; '.join(differences)}); re-sign the tool with `kamictl sign`",
            data={"key_id": signature.key_id, "differences": differences},
        )


SIGNATURE_NAME = "tool.sig"


class TrustStore:
    """The trusted keys, held in memory for cheap checks at every exec.

    Loaded from the store once; the ``trust.*`` handlers keep it in step with the table.
    """

    def __init__(self, rows: list[KeyRow]) -> None:
        self._keys: dict[str, KeyRow] = {row.key_id: row for row in rows}

    def get(self, key_id: str) -> KeyRow | None:
        return self._keys.get(key_id)

    def add(self, row: KeyRow) -> None:
        self._keys[row.key_id] = row

    def remove(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    def signer(self, key_id: str) -> SignerInfo:
        row = self._keys.get(key_id)
        return SignerInfo(key_id=key_id, name=row.name if row else None, trusted=row is not None)

    def judge(
        self,
        signature: ToolSignature | None,
        actual: SignedContent,
        *,
        source: str,
        require: bool,
    ) -> SignerInfo | None:
        """Checks a tool's signature and the policy; returns its signer (None: unsigned).

        Raises:
            IntegrityError: the signature does not match the content (always refused).
            PolicyDenied: ``require`` is set and the tool is unsigned, or signed by a key
                that is not trusted (or trusted under a different public key).
        """
        what = f"{actual.tool} {actual.version}"
        if signature is None:
            if require:
                raise PolicyDenied(
                    f"{what} ({source}) is not signed, and this kamid requires signatures "
                    "([supply_chain].require_signatures in kamid.toml). Nothing was "
                    "installed; install a package signed by a key you trust, or sign the tool "
                    "with `kamictl sign` and trust that key with `kamictl trust add`",
                    data={"tool": actual.tool, "reason": "unsigned"},
                )
            return None
        check_signature(signature, actual, source=source)
        row = self._keys.get(signature.key_id)
        if row is not None and row.public_key != signature.public_key:
            # Same short id, different key: a collision attempt on the 64-bit id.
            raise PolicyDenied(
                f"{what} is signed by a key whose id {signature.key_id} matches a trusted key "
                "but whose public key does not; refusing it",
                data={"tool": actual.tool, "key_id": signature.key_id, "reason": "key_mismatch"},
            )
        if row is None and require:
            raise PolicyDenied(
                f"{what} is signed by key {signature.key_id}, which is not in the trust store, "
                "and this kamid requires trusted signatures. Nothing was installed; if you "
                "trust its publisher, run `kamictl trust add "
                f"{signature.public_key}` and install again",
                data={
                    "tool": actual.tool,
                    "key_id": signature.key_id,
                    "public_key": signature.public_key,
                    "reason": "untrusted",
                },
            )
        return self.signer(signature.key_id)
