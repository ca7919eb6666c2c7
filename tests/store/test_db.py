"""The database: schema and migrations, refusing files that are not ours, the AOT index."""

from __future__ import annotations

import ast
import hashlib
from typing import TYPE_CHECKING

import pytest

from kamid.protocol import IntegrityError, InternalError, InvalidParams, ShuttingDown
from kamid.store import Store
from kamid.store._db import Database
from kamid.store._schema import APPLICATION_ID, MIGRATIONS
from tests.conftest import REPO
from tests.store._helpers import raw_db, record_for

if TYPE_CHECKING:
    from pathlib import Path

    from kamid.protocol import Paths

SHA = hashlib.sha256(b"aot").hexdigest()
OTHER_SHA = hashlib.sha256(b"other").hexdigest()


def _tables(path: Path) -> set[str]:
    with raw_db(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}


def test_a_new_store_gets_the_whole_schema(paths: Paths) -> None:
    Store(paths).close()

    with raw_db(paths.database) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert db.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert {"tools", "tool_versions", "blobs", "aot_index"} <= _tables(paths.database)


def test_reopening_keeps_the_data_and_the_version(store: Store, paths: Paths) -> None:
    record = record_for(store, b"component")
    store.install(record)
    store.close()

    with Store(paths) as again:
        assert again.get(record.id) == record
    with raw_db(paths.database) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


def test_migrations_resume_from_the_version_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    one = ["CREATE TABLE a (x INTEGER) STRICT; INSERT INTO a VALUES (1);"]
    Database(path, migrations=one, application_id=APPLICATION_ID).close()

    # Step 1 must not run again (it would insert a second row).
    two = [*one, "CREATE TABLE b (y TEXT) STRICT;"]
    Database(path, migrations=two, application_id=APPLICATION_ID).close()

    with raw_db(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM a").fetchone() == (1,)
    assert _tables(path) == {"a", "b"}


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    good = "CREATE TABLE a (x INTEGER) STRICT;"
    bad = "CREATE TABLE half (x INTEGER); THIS IS NOT SQL;"

    with pytest.raises(InternalError, match=str(path)):
        Database(path, migrations=[good, bad], application_id=APPLICATION_ID)

    with raw_db(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
    assert _tables(path) == {"a"}


def test_a_file_that_is_not_a_database_is_refused_clearly(paths: Paths) -> None:
    paths.data.mkdir(parents=True)
    junk = b"these are someone's notes, not a database\n" * 200
    paths.database.write_bytes(junk)

    with pytest.raises(IntegrityError) as info:
        Store(paths)

    message = info.value.message
    assert str(paths.database) in message
    assert "not a database" in message
    assert "move the file aside" in message
    assert paths.database.read_bytes() == junk


def test_another_programs_sqlite_database_is_refused(paths: Paths) -> None:
    paths.data.mkdir(parents=True)
    with raw_db(paths.database) as db:
        db.execute("CREATE TABLE contacts (name TEXT)")
        db.commit()

    with pytest.raises(IntegrityError, match="a SQLite database but not a KAMI one"):
        Store(paths)
    assert _tables(paths.database) == {"contacts"}


def test_a_database_from_a_newer_kamid_is_refused(paths: Paths) -> None:
    Store(paths).close()
    newer = len(MIGRATIONS) + 1
    with raw_db(paths.database) as db:
        db.execute(f"PRAGMA user_version = {newer}")

    with pytest.raises(InternalError) as info:
        Store(paths)

    assert f"schema version {newer}" in info.value.message
    assert "newer kamid" in info.value.message
    assert str(paths.database) in info.value.message


def test_a_damaged_database_is_refused(paths: Paths) -> None:
    with Store(paths) as store:
        for i in range(20):
            store.install(record_for(store, b"blob %d" % i, tool_id=f"dev.kami.t{i}"))
    # Closing checkpointed the WAL, so every table page is in the main file now.
    with paths.database.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 4096 * 2)

    with pytest.raises(IntegrityError, match="damaged"):
        Store(paths)


def test_a_closed_store_says_so(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(ShuttingDown):
        store.list()


def test_the_aot_index_records_replaces_and_forgets(store: Store, paths: Paths) -> None:
    assert store.aot_get("k1") is None

    store.aot_put("k1", SHA)
    store.aot_put("k2", SHA)
    store.aot_put("k1", OTHER_SHA)
    assert store.aot_get("k1") == OTHER_SHA
    assert store.aot_get("k2") == SHA

    store.aot_delete("k1")
    store.aot_delete("never-there")
    assert store.aot_get("k1") is None
    assert store.aot_get("k2") == SHA

    with pytest.raises(InvalidParams):
        store.aot_put("k3", "not a digest")
    assert store.aot_get("k3") is None


def test_only_the_db_module_imports_apsw() -> None:
    importers = []
    for path in sorted((REPO / "kamid").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "apsw" or n.startswith("apsw.") for n in names):
                importers.append(path.relative_to(REPO).as_posix())
    assert importers == ["kamid/store/_db.py"]
