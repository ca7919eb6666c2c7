"""The JSON-RPC 2.0 server on a Unix socket: one JSON object per line, many requests in
flight per connection, same-uid peers only.

Shutdown uses two nurseries: the accept loop stops first, then connections drain their
in-flight requests under a grace deadline, and only then are they cancelled.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import select
import socket as stdsocket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from kamid.protocol import (
    METHODS,
    FrameTooLarge,
    InternalError,
    InvalidRequest,
    KamiError,
    LineBuffer,
    PolicyDenied,
    RequestTimeout,
    ShuttingDown,
    decode_frame,
    encode_frame,
    make_error,
    make_notification,
    make_result,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from kamid.config import ServerConfig

__all__ = [
    "ConnectionLease",
    "Dispatcher",
    "FastLane",
    "LineHandler",
    "Peer",
    "RequestContext",
    "Server",
    "bind_unix_socket",
]

log = logging.getLogger("kamid.server")

#: Requests one connection may have in flight before the server stops reading from it.
MAX_IN_FLIGHT_PER_CONNECTION = 64
#: A peer that does not read its answers for this long is disconnected.
SEND_TIMEOUT_S = 30.0
#: A call thread holding a :class:`ConnectionLease` looks at its terms this often while
#: it waits for the next request (a linger longer than this is waited in slices).
LEASE_SLICE_S = 0.02
#: How often the trio side looks for a hang-up of a connection lent to a call thread,
#: and runs what its thread left for it (:meth:`ConnectionLease.later`).
LEASE_WATCH_S = 0.05
#: Methods still answered while the daemon drains.
_ALLOWED_WHILE_DRAINING = frozenset({"daemon.status", "daemon.stop"})


@attrs.frozen
class Peer:
    pid: int
    uid: int
    gid: int


class ProgressFn(Protocol):
    def __call__(
        self, stage: str, message: str, *, done: int | None = None, total: int | None = None
    ) -> Awaitable[None]: ...


class RequestContext:
    """What a handler knows about the request it serves."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    @property
    def peer(self) -> Peer:
        return self._connection.peer

    async def notify(self, method: str, params: Any) -> None:
        """Sends a notification on the requester's connection; a gone peer is ignored."""
        await self._connection.send(make_notification(method, params))

    def progress(self, token: str | None) -> ProgressFn:
        """A ``progress`` notifier for a request that passed ``token``; a no-op without one."""

        async def notify_progress(
            stage: str, message: str, *, done: int | None = None, total: int | None = None
        ) -> None:
            if token is None:
                return
            params: dict[str, Any] = {"token": token, "stage": stage, "message": message}
            if done is not None:
                params.update(done=done, total=total)
            await self.notify("progress", params)

        return notify_progress

    async def send(self, message: Any) -> None:
        """Sends one raw JSON-RPC frame (an upgraded connection's own protocol)."""
        await self._connection.send(message)

    def reply_from_thread(self, *messages: Any) -> None:
        """Sends frames from any thread, in order and unbroken by other frames: the
        answer of a request taken by a :class:`FastLane` (or an upgraded connection's
        :meth:`LineHandler.offer`), with whatever notifications go before it.

        Written at once when the socket takes them (the usual case); otherwise the rest
        is queued and the trio side finishes it, still before any later frame.
        """
        self._connection.write_threadsafe(b"".join(map(encode_frame, messages)))

    def done(self) -> None:
        """A request taken by a :class:`FastLane` is over (trio thread): its connection
        may take another one, and a stopping daemon stops waiting for it."""
        self._connection.fast_request_done()

    def lease(self) -> ConnectionLease | None:
        """Lends the connection's reading to the thread that answers this fast-lane
        request (trio thread), if it has nothing else to do: nothing more was received,
        and no other request is in flight but fast-lane calls. None otherwise; see
        :class:`ConnectionLease`."""
        return self._connection.lend()

    def on_disconnect(self, cancel: Callable[[], None]) -> Callable[[], None]:
        """Calls ``cancel`` when the connection ends, as its requests' tasks are
        cancelled then: for work that runs without a task (a fast-lane call). Returns
        the function that forgets it (trio thread)."""
        cancels = self._connection.cancels
        cancels.add(cancel)
        return lambda: cancels.discard(cancel)

    @property
    def draining(self) -> bool:
        """The daemon is stopping: new work should be refused."""
        return self._connection.server.draining

    def upgrade(self, handler: LineHandler) -> None:
        """Hands this connection to ``handler`` once this request's answer is sent.

        From then on every line the peer sends goes to ``handler.serve`` instead of the
        JSON-RPC dispatcher, without the idle timeout (a long-lived session waits as long
        as its peer likes). The peer must wait for the answer before sending such lines.
        """
        self._connection.upgrade = handler

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Counts work an upgraded connection does as a request in flight, so a stopping
        daemon lets it finish within its grace period."""
        release = self.hold()
        try:
            yield
        finally:
            release()

    def hold(self) -> Callable[[], None]:
        """:meth:`in_flight` for work that ends in a callback: counted until the
        returned function is called (once, on the trio thread)."""
        server = self._connection.server
        server._request_begin()
        return server._request_done


class LineHandler(Protocol):
    async def serve(self, lines: trio.MemoryReceiveChannel[bytes], ctx: RequestContext) -> None:
        """Serves an upgraded connection's lines; the connection closes when it returns.

        Cancelled when the peer disconnects or the daemon stops.
        """
        ...

    def offer(self, line: bytes) -> bool:
        """Sees each line first, on the connection's reader: True if it took the line
        (and answers it by itself, e.g. with ``reply_from_thread``), False to have it
        queued for :meth:`serve` in order."""
        ...


class FastLane(Protocol):
    #: Bytes every request it may take contains (``b'"tools.exec"'``): other lines are
    #: not even parsed twice.
    marker: bytes

    def collect(self) -> None:
        """Runs the trio-side ends of the requests it answered since the last time (a
        call thread leaves them for the next request instead of waking trio for them);
        called whenever a connection has read something. Cheap when there are none."""
        ...

    def offer(self, message: dict[str, Any], ctx: RequestContext) -> bool:
        """Takes a request whose whole answer it can produce without trio (True), or
        leaves it to the dispatcher (False, with nothing changed).

        A taken request must end with ``ctx.reply_from_thread(answer)`` and then
        ``ctx.done()`` on the trio thread. Only well-formed requests with an id are
        offered, never while the daemon drains. Its thread may go on with the
        connection's next requests under ``ctx.lease()`` (:class:`ConnectionLease`).
        """
        ...


class Dispatcher(Protocol):
    async def handle(self, method: str, params: Any, ctx: RequestContext) -> Any:
        """Returns the JSON-ready result or raises :class:`KamiError`."""
        ...


def _peer_credentials(sock: trio.socket.SocketType) -> Peer:
    peercred = getattr(stdsocket, "SO_PEERCRED", None)
    if peercred is not None:  # Linux
        fmt = "3i"
        raw = sock.getsockopt(stdsocket.SOL_SOCKET, peercred, struct.calcsize(fmt))
        pid, uid, gid = struct.unpack(fmt, raw)
        return Peer(pid=pid, uid=uid, gid=gid)
    # BSD/macOS: LOCAL_PEERCRED needs xucred parsing; until then only the owner's uid
    # can reach the 0700 socket directory, which is the check that matters.
    return Peer(pid=0, uid=os.getuid(), gid=os.getgid())


def bind_unix_socket(path: Path) -> trio.socket.SocketType:
    """Creates the listening socket at ``path`` in a 0700 directory, itself 0600.

    A leftover socket file from a dead daemon is removed; the caller holds the home's
    lock, so no live daemon can own it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        path.unlink()
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        # The socket exists before chmod could run; the umask closes that window.
        sock._sock.bind(os.fspath(path))  # type: ignore[attr-defined]  # sync bind, no thread
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


async def _refuse(stream: trio.SocketStream, error: KamiError) -> None:
    """Answers with ``error`` and closes so that the peer can still read the answer.

    Closing a Unix socket with unread input resets it, and the peer would lose the error;
    so half-close, swallow what it sent for a moment, then close.
    """
    with trio.move_on_after(1.0):
        try:
            await stream.send_all(encode_frame(make_error(None, error)))
            await stream.send_eof()
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await stream.aclose()


def _is_request(message: Any) -> bool:
    """A JSON-RPC 2.0 request with an id, which the fast lane may be offered."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return False
    request_id = message.get("id")
    return isinstance(request_id, (int, str)) and not isinstance(request_id, bool)


class ConnectionLease:
    """A connection's reading, lent to the call thread that answers a fast-lane request
    when the connection has nothing else to do, so that the client's next request runs
    without waking trio at all.

    A hot client sends its next call as soon as it reads an answer. Through trio, that
    request costs a wake-up of the trio thread, framing, decoding, admission and a
    hand-over to a call thread: 0.3-0.4 ms on a 0.6 ms call (tests/benchmarks/README.md).
    Under a lease the call thread waits ``[server].lease_linger_ms`` (2 ms) for the next
    line and, when it is one whole request it may run (:meth:`next_request`), runs it
    itself.

    Anything else ends the lease, handing what was read back to trio, which then serves
    it exactly as if it had read it itself: a partial or oversized frame, more than one
    line, EOF, bad JSON, another method or tool, nothing within the linger. The thread
    also ends it when the daemon drains, the peer hangs up or answers queue up unread
    (:attr:`stopping`), and whenever the lane's own terms fail (``KamiService._serve_lease``).

    Trio holds the connection meanwhile (:meth:`_Connection.serve` waits for the lease);
    every :data:`LEASE_WATCH_S` it looks for a hang-up and cancels the running call as it
    would cancel a request's task. The lease counts as a request in flight, so a stopping
    daemon waits for it within its grace period.
    """

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._fd = connection.stream.socket.fileno()
        config = connection.server.config
        self._max_frame = config.max_frame_bytes
        self._linger_s = config.lease_linger_ms / 1000
        # Woken by interrupt(): someone needs what the lease holds, now.
        self._wake_r, self._wake_w = os.pipe()  # not inheritable, as Python makes them
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        self._hung_up_poll = select.poll()  # hang-ups only: it never reads
        self._hung_up_poll.register(
            self._fd, select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
        )
        self._lock = threading.Lock()
        self._cancel: Callable[[], None] | None = None
        self._unread = b""
        #: The peer hung up (set by trio); the thread ends the lease at its next request.
        self.hung_up = False
        #: Set on the trio thread once the call thread has given the connection back.
        self.returned = trio.Event()
        #: What the thread read and did not run, for trio to serve (set on return).
        self.handed_back = b""
        self._on_return: list[Callable[[], None]] = []
        self._later: collections.deque[Callable[[], None]] = collections.deque()

    # The call thread's side.
    @property
    def stopping(self) -> bool:
        """The lease must end: the peer hung up, the daemon drains, or answers wait
        for the peer to read them (trio handles back-pressure)."""
        connection = self._connection
        return (
            self.hung_up
            or connection.server.draining
            or connection._closed
            or connection._writer.backlogged
        )

    def next_request(self, hold: Callable[[], bool]) -> dict[str, Any] | None:
        """The next request if exactly one whole, well-formed line with an id arrives
        within ``[server].lease_linger_ms``, else None: end the lease then. Until
        :meth:`take` the line stays the connection's, handed back by :meth:`end`.

        ``hold()`` says whether the lease may go on (the lane's terms: nobody waits for
        its slot or thread, the tool has not changed); it and :attr:`stopping` are
        checked at least every :data:`LEASE_SLICE_S` while waiting, and once more when
        the line has come."""
        if self._unread:
            return None
        deadline = time.monotonic() + self._linger_s
        while True:
            if self.stopping or not hold():
                return None
            wait = min(deadline - time.monotonic(), LEASE_SLICE_S)
            if wait <= 0:
                return None
            events = self._poll.poll(wait * 1000)
            if any(fd == self._fd for fd, _ in events):
                break
            if events:  # interrupted: look at the terms again
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
        try:
            data = os.read(self._fd, 65536)
        except OSError:  # nothing after all, or a reset: trio's next read sees which
            return None
        self._unread = data
        if self.stopping or not hold():
            return None
        # One line, whole, within the limit; else trio's LineBuffer takes it all.
        if not data.endswith(b"\n") or data.find(b"\n") != len(data) - 1:
            return None
        if len(data) - 1 > self._max_frame:
            return None
        try:
            message = decode_frame(data)
        except KamiError:
            return None
        return message if _is_request(message) else None

    def take(self) -> None:
        """The thread runs the request :meth:`next_request` gave (answering it with
        :meth:`reply`): it is not handed back."""
        self._unread = b""

    def running(self, cancel: Callable[[], None] | None) -> None:
        """The cancel function of the call the thread runs now (None once it is over):
        a hang-up calls it."""
        with self._lock:
            self._cancel = cancel
        if cancel is not None and self.hung_up:
            cancel()

    @property
    def busy(self) -> bool:
        """A call runs under the lease now (any thread; a hint)."""
        return self._cancel is not None

    def reply(self, data: bytes) -> None:
        """Sends a taken request's encoded answer."""
        self._connection.write_threadsafe(data)

    def later(self, callback: Callable[[], None]) -> None:
        """Has ``callback()`` run on the trio thread within :data:`LEASE_WATCH_S`, or when
        the lease ends (for what a call leaves to trio: its metrics, counters, wake-ups),
        without a wake-up per call."""
        self._later.append(callback)

    def end(self) -> None:
        """Gives the connection back to trio with what was read and not taken (once,
        from the call thread; nothing more may be read or sent under this lease)."""
        unread, self._unread = self._unread, b""
        with contextlib.suppress(trio.RunFinishedError):
            self._connection.token.run_sync_soon(self._give_back, unread)

    # Either side.
    def interrupt(self) -> None:
        """Has the thread look at the lease's terms now rather than when its wait for
        the next request ends (any thread): a call waits for its slot or thread."""
        with self._lock:
            if self._wake_w >= 0:
                with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                    os.write(self._wake_w, b"!")

    # The trio side.
    def on_return(self, callback: Callable[[], None]) -> None:
        """Runs ``callback()`` on the trio thread when the lease ends (trio thread)."""
        self._on_return.append(callback)

    def _give_back(self, unread: bytes) -> None:
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        self.handed_back = unread
        self.returned.set()
        self.run_later()
        for callback in self._on_return:
            try:
                callback()
            except Exception:
                log.exception("a connection lease's return callback failed")

    def run_later(self) -> None:
        """Runs what the thread left with :meth:`later` so far (trio thread)."""
        while self._later:
            try:
                self._later.popleft()()
            except Exception:
                log.exception("a callback a connection lease left for trio failed")

    def peer_gone(self) -> bool:
        """The peer hung up or shut its end for writing (trio thread; does not read)."""
        return bool(self._hung_up_poll.poll(0))

    def stop(self) -> None:
        """Cancels the running call and ends the lease at the thread's next request
        (trio thread)."""
        self.hung_up = True
        with self._lock:
            cancel = self._cancel
        if cancel is not None:
            cancel()


class _Writer:
    """A connection's outgoing bytes, written from the trio thread or a call thread.

    Each frame is written whole or queued whole behind what is already queued, under
    one lock, so frames never interleave. Once closed (before the socket's descriptor
    is), writes are dropped: a late answer never reaches a reused descriptor.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._backlog = bytearray()
        self.closed = False

    def write(self, data: bytes) -> bool:
        """Writes what the socket takes now; True when nothing is left queued."""
        with self._lock:
            if self.closed:
                return True
            if self._backlog:
                self._backlog += data
                return False
            self._backlog += data[self._send(data) :]
            return not self._backlog

    @property
    def backlogged(self) -> bool:
        """Bytes wait for the peer to read (any thread; a hint, not under the lock)."""
        return bool(self._backlog)

    def flush(self) -> bool:
        """Writes queued bytes; True when none are left."""
        with self._lock:
            if self._backlog and not self.closed:
                del self._backlog[: self._send(self._backlog)]
            return self.closed or not self._backlog

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._backlog.clear()

    def _send(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:  # the peer is gone; its reader sees EOF and closes
            self.closed = True
            self._backlog.clear()
            return len(data)


class _Connection:
    def __init__(self, server: Server, stream: trio.SocketStream, peer: Peer) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        self.in_flight = 0
        self._send_lock = trio.Lock()
        self._closed = False
        self._slots = trio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
        #: Set by :meth:`RequestContext.upgrade`; ``_lines`` feeds it once it serves.
        self.upgrade: LineHandler | None = None
        self._lines: trio.MemorySendChannel[bytes] | None = None
        self._nursery: trio.Nursery | None = None
        self._writer = _Writer(stream.socket.fileno())
        #: Stops work of this connection's that has no task (see on_disconnect).
        self.cancels: set[Callable[[], None]] = set()
        self.token = trio.lowlevel.current_trio_token()
        #: The request being offered to the fast lane may take a lease (see lend).
        self._leasable = False
        self._lease: ConnectionLease | None = None
        #: Of in_flight, the requests a fast lane took (they answer without trio).
        self._fast_in_flight = 0

    async def send(self, message: Any) -> None:
        if self._closed:
            return
        if not self._writer.write(encode_frame(message)):
            await self._drain()

    async def _drain(self) -> None:
        """Writes the queued bytes as the peer reads them; drops a peer that stops."""
        async with self._send_lock:  # one task waits for the socket at a time
            try:
                with trio.fail_after(SEND_TIMEOUT_S):
                    while not self._writer.flush():
                        await trio.lowlevel.wait_writable(self.stream.socket)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                if not self._closed:
                    log.info("peer pid=%s stopped reading; dropping its connection", self.peer.pid)
                await self._close()

    async def _close(self) -> None:
        self._closed = True
        self._writer.close()  # before the descriptor goes: late answers are dropped
        if self._lease is not None:  # a call thread still reads the descriptor
            await self._outlast(self._lease)
        await self.stream.aclose()

    def write_threadsafe(self, data: bytes) -> None:
        if not self._writer.write(data):
            self.token.run_sync_soon(self._start_drain)

    def _start_drain(self) -> None:
        if self._nursery is not None and not self._closed:
            with contextlib.suppress(RuntimeError):  # the connection is closing
                self._nursery.start_soon(self._drain)

    def lend(self) -> ConnectionLease | None:
        if not self._leasable or self._closed or self.server.draining:
            return None
        if not self.server.config.lease_linger_ms:
            return None
        self._leasable = False
        self._lease = ConnectionLease(self)
        self.server._request_begin()  # a stopping daemon waits for the lease to end
        return self._lease

    async def _take_back(self, lease: ConnectionLease) -> bytes:
        """Waits for the call thread to end ``lease``; returns what it read and did not
        run. Meanwhile a hang-up cancels this connection's calls, as EOF would."""
        try:
            while not lease.returned.is_set():
                with trio.move_on_after(LEASE_WATCH_S):
                    await lease.returned.wait()
                lease.run_later()
                if not lease.returned.is_set() and not lease.hung_up and lease.peer_gone():
                    self._stop_calls(lease)
        finally:
            if not lease.returned.is_set():  # cancelled: the daemon stops
                await self._outlast(lease)
            self._lease = None
            self.server._request_done()
        return lease.handed_back

    async def _outlast(self, lease: ConnectionLease) -> None:
        """Stops ``lease``'s calls and waits, even when cancelled, until its thread has
        given the connection back: the descriptor it reads must not close under it (its
        call ends at the next epoch tick)."""
        self._stop_calls(lease)
        with trio.CancelScope(shield=True):
            await lease.returned.wait()

    def _stop_calls(self, lease: ConnectionLease) -> None:
        lease.stop()
        for cancel in list(self.cancels):
            cancel()

    def fast_request_done(self) -> None:
        self._fast_in_flight -= 1
        self.request_done()

    def request_done(self) -> None:
        """One of this connection's requests is over (with or without a task)."""
        self.in_flight -= 1
        self._slots.release()
        self.server._request_done()

    async def serve(self) -> None:
        config = self.server.config
        buffer = LineBuffer(config.max_frame_bytes)
        farewell: KamiError | None = None
        # When the frame being received must be complete: the whole frame gets
        # frame_timeout_s, not each piece of it, so a peer trickling a byte at a time
        # (slowloris) is dropped as surely as one that stops sending.
        frame_deadline = math.inf
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while not self._closed:
                idle = buffer.pending == 0
                timeout = config.idle_timeout_s if idle else config.frame_timeout_s
                if idle and self._lines is not None:
                    timeout = math.inf  # an upgraded session idles as long as its peer likes
                deadline = trio.current_time() + timeout if idle else frame_deadline
                if self._lease is not None:
                    # A call thread reads for now; it hands back what it did not run.
                    data = await self._take_back(self._lease)
                    if not data:
                        continue
                else:
                    with trio.move_on_at(deadline) as scope:
                        try:
                            data = await self.stream.receive_some(65536)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            data = b""
                    if scope.cancelled_caught:
                        if idle and self.in_flight:
                            continue  # a long call is running; the peer is waiting, not idle
                        reason = "idle" if idle else "slow (a frame did not complete in time)"
                        farewell = RequestTimeout(
                            f"connection closed: {reason} for {timeout:g} s; "
                            "reconnect and send complete lines"
                        )
                        break
                if self.server.fast_lane is not None:
                    self.server.fast_lane.collect()  # frees slots the lines may need
                if not data:
                    break  # EOF: the peer is gone; its unfinished requests are cancelled
                try:
                    lines = buffer.feed(data)
                except FrameTooLarge as exc:
                    # The stream cannot be resynchronised after a cut frame: answer, close.
                    farewell = exc
                    break
                if lines or not buffer.pending:
                    frame_deadline = math.inf
                if buffer.pending and frame_deadline == math.inf:
                    frame_deadline = trio.current_time() + config.frame_timeout_s
                for i, line in enumerate(lines, 1):
                    if self._lines is not None:
                        assert self.upgrade is not None
                        if not self.upgrade.offer(line):
                            await self._lines.send(line)
                        continue
                    await self._slots.acquire()
                    self.in_flight += 1
                    # Only a connection with nothing else to do is lent (ConnectionLease):
                    # no more input, and nothing in flight but fast-lane calls, which
                    # answer by themselves (those that answered may not be collected yet).
                    self._leasable = (
                        self.in_flight == 1 + self._fast_in_flight
                        and i == len(lines)
                        and not buffer.pending
                    )
                    taken = self.server.offer_fast(line, self)
                    self._leasable = False
                    if taken:
                        self._fast_in_flight += 1
                    else:
                        nursery.start_soon(self._serve_line, line)
            nursery.cancel_scope.cancel()
        for cancel in list(self.cancels):
            cancel()
        if farewell is not None and not self._closed:
            self._closed = True
            self._writer.close()
            await _refuse(self.stream, farewell)
        await self._close()

    async def _serve_line(self, line: bytes) -> None:
        try:
            reply = await self.server.answer(line, RequestContext(self))
            handler = self.upgrade if self._lines is None and reply and "result" in reply else None
            if handler is not None:
                # From here on, lines go to the handler (buffered until it starts), even
                # those that arrive while the answer is still being sent.
                self._lines, lines = trio.open_memory_channel[bytes](MAX_IN_FLIGHT_PER_CONNECTION)
            if reply is not None:
                await self.send(reply)
            if handler is not None:
                assert self._nursery is not None
                self._nursery.start_soon(self._serve_upgraded, handler, lines)
        finally:
            self.request_done()

    async def _serve_upgraded(
        self, handler: LineHandler, lines: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        try:
            await handler.serve(lines, RequestContext(self))
        except Exception:
            log.exception("an upgraded connection's handler failed; closing the connection")
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()


class Server:
    """Accepts connections on a listening Unix socket and answers JSON-RPC requests.

    Args:
        sock: a bound, listening AF_UNIX socket.
        dispatcher: routes a method to its handler.
        config: limits and timeouts.
    """

    def __init__(
        self, sock: trio.socket.SocketType, dispatcher: Dispatcher, config: ServerConfig
    ) -> None:
        self.sock = sock
        self.dispatcher = dispatcher
        self.config = config
        self.connections = 0
        self.in_flight = 0
        self.draining = False
        self._stop = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._allowed_uids = {os.getuid(), *config.allowed_uids}
        #: This stop's grace period, when ``daemon.stop`` gave one.
        self._grace_s: float | None = None
        self._grace: trio.CancelScope | None = None
        #: Takes the requests it can answer without the dispatcher (``tools.exec``).
        self.fast_lane: FastLane | None = None

    def reconfigure(self, config: ServerConfig) -> None:
        """New limits and timeouts (SIGHUP): for new connections, and the next stop."""
        self.config = config
        self._allowed_uids = {os.getuid(), *config.allowed_uids}

    def stop(self, grace_s: float | None = None) -> None:
        """Stops accepting and starts draining; safe to call more than once.

        ``grace_s`` replaces ``[server].grace_s`` for this stop; given while already
        draining, it can shorten the wait, never lengthen it.
        """
        self.draining = True
        if grace_s is not None:
            self._grace_s = grace_s
            if self._grace is not None:  # already draining
                self._grace.deadline = min(self._grace.deadline, trio.current_time() + grace_s)
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serves until :meth:`stop`, then drains in-flight requests under the grace deadline.

        Cancellation closes every connection at once, abandoning in-flight answers.
        """
        listener = trio.SocketListener(self.sock)
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(self._accept_loop, listener, connections)
                task_status.started()
                await self._stop.wait()
                accepting.cancel_scope.cancel()
            await listener.aclose()
            began = trio.current_time()
            grace_s = self.config.grace_s if self._grace_s is None else self._grace_s
            with trio.CancelScope(deadline=began + grace_s) as self._grace:
                await self._idle.wait()
            if self._grace.cancelled_caught:
                log.warning(
                    "grace period of %g s over with %d call(s) in flight; cancelling them",
                    self._grace.deadline - began,
                    self.in_flight,
                )
            connections.cancel_scope.cancel()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            stream = await listener.accept()
            nursery.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        peer = _peer_credentials(stream.socket)
        if peer.uid not in self._allowed_uids and peer.gid not in self.config.allowed_gids:
            log.warning("refused connection from uid %d (pid %d)", peer.uid, peer.pid)
            await _refuse(
                stream,
                PolicyDenied(
                    f"uid {peer.uid} may not use this kamid (it runs as uid {os.getuid()}); "
                    "add it to [server].allowed_uids (or its group to [server].allowed_gids) "
                    "in kamid.toml to allow it"
                ),
            )
            return
        if self.connections >= self.config.max_connections:
            await _refuse(
                stream,
                ShuttingDown(
                    f"too many connections ({self.config.max_connections}); "
                    "close idle clients or raise [server].max_connections"
                ),
            )
            return
        conn = _Connection(self, stream, peer)
        self.connections += 1
        try:
            await conn.serve()
        finally:
            self.connections -= 1

    def offer_fast(self, line: bytes, connection: _Connection) -> bool:
        """Gives ``line`` to the fast lane if it is a request it may take; True if taken."""
        lane = self.fast_lane
        if lane is None or self.draining or lane.marker not in line:
            return False
        try:
            message = decode_frame(line)
        except KamiError:
            return False  # the dispatcher path answers with the parse error
        if not _is_request(message):
            return False
        if not lane.offer(message, RequestContext(connection)):
            return False
        self._request_begin()
        return True

    def _request_begin(self) -> None:
        self.in_flight += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def _request_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def answer(self, line: bytes, ctx: RequestContext) -> dict[str, Any] | None:
        """Handles one frame; returns the response, or None for a notification."""
        self._request_begin()
        request_id: int | str | None = None
        notification = False
        try:
            message = decode_frame(line)
            if not isinstance(message, dict):
                raise InvalidRequest(
                    "a request must be a JSON object with jsonrpc, id, method and params "
                    "(batches are not supported on the daemon socket)"
                )
            notification = "id" not in message
            raw_id = message.get("id")
            if raw_id is not None and not isinstance(raw_id, (int, str)):
                raise InvalidRequest("id must be a string or an integer")
            request_id = raw_id
            method = message.get("method")
            if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
                raise InvalidRequest('a request needs "jsonrpc": "2.0" and a string "method"')
            if self.draining and method not in _ALLOWED_WHILE_DRAINING:
                raise ShuttingDown("kamid is shutting down; retry once it has restarted")
            spec = METHODS.get(method)
            timeout = spec.timeout_s if spec else 30.0
            with trio.move_on_after(timeout) as scope:
                result = await self.dispatcher.handle(method, message.get("params"), ctx)
            if scope.cancelled_caught:
                raise RequestTimeout(f"{method} did not finish within {timeout:g} s")
        except KamiError as exc:
            return None if notification else make_error(request_id, exc)
        except Exception:
            log.exception("unexpected error answering a request")
            error = InternalError("kamid hit an internal error; details are in its log")
            return None if notification else make_error(request_id, error)
        return None if notification else make_result(request_id, result)
