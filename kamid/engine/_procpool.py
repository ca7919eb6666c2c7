"""A pool of worker processes running tool calls (``[engine] process_workers = N``).

Measured on 2 cores, two threads in one process run fewer calls per second than one
(wasmtime-py holds the GIL for much of a call); two processes run more. Each worker
(:mod:`._worker`) has its own engine over the shared AOT directory and runs one call at a
time; the daemon keeps the AOT index and every host function, which the worker asks for
over its socketpair while the call runs.

A worker that dies (a crash, the OOM killer) fails the call it was running with an
``internal_error`` and is replaced on the next call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import attrs
import trio

from kamid.protocol import CacheStatistics, InternalError, KamiError

from ._worker import (
    CANCEL_SIGNAL,
    MAX_FRAME,
    decode,
    encode,
    forwarded_host_methods,
    rebuild_error,
)

if TYPE_CHECKING:
    from pathlib import Path

    from kamid.hostapi import HostContext
    from kamid.sandbox import Limits, SandboxSpec

    from ._cache import AotIndex
    from ._outcome import CallOutcome
    from ._wasm import Pooling

__all__ = ["ProcessPool", "add_statistics"]

log = logging.getLogger("kamid.engine")

_HEADER = struct.Struct(">I")
#: How long a worker may take to start (import wasmtime, build its linker).
START_TIMEOUT_S = 60.0
#: Added to a call's own deadline before its worker is presumed hung and killed: the
#: worker may first have to load or compile the component.
HUNG_SLACK_S = 600.0
_INDEX_METHODS = frozenset({"aot_get", "aot_put", "aot_delete"})


class _Worker:
    def __init__(self, process: trio.Process, stream: trio.SocketStream) -> None:
        self.process = process
        self.stream = stream
        self.buffer = bytearray()
        self.pid = process.pid
        self.statistics = CacheStatistics()
        #: ``starting``, ``idle`` or ``busy``.
        self.state = "starting"

    async def send(self, message: Any) -> None:
        await self.stream.send_all(encode(message))

    async def receive(self) -> Any:
        while True:
            if len(self.buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self.buffer)
                if size > MAX_FRAME:
                    raise EOFError(f"a frame of {size} bytes")
                end = _HEADER.size + size
                if len(self.buffer) >= end:
                    data = bytes(self.buffer[_HEADER.size : end])
                    del self.buffer[:end]
                    return decode(data)
            chunk = await self.stream.receive_some(1 << 20)
            if not chunk:
                raise EOFError("the worker closed its socket")
            self.buffer += chunk

    async def close(self) -> None:
        """Closes the socket (the worker exits on EOF) and reaps the process."""
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
            with trio.move_on_after(5):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()

    def describe_exit(self) -> str:
        code = self.process.returncode
        if code is None:
            return "it stopped answering"
        if code < 0:
            with_name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            return f"it was killed by signal {with_name}"
        return f"it exited with status {code}"


class _Exchange:
    """One call's conversation with its worker: the only step a cancellation interrupts
    is waiting for the worker's next frame (``_Worker.receive`` keeps partial frames).

    Args:
        worker: the worker running the call.
        deadline: trio time past which the worker is presumed hung.
    """

    def __init__(self, worker: _Worker, deadline: float) -> None:
        self.worker = worker
        self.deadline = deadline
        self.cancelled = False

    async def receive(self) -> Any:
        """The worker's next frame.

        Raises:
            trio.TooSlowError: nothing came before the deadline.
        """
        if not self.cancelled:
            try:
                with trio.move_on_at(self.deadline):
                    return await self.worker.receive()
                raise trio.TooSlowError
            except trio.Cancelled:
                # Stop the guest, then hear the worker out: it answers within a tick.
                self.cancelled = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.worker.pid, CANCEL_SIGNAL)
        with trio.CancelScope(shield=True, deadline=self.deadline):
            return await self.worker.receive()
        raise trio.TooSlowError


class ProcessPool:
    """Runs :meth:`Engine.call` in ``size`` worker processes.

    Args:
        size: worker processes (calls at once).
        aot_dir, lru_capacity, tick_ms: the workers' engine settings (the daemon's own).
        aot_index: the daemon's AOT index; workers load only files recorded in it.
        pooling: the daemon's pooling settings; a worker keeps as much memory resident
            (and needs a single store: it runs one call at a time).
    """

    def __init__(
        self,
        size: int,
        *,
        aot_dir: Path,
        aot_index: AotIndex,
        lru_capacity: int,
        tick_ms: int,
        pooling: Pooling | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"process_workers must be at least 1 (got {size})")
        self.size = size
        self._aot_dir = aot_dir
        self._index = aot_index
        self._lru_capacity = lru_capacity
        self._tick_ms = tick_ms
        self._keep_resident = "-" if pooling is None else str(pooling.keep_resident)
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._retired = CacheStatistics()
        self._forwarded = forwarded_host_methods()
        self._starting = 0
        #: Components some worker has run: in a worker's memory (unless it evicted them).
        self.warm: set[str] = set()
        self._changed = trio.lowlevel.ParkingLot()
        self._closed = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Starts the workers in the background and keeps the pool until cancelled.

        Started at once; calls wait for a worker that is still starting. Cancellation
        closes every worker (each finishes the call it is running first).
        """
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.size):
                    nursery.start_soon(self._start_idle)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closed = True
            with trio.CancelScope(shield=True):
                for worker in list(self._all):
                    await worker.close()

    async def _start_idle(self) -> None:
        try:
            worker = await self._spawn()
        except KamiError as exc:
            log.error("%s", exc.message)
            return
        self._release(worker)

    async def _give_back(self, worker: _Worker) -> None:
        if self._closed:  # the pool closed while the call ran
            await self._discard(worker)
        else:
            self._release(worker)

    def _release(self, worker: _Worker) -> None:
        worker.state = "idle"
        self._idle.append(worker)
        self._changed.unpark_all()

    async def _spawn(self) -> _Worker:
        self._starting += 1
        try:
            return await self._start_worker()
        finally:
            self._starting -= 1
            self._changed.unpark_all()

    async def _start_worker(self) -> _Worker:
        parent, child = socket.socketpair()
        try:
            argv = [
                sys.executable,
                "-m",
                "kamid.engine._worker",
                str(child.fileno()),
                os.fspath(self._aot_dir),
                str(self._lru_capacity),
                str(self._tick_ms),
                self._keep_resident,
            ]
            process = await trio.lowlevel.open_process(
                argv, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        worker = _Worker(process, trio.SocketStream(trio.socket.from_stdlib_socket(parent)))
        self._all.add(worker)
        try:
            with trio.fail_after(START_TIMEOUT_S):
                hello = await worker.receive()
        except (EOFError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            await self._discard(worker)
            raise InternalError(
                f"a worker process (pid {worker.pid}) did not start: {worker.describe_exit()} "
                f"({exc}); see kamid's stderr for its traceback"
            ) from exc
        worker.statistics = hello[2]
        log.info("worker process %d ready", worker.pid)
        return worker

    async def _discard(self, worker: _Worker) -> None:
        """Drops ``worker`` for good; safe to await in a cancelled scope (close shields)."""
        self._all.discard(worker)
        self._retired = add_statistics(self._retired, worker.statistics, entries=False)
        await worker.close()

    async def _take(self) -> _Worker:
        while True:
            if self._idle:
                worker = self._idle.pop()
                worker.state = "busy"
                return worker
            if len(self._all) + self._starting < self.size:
                worker = await self._spawn()
                worker.state = "busy"
                return worker
            # A worker is still starting (the caller holds a capacity token, so no
            # other call owns it): wait until it is ready or has failed.
            await self._changed.park()

    async def call(
        self,
        sha256: str,
        wasm_path: Path,
        input: str,
        *,
        limits: Limits,
        host: HostContext,
        sandbox: SandboxSpec | None = None,
    ) -> CallOutcome:
        """Runs one call in a worker; the caller limits concurrency to :attr:`size`.

        Cancellation stops the call as in a thread: the worker gets
        :data:`~._worker.CANCEL_SIGNAL`, its guest stops at the next epoch tick, and the
        exchange is finished (shielded) so that the worker stays usable. The outcome
        (normally ``cancelled``) is then delivered and the cancellation takes effect at
        the caller's next checkpoint.

        Raises:
            KamiError: as :meth:`Engine.call` does; ``InternalError`` when the worker
                died during the call.
        """
        if self._closed:
            raise InternalError("the worker pool is closed; kamid is stopping")
        with trio.CancelScope(shield=True):
            worker = await self._take()
        call = _Exchange(worker, trio.current_time() + limits.timeout_ms / 1000 + HUNG_SLACK_S)
        try:
            reply = await self._exchange(call, sha256, wasm_path, input, limits, host, sandbox)
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._discard(worker)
            raise InternalError(
                f"the worker process running {host.tool_id} (pid {worker.pid}) died "
                f"during the call: {worker.describe_exit()}; the call did not complete. "
                "kamid starts a new worker; details are in its log",
                data={"worker_pid": worker.pid, "exit": str(exc)},
            ) from None
        except trio.TooSlowError:
            worker.process.kill()
            await self._discard(worker)
            raise InternalError(
                f"the worker process running {host.tool_id} (pid {worker.pid}) hung past "
                "the call's deadline and was killed; this is a KAMI bug, please report it"
            ) from None
        except BaseException:
            await self._discard(worker)
            raise
        await self._give_back(worker)
        kind, value, logs, host_calls, statistics = reply
        worker.statistics = statistics
        self.warm.add(sha256)
        host.logs[:] = logs
        host.host_calls = host_calls
        if kind == "ok":
            outcome: CallOutcome = value
            return outcome
        raise rebuild_error(value)

    async def _exchange(
        self,
        call: _Exchange,
        sha256: str,
        wasm_path: Path,
        input: str,
        limits: Limits,
        host: HostContext,
        sandbox: SandboxSpec | None,
    ) -> tuple[Any, ...]:
        worker = call.worker
        caps = (host.max_log_lines, host.max_line_chars)
        start_clock = getattr(host, "start_clock", None)
        if start_clock is not None:  # deadlines of host calls count from (about) now
            start_clock()
        request: tuple[Any, ...] = ("call", sha256, os.fspath(wasm_path), input, limits)
        with trio.CancelScope(shield=True):
            await worker.send((*request, host.tool_id, caps, sandbox))
        while True:
            message = await call.receive()
            kind = message[0]
            if kind in ("ok", "error"):
                result: tuple[Any, ...] = message
                return result
            # The worker waits for these answers; they are given even to a cancelled call.
            with trio.CancelScope(shield=True):
                if kind == "host":
                    await worker.send(await self._host_call(host, message[1], message[2]))
                elif kind == "index":
                    await worker.send(await self._index_call(message[1], message[2]))
                else:
                    raise EOFError(f"unexpected frame {kind!r}")

    async def _host_call(self, host: HostContext, name: str, args: tuple[Any, ...]) -> Any:
        from kamid.hostapi import HostError

        if name not in self._forwarded:
            return ("fail", f"{name} is not a host function")
        before = len(host.logs)
        try:
            value = await trio.to_thread.run_sync(getattr(host, name), *args)
        except HostError as exc:
            return ("host_error", exc.kind, exc.message)
        except Exception as exc:
            log.exception("host function %s of %s failed", name, host.tool_id)
            return ("fail", repr(exc))
        lines = [(line.level, line.message) for line in host.logs[before:]]
        return ("return", (value, lines))

    async def _index_call(self, name: str, args: tuple[Any, ...]) -> Any:
        if name not in _INDEX_METHODS:
            return ("fail", f"{name} is not an index method")
        try:
            value = await trio.to_thread.run_sync(getattr(self._index, name), *args)
        except Exception as exc:
            log.exception("AOT index %s failed", name)
            return ("fail", repr(exc))
        return ("return", value)

    def workers(self) -> dict[int, str]:
        """Pid -> ``starting``, ``idle`` or ``busy`` (running a call), for each worker."""
        return {worker.pid: worker.state for worker in self._all}

    def statistics(self) -> CacheStatistics:
        """The workers' caches together (and those of workers since replaced)."""
        total = self._retired
        for worker in self._all:
            total = add_statistics(total, worker.statistics)
        return total


def add_statistics(
    a: CacheStatistics, b: CacheStatistics, *, entries: bool = True
) -> CacheStatistics:
    """``a + b``, field by field; ``entries=False`` keeps ``a``'s entries and capacity."""
    fields = {}
    for field in attrs.fields(CacheStatistics):
        name = field.name
        if name in ("entries", "capacity") and not entries:
            fields[name] = getattr(a, name)
        else:
            fields[name] = getattr(a, name) + getattr(b, name)
    fields["compile_ms_total"] = round(fields["compile_ms_total"], 3)
    return CacheStatistics(**fields)
