"""The audit log's writer: entries queued on the trio loop, written in batches off it.

Recording is a list append on the loop (the exec path pays microseconds, never a
database write); :meth:`AuditRecorder.run` writes what accumulated in one transaction
in a worker thread, then waits for more. Reading the log flushes first, so a reader
always sees every action that finished before it asked.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from kamid.protocol import KamiError, ShuttingDown
from kamid.store import AuditRow

if TYPE_CHECKING:
    from kamid.hostapi import HostContext
    from kamid.protocol import CallerInfo, Usage
    from kamid.server import Peer
    from kamid.store import SecurityTables

__all__ = ["AuditRecorder", "call_row", "input_digest"]

log = logging.getLogger("kamid.audit")

#: Pending entries kept while the database cannot be written; older ones are dropped
#: (and counted in the log) beyond this, so a broken disk cannot exhaust memory.
MAX_PENDING = 100_000
#: Longest error message kept per entry.
MAX_ERROR_CHARS = 500


def input_digest(text: str) -> str:
    """sha256 of the input JSON text as the tool received it (never the input itself)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class AuditRecorder:
    """Queues audit rows and writes them in batches.

    Args:
        tables: where rows go (the store's :class:`SecurityTables`).
        batch_max: rows per transaction at most.
        linger_s: how long the first row of a batch waits for company. Each transaction
            costs an fsync (synchronous=FULL) under the store's lock, which a call's own
            store lookups would queue behind if every call committed its row alone.
    """

    def __init__(
        self, tables: SecurityTables, *, batch_max: int = 512, linger_s: float = 0.05
    ) -> None:
        self._tables = tables
        self._batch_max = batch_max
        self._linger_s = linger_s
        self._pending: list[AuditRow] = []
        self._wake = trio.Event()
        self._urgent = trio.Event()
        self._writing = False
        self._idle = trio.Event()
        self._idle.set()
        self._running = False
        self._dropped = 0
        self._limiter = trio.CapacityLimiter(1)
        #: Rows written since start (statistics, tests).
        self.written = 0

    # Recording (on the trio loop, never blocks).

    def record(self, row: AuditRow) -> None:
        """Queues ``row``; it reaches the database within one batch."""
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(0)
            self._dropped += 1
        self._pending.append(row)
        if self._idle.is_set():
            self._idle = trio.Event()
        self._wake.set()
        if len(self._pending) >= self._batch_max:
            self._urgent.set()

    def record_from_thread(self, row: AuditRow) -> None:
        """:meth:`record` from a thread other than trio's; call :meth:`wake` soon after
        on the trio thread.

        The row is pending at once: a flush that starts after this returns waits for
        it (until :meth:`wake`, by checking again at each checkpoint).
        """
        self._pending.append(row)  # one bytecode: atomic under the GIL

    def wake(self) -> None:
        """Lets the writer see rows :meth:`record_from_thread` added (trio thread)."""
        if len(self._pending) > MAX_PENDING:
            excess = len(self._pending) - MAX_PENDING
            del self._pending[:excess]
            self._dropped += excess
        if self._idle.is_set():
            self._idle = trio.Event()
        self._wake.set()
        if len(self._pending) >= self._batch_max:
            self._urgent.set()

    def record_action(
        self,
        *,
        action: str,
        tool: str,
        version: str = "",
        sha256: str = "",
        peer: Peer | None,
        error: KamiError | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Queues the row of an install, uninstall, grant or revoke."""
        self.record(_row(action, tool, version, sha256, peer, error, detail=detail))

    # Writing.

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Writes queued rows until cancelled; on cancellation, writes what is left.

        Started at once. The final write is shielded, so a stopping daemon still records
        the calls it served (it runs before the store closes).
        """
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                with trio.move_on_after(self._linger_s):
                    await self._urgent.wait()  # a full batch, or a reader, cuts it short
                self._urgent = trio.Event()
                await self._write_pending(retry=True)
        finally:
            self._running = False
            with trio.CancelScope(shield=True):
                await self._write_pending(retry=False)

    async def flush(self) -> None:
        """Returns once every row recorded before the call is in the database.

        Writes itself when :meth:`run` is not running (a service used without a daemon).
        """
        if not self._running:
            await self._write_pending(retry=False)
            return
        self._urgent.set()
        while self._pending or self._writing:
            await self._idle.wait()

    async def _write_pending(self, *, retry: bool) -> None:
        while self._pending and not self._writing:
            batch = self._pending[: self._batch_max]
            del self._pending[: len(batch)]
            self._writing = True
            try:
                await trio.to_thread.run_sync(
                    self._tables.append_audit, batch, limiter=self._limiter
                )
                self.written += len(batch)
            except KamiError as exc:
                log.error("cannot write %d audit rows: %s", len(batch), exc.message)
                if not retry or isinstance(exc, ShuttingDown):
                    continue  # the store is gone: they are lost, and the log says so
                # Keep them for the next round; the store may be briefly busy or full.
                self._pending[:0] = batch
                self._writing = False
                await trio.sleep(1.0)
                continue
            finally:
                self._writing = False
            if self._dropped:
                log.error("dropped %d audit rows: the audit log could not keep up", self._dropped)
                self._dropped = 0
        if not self._pending and not self._writing:
            self._idle.set()


def call_row(
    *,
    action: str,
    tool: str,
    version: str,
    sha256: str,
    peer: Peer | None,
    caller: CallerInfo | None,
    input_text: str,
    usage: Usage | None,
    host: HostContext | None,
    error: KamiError | None = None,
) -> AuditRow:
    """The row of one exec (``exec``) or one ``wasm.run`` (``run``): pure, any thread."""
    detail: dict[str, Any] | None = None
    if error is not None and isinstance(error.data.get("limit"), str):
        detail = {"limit": error.data["limit"], "value": error.data.get("value")}
    if usage is None and error is not None and isinstance(error.data.get("usage"), dict):
        usage_dict: dict[str, Any] | None = error.data["usage"]
    else:
        usage_dict = attrs.asdict(usage) if usage is not None else None
    return _row(
        action,
        tool,
        version,
        sha256,
        peer,
        error,
        client=caller.client if caller else None,
        profile=caller.profile if caller else None,
        input_sha256=input_digest(input_text),
        usage=usage_dict,
        hosts=list(getattr(host, "hosts", None) or []),
        detail=detail,
    )


def _row(
    action: str,
    tool: str,
    version: str,
    sha256: str,
    peer: Peer | None,
    error: KamiError | None,
    **extra: Any,
) -> AuditRow:
    return AuditRow(
        at=time.time(),
        action=action,
        tool_id=tool,
        version=version,
        sha256=sha256,
        uid=peer.uid if peer else None,
        pid=peer.pid if peer else None,
        outcome="ok" if error is None else error.kind,
        error=None if error is None else error.message[:MAX_ERROR_CHARS],
        **extra,
    )
