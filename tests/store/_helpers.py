"""Helpers shared by the store tests (and the crash child process)."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

from kamid.store import ToolRecord

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from kamid.store import Store


def record_for(
    store: Store,
    data: bytes,
    *,
    tool_id: str = "dev.kami.echo",
    name: str | None = None,
    version: str = "1.0.0",
    grants: dict[str, Any] | None = None,
    installed_at: float = 1000.0,
) -> ToolRecord:
    """Writes ``data`` as a blob and returns a record pointing at it (not yet installed)."""
    blob = store.put_blob(data)
    name = name or tool_id.rsplit(".", 1)[-1]
    return ToolRecord(
        id=tool_id,
        name=name,
        version=version,
        description=f"The {name} tool.",
        sha256=blob.sha256,
        size=blob.size,
        manifest={"tool": {"id": tool_id, "name": name, "version": version}},
        grants=grants if grants is not None else {"approved": False, "requested": []},
        imports=["kami:tool/host@0.1.0"],
        source=f"/src/{name}",
        installed_at=installed_at,
    )


@contextlib.contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """The database through the standard library's sqlite3: a second opinion, not apsw."""
    conn = sqlite3.connect(path)
    try:
        yield conn
    finally:
        conn.close()


def blob_files(blobs: Path) -> set[str]:
    """Names of the blob files on disk (``blobs/aa/<sha256>``)."""
    return {p.name for p in blobs.glob("??/*") if p.is_file()}
