"""The store's supply-chain tables: trusted keys, registries, tool origins and pins.

``tool_origins`` says where the installed version of each tool came from and who signed
it; it is written right after the tool's row commits and describes exactly one component
and manifest (``sha256``, ``manifest_digest``). A row that no longer matches the tool row
(a crash between the two commits) counts as "unsigned", which fails closed. Origins and
pins go with their tool (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._db import Database

__all__ = ["MIGRATION", "KeyRow", "OriginRow", "RegistryRow", "SupplyTables"]

#: Appended to ``MIGRATIONS``: creates only this module's tables.
MIGRATION = """
    -- Ed25519 keys whose signatures the operator accepts.
    CREATE TABLE trusted_keys (
        key_id      TEXT PRIMARY KEY CHECK (length(key_id) = 16),
        public_key  TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL,
        added_at    REAL NOT NULL
    ) STRICT;

    -- Registries added with `kamictl registry add` (the configured default is not here).
    CREATE TABLE registries (
        name      TEXT PRIMARY KEY,
        url       TEXT NOT NULL,
        added_at  REAL NOT NULL
    ) STRICT;

    -- Where the installed version of a tool came from, and the verified signature.
    CREATE TABLE tool_origins (
        tool_id          TEXT PRIMARY KEY REFERENCES tools (id) ON DELETE CASCADE,
        sha256           TEXT NOT NULL CHECK (length(sha256) = 64),
        manifest_digest  TEXT NOT NULL CHECK (length(manifest_digest) = 64),
        kind             TEXT NOT NULL CHECK (kind IN ('directory', 'package', 'registry')),
        source           TEXT NOT NULL,
        registry         TEXT,
        wanted           TEXT NOT NULL,
        signature        TEXT CHECK (signature IS NULL OR json_valid(signature)),
        signer           TEXT,
        recorded_at      REAL NOT NULL
    ) STRICT;

    CREATE TABLE tool_pins (
        tool_id    TEXT PRIMARY KEY REFERENCES tools (id) ON DELETE CASCADE,
        pin        TEXT NOT NULL,
        pinned_at  REAL NOT NULL
    ) STRICT;
"""


@attrs.frozen(kw_only=True)
class KeyRow:
    key_id: str
    public_key: str
    name: str
    added_at: float


@attrs.frozen(kw_only=True)
class RegistryRow:
    name: str
    url: str
    added_at: float


@attrs.frozen(kw_only=True)
class OriginRow:
    tool_id: str
    #: The component and manifest this row describes.
    sha256: str
    manifest_digest: str
    #: ``directory``, ``package`` or ``registry``.
    kind: str
    #: The directory, package path or artifact URL.
    source: str
    #: The registry it updates from (kind ``registry`` only).
    registry: str | None = None
    #: The range it was installed with (``*`` when none was given).
    wanted: str = "*"
    #: The ``tool.sig`` JSON text, when it was signed.
    signature: str | None = None
    #: The verified signer's key id.
    signer: str | None = None
    recorded_at: float = 0.0


_ORIGIN_COLUMNS = (
    "tool_id, sha256, manifest_digest, kind, source, registry, wanted, signature, signer, "
    "recorded_at"
)


def _origin(row: tuple[object, ...]) -> OriginRow:
    return OriginRow(
        tool_id=str(row[0]),
        sha256=str(row[1]),
        manifest_digest=str(row[2]),
        kind=str(row[3]),
        source=str(row[4]),
        registry=None if row[5] is None else str(row[5]),
        wanted=str(row[6]),
        signature=None if row[7] is None else str(row[7]),
        signer=None if row[8] is None else str(row[8]),
        recorded_at=float(row[9]),  # type: ignore[arg-type]
    )


class SupplyTables:
    """Reads and writes the supply-chain tables. Every method blocks."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # Trusted keys.

    def keys(self) -> list[KeyRow]:
        with self._db.session() as s:
            rows = s.rows(
                "SELECT key_id, public_key, name, added_at FROM trusted_keys ORDER BY added_at"
            )
        return [KeyRow(key_id=r[0], public_key=r[1], name=r[2], added_at=r[3]) for r in rows]

    def add_key(self, key_id: str, public_key: str, name: str) -> tuple[KeyRow, bool]:
        """Trusts a key; returns its row and False when it was trusted already."""
        with self._db.session() as s, s.transaction():
            row = s.one(
                "SELECT key_id, public_key, name, added_at FROM trusted_keys WHERE key_id = ?",
                (key_id,),
            )
            if row is not None:
                return KeyRow(key_id=row[0], public_key=row[1], name=row[2], added_at=row[3]), False
            now = time.time()
            s.run(
                "INSERT INTO trusted_keys (key_id, public_key, name, added_at) VALUES (?, ?, ?, ?)",
                (key_id, public_key, name, now),
            )
        return KeyRow(key_id=key_id, public_key=public_key, name=name, added_at=now), True

    def remove_key(self, key_id: str) -> KeyRow | None:
        with self._db.session() as s, s.transaction():
            row = s.one(
                "SELECT key_id, public_key, name, added_at FROM trusted_keys WHERE key_id = ?",
                (key_id,),
            )
            if row is None:
                return None
            s.run("DELETE FROM trusted_keys WHERE key_id = ?", (key_id,))
        return KeyRow(key_id=row[0], public_key=row[1], name=row[2], added_at=row[3])

    # Registries.

    def registries(self) -> list[RegistryRow]:
        with self._db.session() as s:
            rows = s.rows("SELECT name, url, added_at FROM registries ORDER BY added_at, name")
        return [RegistryRow(name=r[0], url=r[1], added_at=r[2]) for r in rows]

    def add_registry(self, name: str, url: str) -> RegistryRow | None:
        """Adds a registry; None when one of that name exists (nothing changes)."""
        with self._db.session() as s, s.transaction():
            if s.value("SELECT 1 FROM registries WHERE name = ?", (name,)) is not None:
                return None
            now = time.time()
            s.run("INSERT INTO registries (name, url, added_at) VALUES (?, ?, ?)", (name, url, now))
        return RegistryRow(name=name, url=url, added_at=now)

    def remove_registry(self, name: str) -> RegistryRow | None:
        with self._db.session() as s, s.transaction():
            row = s.one("SELECT name, url, added_at FROM registries WHERE name = ?", (name,))
            if row is None:
                return None
            s.run("DELETE FROM registries WHERE name = ?", (name,))
        return RegistryRow(name=row[0], url=row[1], added_at=row[2])

    # Origins.

    def origin(self, tool_id: str) -> OriginRow | None:
        with self._db.session() as s:
            row = s.one(
                f"SELECT {_ORIGIN_COLUMNS} FROM tool_origins WHERE tool_id = ?",  # noqa: S608
                (tool_id,),
            )
        return None if row is None else _origin(row)

    def origins(self) -> dict[str, OriginRow]:
        with self._db.session() as s:
            rows = s.rows(f"SELECT {_ORIGIN_COLUMNS} FROM tool_origins")  # noqa: S608
        return {str(r[0]): _origin(r) for r in rows}

    def record_origin(self, origin: OriginRow) -> bool:
        """Records where the installed version came from.

        Only written while the tool row still holds ``origin.sha256`` (an uninstall or
        another install may have won the race); returns whether it was written.
        """
        with self._db.session() as s, s.transaction():
            # Built from the constant column list only.
            return bool(
                s.run(
                    f"INSERT OR REPLACE INTO tool_origins ({_ORIGIN_COLUMNS}) "  # noqa: S608
                    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM tools WHERE id = ? AND sha256 = ?)",
                    (
                        origin.tool_id,
                        origin.sha256,
                        origin.manifest_digest,
                        origin.kind,
                        origin.source,
                        origin.registry,
                        origin.wanted,
                        origin.signature,
                        origin.signer,
                        time.time(),
                        origin.tool_id,
                        origin.sha256,
                    ),
                )
            )

    # Pins.

    def pins(self) -> dict[str, str]:
        with self._db.session() as s:
            return {str(r[0]): str(r[1]) for r in s.rows("SELECT tool_id, pin FROM tool_pins")}

    def set_pin(self, tool_id: str, pin: str | None) -> bool:
        """Pins (or with None unpins) an installed tool; False when it is not installed."""
        with self._db.session() as s, s.transaction():
            if s.value("SELECT 1 FROM tools WHERE id = ?", (tool_id,)) is None:
                return False
            if pin is None:
                s.run("DELETE FROM tool_pins WHERE tool_id = ?", (tool_id,))
            else:
                s.run(
                    "INSERT OR REPLACE INTO tool_pins (tool_id, pin, pinned_at) VALUES (?, ?, ?)",
                    (tool_id, pin, time.time()),
                )
        return True
