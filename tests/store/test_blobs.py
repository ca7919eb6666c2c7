"""Content-addressed blobs: layout, idempotence, tamper detection, leftovers, permissions."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TYPE_CHECKING

import pytest

from kamid.protocol import IntegrityError, InvalidParams
from kamid.store import BlobRef, Store
from tests.store._helpers import blob_files, record_for

if TYPE_CHECKING:
    from pathlib import Path

    from kamid.protocol import Paths

DATA = b"\0asm" + bytes(range(256)) * 400


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _overwrite(path: Path, data: bytes) -> None:
    path.chmod(0o600)
    path.write_bytes(data)


def test_put_blob_is_content_addressed_and_idempotent(store: Store, paths: Paths) -> None:
    sha = hashlib.sha256(DATA).hexdigest()

    ref = store.put_blob(DATA)

    assert ref == BlobRef(sha, len(DATA), paths.blobs / sha[:2] / sha)
    assert store.blob_path(sha) == ref.path
    assert ref.path.read_bytes() == DATA
    assert _mode(ref.path) == 0o400
    assert store.put_blob(DATA) == ref
    assert sorted(p.name for p in paths.blobs.iterdir()) == [sha[:2]]


def test_put_blob_replaces_a_corrupt_copy(store: Store) -> None:
    ref = store.put_blob(DATA)
    _overwrite(ref.path, b"garbage")

    assert store.put_blob(DATA) == ref

    assert ref.path.read_bytes() == DATA
    store.verify_blob(ref.sha256)


def test_a_tampered_blob_is_detected(store: Store) -> None:
    record = record_for(store, DATA)
    store.install(record)
    _overwrite(store.blob_path(record.sha256), DATA[:-1] + b"!")

    with pytest.raises(IntegrityError) as info:
        store.verify_blob(record.sha256)

    assert info.value.message == (
        f"blob {record.sha256} was modified on disk; reinstall the tool with `kamictl install`"
    )
    assert store.check() == [info.value.message]


def test_a_missing_blob_is_detected(store: Store) -> None:
    record = record_for(store, DATA)
    store.install(record)
    store.blob_path(record.sha256).unlink()

    with pytest.raises(IntegrityError, match=r"missing.*kamictl install"):
        store.verify_blob(record.sha256)


def test_a_sound_store_passes_its_check(store: Store) -> None:
    store.install(record_for(store, DATA))
    assert store.check() == []


@pytest.mark.parametrize(
    "bad", ["../../../etc/passwd", "A" * 64, "a" * 63, "a" * 64 + "/", "g" * 64, ""]
)
def test_blob_path_refuses_anything_but_a_digest(store: Store, bad: str) -> None:
    with pytest.raises(InvalidParams, match="not a sha256 digest"):
        store.blob_path(bad)


def test_opening_removes_what_a_crash_left_behind(paths: Paths) -> None:
    with Store(paths) as store:
        kept = record_for(store, DATA)
        store.install(kept)
        orphan = store.put_blob(b"written, but its install never committed")
    temp = paths.blobs / ".tmp-abandoned"
    temp.write_bytes(b"half a blob")
    stranger = paths.blobs / "README"
    stranger.write_text("not ours")

    with Store(paths) as store:
        assert blob_files(paths.blobs) == {kept.sha256}
        assert not temp.exists()
        assert not orphan.path.exists()
        assert stranger.exists()
        store.verify_blob(kept.sha256)


def test_directories_and_database_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        from kamid.protocol import Paths

        paths = Paths.under(tmp_path / "home")
        paths.data.mkdir(parents=True, mode=0o755)
        with Store(paths):
            pass
    finally:
        os.umask(old_umask)

    assert _mode(paths.data) == 0o700
    assert _mode(paths.blobs) == 0o700
    assert _mode(paths.database) == 0o600


def test_opening_warns_about_a_tool_whose_blob_is_gone(
    paths: Paths, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(paths) as store:
        record = record_for(store, DATA)
        store.install(record)
    store.blob_path(record.sha256).unlink()

    with caplog.at_level("WARNING", logger="kamid.store"), Store(paths):
        pass

    assert f"tool {record.id}: its blob {record.sha256} is missing" in caplog.text
