"""Installs and uninstalls tools in a loop until killed: the victim of the crash-safety test.

Usage: ``python _crash_child.py HOME SEED``. Prints ``ready`` once the store is open, then
``begin <id> <sha256|->`` before and ``done <id> <sha256|->`` after each operation (``-``
means uninstall), flushing each line, so the parent knows what had committed when it
killed us and what may or may not have.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import sys
from pathlib import Path

from kamid.protocol import NotFound, Paths
from kamid.store import Store, ToolRecord

MIB = 1024 * 1024


def main() -> None:
    home, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    # Blobs several tools share, so replacing and uninstalling exercise the shared-blob paths.
    shared = [rng.randbytes(MIB + n) for n in range(2)]
    store = Store(Paths.under(home))
    print("ready", flush=True)
    for i in range(1_000_000):
        tool_id = f"dev.crash.t{rng.randrange(4)}"
        if rng.random() < 0.15:
            print(f"begin {tool_id} -", flush=True)
            with contextlib.suppress(NotFound):
                store.uninstall(tool_id)
            print(f"done {tool_id} -", flush=True)
            continue
        if rng.random() < 0.3:
            data = rng.choice(shared)
        else:
            data = rng.randbytes(rng.randrange(1, 4) * MIB + rng.randrange(4096))
        sha256 = hashlib.sha256(data).hexdigest()
        print(f"begin {tool_id} {sha256}", flush=True)
        blob = store.put_blob(data)
        store.install(
            ToolRecord(
                id=tool_id,
                name=tool_id.rsplit(".", 1)[-1],
                version=f"1.0.{i}",
                description="crash test",
                sha256=blob.sha256,
                size=blob.size,
                manifest={"i": i},
                grants={},
                imports=[],
                source="crash",
                installed_at=float(i),
            )
        )
        print(f"done {tool_id} {sha256}", flush=True)


if __name__ == "__main__":
    main()
