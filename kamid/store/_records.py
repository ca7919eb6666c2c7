"""What the store keeps about a tool, and how it maps to rows of the ``tools`` table."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import InvalidParams

from ._blobs import check_sha256

if TYPE_CHECKING:
    from ._db import Row

__all__ = [
    "SELECT_ALL",
    "SELECT_BY_ID",
    "SELECT_BY_NAME",
    "UPSERT_TOOL",
    "InstallOutcome",
    "ToolRecord",
    "ToolVersion",
    "from_row",
    "to_columns",
]


@attrs.frozen(kw_only=True)
class ToolRecord:
    """An installed tool, as the store keeps it."""

    id: str
    name: str
    version: str
    description: str
    sha256: str
    size: int
    #: The manifest, as a JSON-ready dict.
    manifest: dict[str, Any]
    #: The grants the operator approved, JSON-ready.
    grants: dict[str, Any]
    #: The component's imports, found when it was installed.
    imports: list[str]
    #: Where it was installed from (a path or URL).
    source: str
    installed_at: float


@attrs.frozen
class InstallOutcome:
    #: False when this exact version and blob were already installed (nothing rewritten).
    changed: bool
    #: The version this install replaced, or None for a new tool (and when unchanged).
    replaced: str | None


@attrs.frozen(kw_only=True)
class ToolVersion:
    """One entry of a tool's install history; ``removed_at`` is None for the current one."""

    version: str
    sha256: str
    size: int
    source: str
    installed_at: float
    removed_at: float | None


_COLUMN_NAMES = (
    "id",
    "name",
    "version",
    "description",
    "sha256",
    "size",
    "manifest",
    "grants",
    "imports",
    "source",
    "installed_at",
)
_COLUMNS = ", ".join(_COLUMN_NAMES)
# Built from the constants above only; no caller input ever reaches the SQL text.
SELECT_BY_ID = f"SELECT {_COLUMNS} FROM tools WHERE id = ?"  # noqa: S608
SELECT_BY_NAME = f"SELECT {_COLUMNS} FROM tools WHERE name = ? ORDER BY id"  # noqa: S608
SELECT_ALL = f"SELECT {_COLUMNS} FROM tools ORDER BY id"  # noqa: S608
UPSERT_TOOL = (
    f"INSERT INTO tools ({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMN_NAMES))}) "  # noqa: S608
    "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _COLUMN_NAMES[1:])
)


def to_columns(record: ToolRecord) -> tuple[Any, ...]:
    check_sha256(record.sha256)
    if not record.id or record.size < 0:
        raise InvalidParams(f"tool record needs an id and a size >= 0 (got {record!r})")

    def dumps(field: str, value: Any) -> str:
        try:
            return json.dumps(value, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidParams(
                f"tool {record.id}: {field} is not JSON-serializable: {exc}"
            ) from exc

    return (
        record.id,
        record.name,
        record.version,
        record.description,
        record.sha256,
        record.size,
        dumps("manifest", record.manifest),
        dumps("grants", record.grants),
        dumps("imports", record.imports),
        record.source,
        record.installed_at,
    )


def from_row(row: Row) -> ToolRecord:
    return ToolRecord(
        id=row[0],
        name=row[1],
        version=row[2],
        description=row[3],
        sha256=row[4],
        size=row[5],
        manifest=json.loads(row[6]),
        grants=json.loads(row[7]),
        imports=json.loads(row[8]),
        source=row[9],
        installed_at=row[10],
    )
