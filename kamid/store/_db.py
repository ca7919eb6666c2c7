"""The one module in KAMI that imports apsw.

It opens the database with the settings durability needs, runs the migrations, serializes
every use of the connection behind one lock, and turns apsw errors into KAMI errors whose
message names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import apsw

from kamid.protocol import Busy, IntegrityError, InternalError, KamiError, ShuttingDown

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

__all__ = ["Database", "Session"]

logger = logging.getLogger(__name__)

Row = tuple[Any, ...]

#: How long a statement waits for another connection's lock before failing with Busy.
BUSY_TIMEOUT_MS = 5_000


class Session:
    """Statements on the connection while the caller holds the database lock.

    Only :meth:`Database.session` makes one; it is invalid once that block ends.
    """

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """All result rows of ``sql``, as tuples."""
        return [tuple(row) for row in self._conn.execute(sql, params)]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first result row of ``sql``, or None."""
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of ``sql`` (None when there is no row)."""
        row = self.one(sql, params)
        return None if row is None else row[0]

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Executes a data-changing statement; returns how many rows it changed."""
        self._conn.execute(sql, params)
        return self._conn.changes()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Commits when the block ends, rolls back when it raises.

        ``BEGIN IMMEDIATE`` (the connection's transaction mode) takes the write lock up
        front, so a transaction never fails half-way because another writer got there first.
        """
        with self._conn:
            yield


class Database:
    """An apsw connection opened for durability, with its schema migrated.

    Args:
        path: the database file; created (mode 0600) when missing.
        migrations: SQL scripts; step ``n`` brings ``user_version`` from ``n - 1`` to ``n``.
        application_id: marks the file as ours; any other SQLite file is refused.

    Raises:
        IntegrityError: the file is not a database, is damaged, or belongs to something else.
        InternalError: it was written by a newer kamid, or cannot be opened or written.
        Busy: another process holds its lock for longer than the busy timeout.
    """

    def __init__(self, path: Path, *, migrations: Sequence[str], application_id: int) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        #: Bumped by every row change outside the audit log: readers that cache what they
        #: read compare it instead of asking again (see :meth:`Store.generation`).
        self.generation = 0
        _create_private_file(path)
        try:
            self._conn = apsw.Connection(
                str(path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            )
        except apsw.Error as exc:
            raise _translate(exc, path) from exc
        try:
            self._configure()
            self._check_identity(application_id, len(migrations))
            self._migrate(migrations, application_id)
            self._conn.set_update_hook(self._on_row_change)
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, apsw.Error):
                raise _translate(exc, path) from exc
            raise

    def _on_row_change(self, _kind: int, _db: str, table: str, _rowid: int) -> None:
        # The audit log grows on every call and changes nothing a call depends on.
        if table != "audit":
            self.generation += 1

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """Holds the lock for the block and translates apsw errors raised in it.

        One connection serves every thread; without the lock, two threads' statements would
        land in each other's transactions.

        Raises:
            ShuttingDown: the database was closed.
        """
        with self._lock:
            if self._closed:
                raise ShuttingDown("the tool store is closed; kamid is shutting down")
            try:
                yield Session(self._conn)
            except apsw.Error as exc:
                raise _translate(exc, self.path) from exc

    def close(self) -> None:
        """Closes the connection; later sessions raise :class:`ShuttingDown`. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _configure(self) -> None:
        conn = self._conn
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        # First statement that reads the file: a non-database fails here, before any write.
        mode = conn.pragma("journal_mode", "wal")
        if mode != "wal":
            # Some filesystems cannot share memory for WAL; the rollback journal is slower
            # but just as durable with synchronous=FULL.
            logger.warning("%s: WAL mode unavailable, using journal_mode=%s", self.path, mode)
        # FULL syncs the WAL on every commit: a commit that returned survives power loss.
        conn.pragma("synchronous", "FULL")
        conn.pragma("foreign_keys", "ON")
        conn.pragma("trusted_schema", "OFF")
        conn.transaction_mode = "IMMEDIATE"

    def _check_identity(self, application_id: int, known_version: int) -> None:
        conn = self._conn
        found_id = conn.pragma("application_id")
        version = conn.pragma("user_version")
        objects = conn.execute("SELECT count(*) FROM sqlite_schema").get
        fresh = found_id == 0 and version == 0 and objects == 0
        if found_id != application_id and not fresh:
            raise IntegrityError(
                f"{self.path} is a SQLite database but not a KAMI one "
                f"(application_id {found_id:#x}); move it aside or point KAMI_HOME elsewhere",
                data={"file": str(self.path)},
            )
        if version > known_version:
            raise InternalError(
                f"{self.path} has schema version {version} but this kamid knows only up to "
                f"{known_version}: a newer kamid wrote it; run that kamid (or a newer one), "
                "or move the file aside to start with an empty store",
                data={"file": str(self.path), "version": version, "known": known_version},
            )
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise IntegrityError(
                f"{self.path} is damaged ({'; '.join(map(str, problems[:5]))}); stop kamid, "
                "move the file aside, start kamid again and reinstall your tools",
                data={"file": str(self.path), "problems": problems[:20]},
            )

    def _migrate(self, migrations: Sequence[str], application_id: int) -> None:
        conn = self._conn
        for target, script in enumerate(migrations, start=1):
            with conn:
                # Re-read inside the write lock: another process may have migrated meanwhile.
                if conn.pragma("user_version") >= target:
                    continue
                logger.info("%s: migrating schema to version %d", self.path, target)
                conn.execute(script)
                conn.pragma("user_version", target)
                conn.pragma("application_id", application_id)


def _create_private_file(path: Path) -> None:
    # SQLite creates a missing file with the umask's mode and gives -wal and -shm the mode
    # of the main file; making it 0600 first keeps all three private to kamid's user.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise InternalError(
            f"cannot create {path}: {exc.strerror}; check that kamid's user owns {path.parent}",
            data={"file": str(path)},
        ) from exc
    os.close(fd)


def _translate(exc: apsw.Error, path: Path) -> KamiError:
    """The KAMI error for an apsw error on ``path``, saying what to do about it."""
    data = {"file": str(path), "sqlite_error": type(exc).__name__}
    if isinstance(exc, (apsw.NotADBError, apsw.CorruptError)):
        return IntegrityError(
            f"{path} is damaged or not a database ({exc}); stop kamid, move the file aside, "
            "start kamid again (it creates an empty store) and reinstall your tools",
            data=data,
        )
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return Busy(
            f"{path} is locked by another process ({exc}); is another kamid using the same "
            "KAMI_HOME? stop it, or retry",
            data=data,
        )
    if isinstance(exc, apsw.FullError):
        return InternalError(
            f"cannot write {path}: the disk is full; free space and retry", data=data
        )
    if isinstance(exc, (apsw.CantOpenError, apsw.PermissionsError, apsw.ReadOnlyError)):
        return InternalError(
            f"cannot open or write {path} ({exc}); check that the directory exists, is "
            "writable and belongs to kamid's user",
            data=data,
        )
    if isinstance(exc, apsw.IOError):
        return InternalError(
            f"I/O error on {path} ({exc}); check the disk (free space, kernel log)", data=data
        )
    if isinstance(exc, apsw.ConnectionClosedError):
        return ShuttingDown("the tool store is closed; kamid is shutting down", data=data)
    return InternalError(f"database error on {path}: {type(exc).__name__}: {exc}", data=data)
