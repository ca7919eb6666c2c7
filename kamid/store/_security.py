"""The store's security tables: the audit log, tool assets, and grant updates.

The audit log is append-only from the daemon's side: rows are added in batches by
:meth:`SecurityTables.append_audit` and never updated. ``tool_assets`` maps a tool to the
content-addressed copy of its ``assets/`` directory that ``fs = "read-only"`` mounts.
Grants live in the ``tools`` row; :meth:`SecurityTables.update_grants` changes them in one
transaction (read, change, write) so concurrent grants never lose each other's changes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import NotFound

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._db import Database

__all__ = ["MIGRATION", "AuditRow", "SecurityTables"]

#: Appended to ``MIGRATIONS``: creates only this module's tables.
MIGRATION = """
    -- Every exec, install, uninstall, grant and revoke. Inputs are never stored, only
    -- their sha256; JSON columns hold usage, contacted hosts and action details.
    CREATE TABLE audit (
        seq           INTEGER PRIMARY KEY,
        at            REAL NOT NULL,
        action        TEXT NOT NULL,
        tool_id       TEXT NOT NULL,
        version       TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        uid           INTEGER,
        pid           INTEGER,
        client        TEXT,
        profile       TEXT,
        input_sha256  TEXT,
        outcome       TEXT NOT NULL,
        error         TEXT,
        usage         TEXT CHECK (usage IS NULL OR json_valid(usage)),
        hosts         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(hosts)),
        detail        TEXT CHECK (detail IS NULL OR json_valid(detail))
    ) STRICT;
    CREATE INDEX audit_by_time ON audit (at);
    CREATE INDEX audit_by_tool ON audit (tool_id, at);

    -- The assets directory installed with a tool (content-addressed under data/assets).
    CREATE TABLE tool_assets (
        tool_id  TEXT PRIMARY KEY,
        digest   TEXT NOT NULL CHECK (length(digest) = 64),
        size     INTEGER NOT NULL CHECK (size >= 0),
        files    INTEGER NOT NULL CHECK (files >= 0)
    ) STRICT;
"""

_AUDIT_COLUMNS = (
    "at",
    "action",
    "tool_id",
    "version",
    "sha256",
    "uid",
    "pid",
    "client",
    "profile",
    "input_sha256",
    "outcome",
    "error",
    "usage",
    "hosts",
    "detail",
)
# Built from the constants above only; no caller input reaches the SQL text.
_INSERT_AUDIT = (
    f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})"
)
_SELECT_AUDIT = f"SELECT seq, {', '.join(_AUDIT_COLUMNS)} FROM audit"  # noqa: S608


@attrs.frozen(kw_only=True)
class AuditRow:
    """One audit entry as the daemon records it."""

    at: float
    action: str
    tool_id: str
    version: str = ""
    sha256: str = ""
    uid: int | None = None
    pid: int | None = None
    client: str | None = None
    profile: str | None = None
    input_sha256: str | None = None
    outcome: str = "ok"
    error: str | None = None
    usage: dict[str, Any] | None = None
    hosts: list[Any] = attrs.Factory(list)
    detail: dict[str, Any] | None = None
    #: Assigned by the database; 0 until stored.
    seq: int = 0

    def columns(self) -> tuple[Any, ...]:
        return (
            self.at,
            self.action,
            self.tool_id,
            self.version,
            self.sha256,
            self.uid,
            self.pid,
            self.client,
            self.profile,
            self.input_sha256,
            self.outcome,
            self.error,
            _dumps(self.usage),
            _dumps(list(self.hosts)),
            _dumps(self.detail),
        )


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    # default=str: an exotic value in a host list must not make the whole batch fail.
    return json.dumps(value, sort_keys=True, default=str)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class SecurityTables:
    """Audit rows, tool assets and grant updates over the store's database. Thread-safe."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # Audit log.

    def append_audit(self, rows: Iterable[AuditRow]) -> int:
        """Appends ``rows`` in one transaction; returns how many were written."""
        batch = [row.columns() for row in rows]
        if not batch:
            return 0
        with self._db.session() as s, s.transaction():
            for columns in batch:
                s.run(_INSERT_AUDIT, columns)
        return len(batch)

    def audit(
        self, *, tool_ids: Iterable[str] = (), since: float | None = None, limit: int = 100
    ) -> list[AuditRow]:
        """Entries newest first, at most ``limit``, optionally of some tools and recent."""
        where: list[str] = []
        params: list[Any] = []
        ids = list(tool_ids)
        if ids:
            where.append(f"tool_id IN ({', '.join('?' * len(ids))})")
            params += ids
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        sql = _SELECT_AUDIT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        with self._db.session() as s:
            rows = s.rows(sql, params)
        return [_audit_row(r) for r in rows]

    # Tool assets.

    def set_assets(self, tool_id: str, digest: str | None, size: int = 0, files: int = 0) -> None:
        """Records (or, with ``digest=None``, forgets) the assets of ``tool_id``."""
        with self._db.session() as s, s.transaction():
            if digest is None:
                s.run("DELETE FROM tool_assets WHERE tool_id = ?", (tool_id,))
            else:
                s.run(
                    "INSERT INTO tool_assets (tool_id, digest, size, files) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (tool_id) DO UPDATE SET digest = excluded.digest, "
                    "size = excluded.size, files = excluded.files",
                    (tool_id, digest, size, files),
                )

    def assets_of(self, tool_id: str) -> str | None:
        """The digest of the tool's assets, or None when it has none."""
        with self._db.session() as s:
            value = s.value("SELECT digest FROM tool_assets WHERE tool_id = ?", (tool_id,))
        return None if value is None else str(value)

    def asset_digests(self) -> set[str]:
        """Every assets digest some tool uses (what asset garbage collection keeps)."""
        with self._db.session() as s:
            return {str(r[0]) for r in s.rows("SELECT DISTINCT digest FROM tool_assets")}

    # Grants.

    def update_grants(
        self, tool_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Replaces the tool's grants with ``change(current)`` in one transaction.

        ``change`` runs under the database lock and may raise to abort (nothing changes).

        Returns:
            (before, after).

        Raises:
            NotFound: no tool has this id.
        """
        with self._db.session() as s, s.transaction():
            raw = s.value("SELECT grants FROM tools WHERE id = ?", (tool_id,))
            if raw is None:
                raise NotFound(
                    f'no tool "{tool_id}" is installed; `kamictl list` shows what is',
                    data={"tool": tool_id},
                )
            before: dict[str, Any] = json.loads(raw)
            after = change(before)
            if after != before:
                s.run(
                    "UPDATE tools SET grants = ? WHERE id = ?",
                    (json.dumps(after, sort_keys=True, allow_nan=False), tool_id),
                )
        return before, after


def _audit_row(r: tuple[Any, ...]) -> AuditRow:
    return AuditRow(
        seq=r[0],
        at=r[1],
        action=r[2],
        tool_id=r[3],
        version=r[4],
        sha256=r[5],
        uid=r[6],
        pid=r[7],
        client=r[8],
        profile=r[9],
        input_sha256=r[10],
        outcome=r[11],
        error=r[12],
        usage=_loads(r[13]),
        hosts=_loads(r[14]) or [],
        detail=_loads(r[15]),
    )
