"""The tool store: installed tools, their blobs, their history and the AOT cache index."""

from __future__ import annotations

import difflib
import logging
import os
import time
from typing import TYPE_CHECKING

from kamid.protocol import IntegrityError, InternalError, NotFound

from ._blobs import BlobStore, check_sha256
from ._db import Database
from ._mcp import McpTables
from ._records import (
    SELECT_ALL,
    SELECT_BY_ID,
    SELECT_BY_NAME,
    UPSERT_TOOL,
    InstallOutcome,
    ToolRecord,
    ToolVersion,
    from_row,
    to_columns,
)
from ._schema import APPLICATION_ID, MIGRATIONS, UNREFERENCED_BLOB
from ._security import SecurityTables
from ._supply import SupplyTables

if TYPE_CHECKING:
    import builtins
    from pathlib import Path
    from types import TracebackType

    from kamid.protocol import Paths

    from ._blobs import BlobRef
    from ._db import Session

__all__ = ["Store"]

logger = logging.getLogger(__name__)


_DELETE_UNREFERENCED = f"DELETE FROM blobs WHERE {UNREFERENCED_BLOB}"  # noqa: S608
_DELETE_IF_UNREFERENCED = f"DELETE FROM blobs WHERE sha256 = ? AND {UNREFERENCED_BLOB}"  # noqa: S608


class Store:
    """Installed tools, content-addressed blobs and the AOT cache index, in one database.

    Every method blocks (run it with ``trio.to_thread.run_sync``) and is safe to call from
    several threads: one lock serializes them. Use one Store per KAMI home; the daemon's
    lock file guarantees that, and opening removes what a crashed process left behind.

    Args:
        paths: the layout; the database is ``paths.database``, blobs go in ``paths.blobs``.

    Raises:
        IntegrityError: the database file is damaged or not a KAMI database.
        InternalError: it comes from a newer kamid, or the directories cannot be created.
        Busy: another process holds the database.
    """

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        _private_dir(paths.data)
        _private_dir(paths.blobs)
        self._db = Database(paths.database, migrations=MIGRATIONS, application_id=APPLICATION_ID)
        self._blobs = BlobStore(paths.blobs)
        #: The audit log, tool assets and grant updates.
        self.security = SecurityTables(self._db)
        #: Trusted keys, registries, where each tool came from, pins.
        self.supply = SupplyTables(self._db)
        #: MCP agent profiles and tool READMEs.
        self.mcp = McpTables(self._db)
        try:
            self._recover()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Closes the database; later calls raise ShuttingDown. Idempotent."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Blobs.

    def put_blob(self, data: bytes) -> BlobRef:
        """Writes ``data`` as a blob, durably, before any row may point at it.

        The blob is protected from garbage collection until :meth:`install` or
        :meth:`discard_blob` is called with its digest (or until the store is reopened).

        Raises:
            InternalError: it could not be written (disk full, permissions).
        """
        return self._blobs.put(data)

    def blob_path(self, sha256: str) -> Path:
        """The file of the blob with this digest.

        Raises:
            InvalidParams: ``sha256`` is not a sha256 hex digest.
        """
        return self._blobs.path(sha256)

    def discard_blob(self, sha256: str) -> None:
        """Gives up a blob from :meth:`put_blob` whose install did not happen.

        Drops the protection :meth:`put_blob` took and deletes the file unless an installed
        tool (or another pending install) uses it, so calling it is always safe.

        Raises:
            InvalidParams: ``sha256`` is not a sha256 hex digest.
        """
        check_sha256(sha256)
        with self._db.session() as s:
            self._blobs.unpin(sha256)
            # A blob row exists exactly while something refers to the blob.
            if s.value("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,)) is None:
                self._blobs.collect([sha256])

    def verify_blob(self, sha256: str) -> None:
        """Re-hashes a blob.

        Raises:
            IntegrityError: it is missing or was modified.
        """
        self._blobs.verify(sha256)

    # Tools.

    def install(self, record: ToolRecord) -> InstallOutcome:
        """Makes ``record`` the installed version of its tool, in one transaction.

        The same id, version and sha256 as installed changes nothing. Otherwise the record
        replaces the current one, the history gains a row, and the old blob is deleted if no
        tool uses it any more.

        Raises:
            IntegrityError: the blob is missing, modified, or not ``record.size`` bytes.
            InvalidParams: a field is malformed or not JSON-serializable.
        """
        try:
            columns = to_columns(record)
            # Hash outside the lock: it takes a while for a large component.
            size = self._blobs.verify(record.sha256)
            if size != record.size:
                raise IntegrityError(
                    f"tool {record.id}: blob {record.sha256} is {size} bytes but the record "
                    f"says {record.size}; reinstall the tool with `kamictl install`",
                    data={"sha256": record.sha256},
                )
            with self._db.session() as s:
                # Under the lock no collection runs, so the blob cannot vanish before commit.
                if self._blobs.size_on_disk(record.sha256) != record.size:
                    raise IntegrityError(
                        f"blob {record.sha256} disappeared while installing {record.id}; "
                        "retry the install",
                        data={"sha256": record.sha256},
                    )
                with s.transaction():
                    current = s.one("SELECT version, sha256 FROM tools WHERE id = ?", (record.id,))
                    if current == (record.version, record.sha256):
                        return InstallOutcome(changed=False, replaced=None)
                    now = time.time()
                    s.run(
                        "INSERT INTO blobs (sha256, size, created_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (sha256) DO NOTHING",
                        (record.sha256, record.size, now),
                    )
                    # An upsert, not INSERT OR REPLACE: replacing deletes the row, which
                    # would fire ON DELETE actions of tables that later point at tools.
                    s.run(UPSERT_TOOL, columns)
                    s.run(
                        "UPDATE tool_versions SET removed_at = ? "
                        "WHERE tool_id = ? AND removed_at IS NULL",
                        (now, record.id),
                    )
                    s.run(
                        "INSERT INTO tool_versions "
                        "(tool_id, version, sha256, size, source, installed_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            record.id,
                            record.version,
                            record.sha256,
                            record.size,
                            record.source,
                            record.installed_at,
                        ),
                    )
                    garbage = _drop_unreferenced(s, [current[1]] if current else [])
                self._blobs.collect(garbage)
            return InstallOutcome(changed=True, replaced=current[0] if current else None)
        finally:
            self._blobs.unpin(record.sha256)

    def get(self, tool_id: str) -> ToolRecord | None:
        """The tool with this exact id, or None."""
        with self._db.session() as s:
            row = s.one(SELECT_BY_ID, (tool_id,))
        return None if row is None else from_row(row)

    def resolve(self, name_or_id: str) -> ToolRecord:
        """The tool with this id, else the only tool with this name.

        Raises:
            NotFound: no such tool (with close matches suggested), or several tools share
                the name (listing their ids).
        """
        with self._db.session() as s:
            row = s.one(SELECT_BY_ID, (name_or_id,))
            if row is not None:
                return from_row(row)
            rows = s.rows(SELECT_BY_NAME, (name_or_id,))
            known = s.rows("SELECT id, name FROM tools") if not rows else []
        if len(rows) == 1:
            return from_row(rows[0])
        if rows:
            ids = [r[0] for r in rows]
            raise NotFound(
                f'tool name "{name_or_id}" is ambiguous: it is the name of '
                f"{', '.join(ids)}; use the full id",
                data={"tool": name_or_id, "candidates": ids},
            )
        words = sorted({w for pair in known for w in pair})
        raise _not_installed(name_or_id, difflib.get_close_matches(name_or_id, words, n=3))

    def list(self) -> builtins.list[ToolRecord]:
        """Every installed tool, ordered by id."""
        with self._db.session() as s:
            rows = s.rows(SELECT_ALL)
        return [from_row(row) for row in rows]

    def uninstall(self, tool_id: str) -> ToolRecord:
        """Removes the tool with this exact id; deletes its blob once no tool uses it.

        Returns:
            The record that was removed.

        Raises:
            NotFound: no tool has this id.
        """
        with self._db.session() as s:
            with s.transaction():
                row = s.one(SELECT_BY_ID, (tool_id,))
                if row is None:
                    raise _not_installed(tool_id, [])
                record = from_row(row)
                s.run("DELETE FROM tools WHERE id = ?", (tool_id,))
                s.run(
                    "UPDATE tool_versions SET removed_at = ? "
                    "WHERE tool_id = ? AND removed_at IS NULL",
                    (time.time(), tool_id),
                )
                garbage = _drop_unreferenced(s, [record.sha256])
            # After the commit: a crash in between leaves an orphan file, never a dangling row.
            self._blobs.collect(garbage)
        return record

    @property
    def generation(self) -> int:
        """Changes whenever a tool, its grants or anything else a call depends on changes.

        Cheap to read (no lock, no query): a cache of store reads stays valid while this is
        unchanged. Covers every row-changing statement on tables with rowids, which is all of
        them except ``blobs`` (whose changes come with the ``tools`` rows that point at them).
        """
        return self._db.generation

    def count(self) -> int:
        """How many tools are installed."""
        with self._db.session() as s:
            return int(s.value("SELECT count(*) FROM tools"))

    def history(self, tool_id: str) -> builtins.list[ToolVersion]:
        """Every version of this tool ever installed, oldest first (empty if none)."""
        with self._db.session() as s:
            rows = s.rows(
                "SELECT version, sha256, size, source, installed_at, removed_at "
                "FROM tool_versions WHERE tool_id = ? ORDER BY seq",
                (tool_id,),
            )
        return [
            ToolVersion(
                version=r[0],
                sha256=r[1],
                size=r[2],
                source=r[3],
                installed_at=r[4],
                removed_at=r[5],
            )
            for r in rows
        ]

    def check(self) -> builtins.list[str]:
        """Audits the whole store: SQLite's integrity check and a re-hash of every blob.

        Returns:
            One line per problem found; empty when the store is sound.
        """
        with self._db.session() as s:
            problems = [str(r[0]) for r in s.rows("PRAGMA integrity_check") if r[0] != "ok"]
            blobs = [r[0] for r in s.rows("SELECT sha256 FROM blobs ORDER BY sha256")]
        for sha256 in blobs:
            try:
                self._blobs.verify(sha256)
            except IntegrityError as exc:
                problems.append(exc.message)
        return problems

    # AOT cache index.

    def aot_get(self, key: str) -> str | None:
        """The sha256 recorded for the AOT file under ``key``, or None."""
        with self._db.session() as s:
            value = s.value("SELECT sha256 FROM aot_index WHERE key = ?", (key,))
        return None if value is None else str(value)

    def aot_put(self, key: str, file_sha256: str) -> None:
        """Records the sha256 of the AOT file just written under ``key`` (replacing any)."""
        check_sha256(file_sha256)
        with self._db.session() as s, s.transaction():
            s.run(
                "INSERT OR REPLACE INTO aot_index (key, sha256, updated_at) VALUES (?, ?, ?)",
                (key, file_sha256, time.time()),
            )

    def aot_delete(self, key: str) -> None:
        """Forgets ``key``; a no-op when it is not recorded."""
        with self._db.session() as s, s.transaction():
            s.run("DELETE FROM aot_index WHERE key = ?", (key,))

    def _recover(self) -> None:
        # Undo what a crash can leave: a blob row no tool uses (defensive; rows go in the
        # same transaction as their last tool), and files no row knows (a blob written for
        # an install that never committed, a temp file, a deletion that did not happen).
        with self._db.session() as s:
            with s.transaction():
                s.run(_DELETE_UNREFERENCED)
            keep = {r[0] for r in s.rows("SELECT sha256 FROM blobs")}
            self._blobs.sweep(keep)
            # Cannot be repaired here, but the operator should hear of it before a call fails.
            for tool_id, sha256 in s.rows("SELECT id, sha256 FROM tools ORDER BY id"):
                if self._blobs.size_on_disk(sha256) is None:
                    logger.warning(
                        "tool %s: its blob %s is missing; reinstall it with `kamictl install`",
                        tool_id,
                        sha256,
                    )


def _drop_unreferenced(s: Session, candidates: builtins.list[str]) -> builtins.list[str]:
    """Deletes the rows of those blobs nothing uses now; returns their digests."""
    return [sha256 for sha256 in candidates if s.run(_DELETE_IF_UNREFERENCED, (sha256,))]


def _not_installed(name: str, suggestions: builtins.list[str]) -> NotFound:
    message = f'no tool "{name}" is installed; `kamictl list` shows what is'
    if suggestions:
        message += "; did you mean " + " or ".join(f'"{s}"' for s in suggestions) + "?"
    return NotFound(message, data={"tool": name, "suggestions": suggestions})


def _private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode passes through the umask and leaves an existing directory alone.
        os.chmod(path, 0o700)
    except OSError as exc:
        raise InternalError(
            f"cannot create {path}: {exc.strerror}; check that kamid's user can write "
            f"{path.parent}",
            data={"file": str(path)},
        ) from exc
