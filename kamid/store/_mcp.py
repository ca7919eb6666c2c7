"""The store's MCP tables: agent profiles, and each tool's README as it was installed.

A profile is a name and a JSON list of tool ids. A README is captured from the tool
directory when the tool is installed, so that agents can read it as an MCP resource even
after the source directory has moved on; it goes when the tool is uninstalled.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._db import Database

__all__ = ["MIGRATION", "McpTables", "ProfileRow"]

#: Appended to ``MIGRATIONS``: creates only this module's tables.
MIGRATION = """
    -- Named sets of tools that `kamictl mcp --profile NAME` shows an agent.
    CREATE TABLE mcp_profiles (
        name        TEXT PRIMARY KEY,
        tools       TEXT NOT NULL CHECK (json_valid(tools)),
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    ) STRICT;

    -- A tool's README.md as installed; served as kami://tools/<id>/readme.
    CREATE TABLE tool_readmes (
        tool_id     TEXT PRIMARY KEY REFERENCES tools (id) ON DELETE CASCADE,
        text        TEXT NOT NULL,
        updated_at  REAL NOT NULL
    ) STRICT;
"""


@attrs.frozen(kw_only=True)
class ProfileRow:
    name: str
    tools: list[str]
    created_at: float
    updated_at: float


def _row(row: tuple[object, ...]) -> ProfileRow:
    name, tools, created_at, updated_at = row
    return ProfileRow(
        name=str(name),
        tools=[str(t) for t in json.loads(str(tools))],
        created_at=float(created_at),  # type: ignore[arg-type]
        updated_at=float(updated_at),  # type: ignore[arg-type]
    )


class McpTables:
    """Profiles and READMEs. Every method blocks; call it from a worker thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put_profile(self, name: str, tools: list[str], *, replace: bool) -> ProfileRow | None:
        """Creates (or with ``replace``, replaces) a profile.

        Returns:
            The profile as stored, or None when it exists and ``replace`` is false.
        """
        now = time.time()
        with self._db.session() as s, s.transaction():
            existing = s.one("SELECT created_at FROM mcp_profiles WHERE name = ?", (name,))
            if existing is not None and not replace:
                return None
            created = float(existing[0]) if existing is not None else now
            s.run(
                "INSERT INTO mcp_profiles (name, tools, created_at, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "tools = excluded.tools, updated_at = excluded.updated_at",
                (name, json.dumps(sorted(set(tools))), created, now),
            )
        return ProfileRow(name=name, tools=sorted(set(tools)), created_at=created, updated_at=now)

    def profiles(self) -> list[ProfileRow]:
        """Every profile, by name."""
        with self._db.session() as s:
            rows = s.rows(
                "SELECT name, tools, created_at, updated_at FROM mcp_profiles ORDER BY name"
            )
        return [_row(r) for r in rows]

    def profile(self, name: str) -> ProfileRow | None:
        with self._db.session() as s:
            row = s.one(
                "SELECT name, tools, created_at, updated_at FROM mcp_profiles WHERE name = ?",
                (name,),
            )
        return None if row is None else _row(row)

    def delete_profile(self, name: str) -> bool:
        """Deletes a profile; False when there was none."""
        with self._db.session() as s, s.transaction():
            return s.run("DELETE FROM mcp_profiles WHERE name = ?", (name,)) > 0

    def put_readme(self, tool_id: str, text: str | None) -> None:
        """Records the README installed with ``tool_id`` (None: it has none now).

        A tool that is no longer installed gets nothing (the foreign key refuses it).
        """
        with self._db.session() as s, s.transaction():
            if text is None:
                s.run("DELETE FROM tool_readmes WHERE tool_id = ?", (tool_id,))
            elif s.value("SELECT 1 FROM tools WHERE id = ?", (tool_id,)) is not None:
                s.run(
                    "INSERT INTO tool_readmes (tool_id, text, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (tool_id) DO UPDATE SET text = excluded.text, "
                    "updated_at = excluded.updated_at",
                    (tool_id, text, time.time()),
                )

    def readme(self, tool_id: str) -> str | None:
        with self._db.session() as s:
            value = s.value("SELECT text FROM tool_readmes WHERE tool_id = ?", (tool_id,))
        return None if value is None else str(value)

    def readme_ids(self) -> set[str]:
        """Ids of the tools that have a README."""
        with self._db.session() as s:
            return {str(r[0]) for r in s.rows("SELECT tool_id FROM tool_readmes")}
