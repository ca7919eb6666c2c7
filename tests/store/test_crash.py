"""``kill -9`` at random moments of installs leaves either no tool or a complete one."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kamid.protocol import Paths
from kamid.store import Store
from tests.store._helpers import blob_files, raw_db

if TYPE_CHECKING:
    from subprocess import Popen

CHILD = Path(__file__).with_name("_crash_child.py")
ROUNDS = 8


def _kill_at_random(proc: Popen[str], rng: random.Random, *, wait_ready: bool) -> str:
    """SIGKILLs the child after a random delay; returns everything it printed."""
    assert proc.stdout is not None
    assert proc.stderr is not None
    if wait_ready:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        time.sleep(rng.uniform(0.02, 0.6))
    else:
        # Some kills land while the child imports or opens (and cleans up) the store.
        time.sleep(rng.uniform(0.0, 0.3))
    assert proc.poll() is None, f"the child exited by itself:\n{proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return ("ready\n" if wait_ready else "") + out


@pytest.mark.timeout(60)
def test_kill_9_at_any_moment_leaves_a_consistent_store(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path / "home")
    # Reproducible timing, not secrets; the seed is in every failure message.
    seed = random.randrange(2**32)  # noqa: S311
    rng = random.Random(seed)  # noqa: S311
    # What each tool id pointed at after the last operation known to have committed.
    committed: dict[str, str | None] = {}
    operations = interrupted = 0

    for round_ in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(paths.data.parent), str(seed + round_)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out = _kill_at_random(proc, rng, wait_ready=round_ % 4 != 3)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        in_flight: tuple[str, str | None] | None = None
        # Each line was written whole; anything after the last newline is not a line.
        for line in out.split("\n")[:-1]:
            if line == "ready":
                continue
            fields = line.split()
            # Seen once in many runs: an empty line. Say what came, with the seed.
            assert len(fields) == 3, f"seed {seed}: unexpected line {line!r} in {out[-2000:]!r}"
            word, tool_id, sha = fields
            target = None if sha == "-" else sha
            if word == "begin":
                in_flight = (tool_id, target)
            else:
                committed[tool_id] = target
                in_flight = None
                operations += 1

        interrupted += in_flight is not None
        context = f"seed {seed}, round {round_}, in flight {in_flight}"
        with Store(paths) as store:
            actual = {r.id: r.sha256 for r in store.list()}
            for tool_id in committed.keys() | actual.keys():
                allowed = {committed.get(tool_id)}
                if in_flight is not None and in_flight[0] == tool_id:
                    allowed.add(in_flight[1])
                assert actual.get(tool_id) in allowed, f"{tool_id}: {context}"
            # Every row's blob is on disk, whole; opening removed every leftover.
            for sha in actual.values():
                data = store.blob_path(sha).read_bytes()
                assert hashlib.sha256(data).hexdigest() == sha, context
            assert blob_files(paths.blobs) == set(actual.values()), context
            assert not list(paths.blobs.glob(".tmp-*")), context
            assert store.check() == [], context
        with raw_db(paths.database) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], context
            assert db.execute("PRAGMA foreign_key_check").fetchall() == [], context
            # Row and history change in one transaction: the open history entry of each tool
            # is the installed version, and no uninstalled tool has one.
            current = db.execute(
                "SELECT tool_id, sha256 FROM tool_versions WHERE removed_at IS NULL"
            ).fetchall()
            assert sorted(current) == sorted(actual.items()), context
        committed = {tool_id: actual.get(tool_id) for tool_id in committed.keys() | actual}

    # The kills must have interrupted real work, not idle children.
    assert operations >= ROUNDS, f"seed {seed}: only {operations} operations completed"
    assert interrupted >= 2, f"seed {seed}: only {interrupted} kills hit an operation"
