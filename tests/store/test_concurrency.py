"""Several threads on one Store, the way trio.to_thread and the engine's workers use it."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from typing import TYPE_CHECKING

from kamid.protocol import NotFound
from tests.store._helpers import blob_files, raw_db, record_for

if TYPE_CHECKING:
    from kamid.protocol import Paths
    from kamid.store import Store

THREADS = 8
ROUNDS = 15


def test_threads_never_interleave_transactions(store: Store, paths: Paths) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        try:
            start.wait()
            own = f"dev.kami.t{n}"
            # Every thread also fights over one shared id and one shared blob.
            shared = "dev.kami.shared"
            for i in range(ROUNDS):
                own_data = b"own %d %d" % (n, i)
                store.install(record_for(store, own_data, tool_id=own, version=f"1.0.{i}"))
                store.install(record_for(store, b"common", tool_id=shared, version=f"{n}.{i}.0"))
                assert store.get(own) is not None
                found = store.get(shared)  # None when another thread just uninstalled it
                assert found is None or found.sha256 == hashlib.sha256(b"common").hexdigest()
                key = f"aot-{n}-{i % 3}"
                store.aot_put(key, hashlib.sha256(key.encode()).hexdigest())
                assert store.aot_get(key) == hashlib.sha256(key.encode()).hexdigest()
                store.list()
                if i % 5 == 4:
                    store.uninstall(own)
                    with contextlib.suppress(NotFound):  # another thread removed it first
                        store.uninstall(shared)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    records = store.list()
    assert store.count() == len(records)
    assert store.check() == []
    # Each tool points at a blob on disk, and no unused blob was left behind.
    assert blob_files(paths.blobs) == {r.sha256 for r in records}
    with raw_db(paths.database) as db:
        history = db.execute(
            "SELECT tool_id, count(*) FROM tool_versions WHERE removed_at IS NULL GROUP BY tool_id"
        ).fetchall()
    assert sorted(history) == sorted((r.id, 1) for r in records)
