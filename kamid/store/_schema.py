"""The store's schema, as an ordered list of migrations.

Step ``n`` (counting from 1) takes a database from ``PRAGMA user_version`` ``n - 1`` to ``n``.
Each step runs in its own transaction together with the version bump, so a crash leaves the
database at a whole step. Only ever append: databases in the field already ran the released
steps, so editing one would fork the schema. Later issues add grants, kv and audit tables as
new steps.
"""

from __future__ import annotations

from ._mcp import MIGRATION as MCP_MIGRATION
from ._security import MIGRATION as SECURITY_MIGRATION
from ._supply import MIGRATION as SUPPLY_MIGRATION

__all__ = ["APPLICATION_ID", "MIGRATIONS", "UNREFERENCED_BLOB"]

#: ``PRAGMA application_id`` of a KAMI database ("KAMI" in ASCII). It tells our database apart
#: from any other SQLite file that happens to sit at the same path.
APPLICATION_ID = 0x4B414D49

#: SQL condition (with the blob's sha256 as ``blobs.sha256``) that holds when nothing refers
#: to a blob any more. The one definition of "garbage": a later table that points at blobs
#: (say, kept versions for rollback) must be added here.
UNREFERENCED_BLOB = "NOT EXISTS (SELECT 1 FROM tools WHERE tools.sha256 = blobs.sha256)"

MIGRATIONS: tuple[str, ...] = (
    # 1: tools, their install history, the blobs they point at and the AOT cache index.
    """
    CREATE TABLE blobs (
        sha256      TEXT PRIMARY KEY CHECK (length(sha256) = 64),
        size        INTEGER NOT NULL CHECK (size >= 0),
        created_at  REAL NOT NULL
    ) STRICT, WITHOUT ROWID;

    -- One row per installed tool: the version that runs. JSON columns hold what the
    -- daemon hands back verbatim (manifest, approved grants, component imports).
    CREATE TABLE tools (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        version       TEXT NOT NULL,
        description   TEXT NOT NULL,
        sha256        TEXT NOT NULL REFERENCES blobs (sha256),
        size          INTEGER NOT NULL CHECK (size >= 0),
        manifest      TEXT NOT NULL CHECK (json_valid(manifest)),
        grants        TEXT NOT NULL CHECK (json_valid(grants)),
        imports       TEXT NOT NULL CHECK (json_valid(imports)),
        source        TEXT NOT NULL,
        installed_at  REAL NOT NULL
    ) STRICT;
    CREATE INDEX tools_by_name ON tools (name);
    CREATE INDEX tools_by_sha256 ON tools (sha256);

    -- Every version ever installed, kept after replacement and uninstall (no foreign key:
    -- history outlives the blob). removed_at is NULL for the version installed now.
    CREATE TABLE tool_versions (
        seq           INTEGER PRIMARY KEY,
        tool_id       TEXT NOT NULL,
        version       TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        source        TEXT NOT NULL,
        installed_at  REAL NOT NULL,
        removed_at    REAL
    ) STRICT;
    CREATE INDEX tool_versions_by_tool ON tool_versions (tool_id, seq);

    -- The engine's record of the AOT files it wrote: it loads native code only when the
    -- file's hash matches the one recorded here.
    CREATE TABLE aot_index (
        key         TEXT PRIMARY KEY,
        sha256      TEXT NOT NULL CHECK (length(sha256) = 64),
        updated_at  REAL NOT NULL
    ) STRICT;
    """,
    # The audit log and tool assets (kamid/store/_security.py).
    SECURITY_MIGRATION,
    # MCP agent profiles and tool READMEs (kamid/store/_mcp.py).
    MCP_MIGRATION,
    # Trusted keys, registries, tool origins and pins (kamid/store/_supply.py).
    SUPPLY_MIGRATION,
)
