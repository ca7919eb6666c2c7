"""A worker process running tool calls for the daemon (``[engine] process_workers``).

``python -m kamid.engine._worker FD AOT_DIR LRU_CAPACITY TICK_MS``: FD is this process's
end of a socketpair with the daemon. The worker has its own engine (its own LRU, the
shared AOT directory, which ticks its own epoch), and runs one call at a time. Whatever a call
needs from the daemon goes back over the same socket while the call runs: the AOT index
(only files whose hash the daemon recorded are loaded) and every ``kami:tool`` host
function except logging, so grants, network policy, secrets and the key-value store stay
in the daemon.

Frames are a 4-byte big-endian length and a pickle. Both ends are this package, and the
socketpair is private to the two processes: no other peer can write to it.

The worker ignores SIGINT and SIGTERM (a Ctrl-C in a terminal reaches the whole process
group, and the daemon drains before it stops) and exits when the daemon closes its end.
SIGUSR1 cancels the call it is running, if any (:data:`CANCEL_SIGNAL`): the guest stops
at its next epoch tick, when the engine's deadline callback runs Python again.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from kamid.hostapi import HostContext, HostError
from kamid.protocol import InternalError, KamiError, error_from_wire, error_to_wire

__all__ = ["MAX_FRAME", "decode", "encode", "main"]

#: Input and output are capped at a few MiB each; this only stops a corrupt length.
MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")

#: HostContext methods that run in the worker; every other public one is forwarded.
#: (``start_clock`` is called by the daemon itself just before it sends the call.)
LOCAL_HOST_METHODS = frozenset({"log", "output", "start_clock", "cancel"})
#: The daemon sends it to cancel the running call.
CANCEL_SIGNAL = signal.SIGUSR1


def encode(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME:
        raise ValueError(f"a worker frame of {len(data)} bytes is over {MAX_FRAME}")
    return _HEADER.pack(len(data)) + data


def decode(data: bytes) -> Any:
    # Trusted: the peer is our own parent or child over a private socketpair.
    return pickle.loads(data)  # noqa: S301


@functools.cache
def forwarded_host_methods() -> frozenset[str]:
    """Public HostContext methods that the worker forwards to the daemon."""
    return frozenset(
        name
        for name in dir(HostContext)
        if not name.startswith("_")
        and callable(getattr(HostContext, name))
        and name not in LOCAL_HOST_METHODS
    )


class _Channel:
    """The worker's blocking end of the socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")

    def send(self, message: Any) -> None:
        self._sock.sendall(encode(message))

    def receive(self) -> Any:
        header = self._file.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise EOFError
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise EOFError
        data = self._file.read(size)
        if len(data) < size:
            raise EOFError
        return decode(data)

    def request(self, message: Any) -> Any:
        """Sends a request to the daemon and waits for its ``("return", ...)`` answer."""
        self.send(message)
        reply = self.receive()
        if reply[0] == "return":
            return reply[1]
        if reply[0] == "host_error":
            raise HostError(reply[1], reply[2])
        raise RuntimeError(f"the daemon failed serving {message[0]}.{message[1]}: {reply[1]}")


class _RemoteIndex:
    """The AOT index, kept by the daemon in its store."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def aot_get(self, key: str) -> str | None:
        result: str | None = self._channel.request(("index", "aot_get", (key,)))
        return result

    def aot_put(self, key: str, file_sha256: str) -> None:
        self._channel.request(("index", "aot_put", (key, file_sha256)))

    def aot_delete(self, key: str) -> None:
        self._channel.request(("index", "aot_delete", (key,)))


class _RemoteHost:
    """One call's host context in the worker: logs here, everything else in the daemon."""

    def __init__(
        self, channel: _Channel, *, tool_id: str, max_log_lines: int, max_line_chars: int
    ) -> None:
        self._channel = channel
        self._local = HostContext(
            tool_id=tool_id, max_log_lines=max_log_lines, max_line_chars=max_line_chars
        )
        self._forwarded = forwarded_host_methods()
        self.tool_id = tool_id
        self.host_calls = 0
        #: Set by :meth:`cancel` (on :data:`CANCEL_SIGNAL`); read by the deadline callback.
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def logs(self) -> list[Any]:
        return self._local.logs

    def log(self, level: str, message: str) -> None:
        self._local.log(level, message)

    def output(self, stream: str, line: str) -> None:
        self._local.output(stream, line)

    def start_clock(self) -> None:
        pass  # the daemon started the host's clock when it sent the call

    def __getattr__(self, name: str) -> Any:
        if name not in self._forwarded:
            raise AttributeError(name)

        def forward(*args: Any) -> Any:
            value, lines = self._channel.request(("host", name, args))
            for level, message in lines:  # lines the daemon's side logged meanwhile
                self._local.log(level, message)
            return value

        return forward


#: The host of the call running now (None between calls), for the cancel signal.
_running: _RemoteHost | None = None


def _cancel_running(_signum: int, _frame: object) -> None:
    # Runs in the main thread between bytecodes: during a call, when the deadline
    # callback next runs (each epoch tick); a signal between calls finds nothing to stop.
    if _running is not None:
        _running.cancel()


def _serve(channel: _Channel, engine: Any) -> None:
    global _running
    while True:
        try:
            message = channel.receive()
        except EOFError:
            return
        if message[0] != "call":
            channel.send(("error", error_to_wire(InternalError(f"unknown request {message[0]}"))))
            continue
        _, sha256, wasm_path, text, limits, tool_id, caps, sandbox = message
        host = _RemoteHost(channel, tool_id=tool_id, max_log_lines=caps[0], max_line_chars=caps[1])
        extra = {} if sandbox is None else {"sandbox": sandbox}
        _running = host
        teardown: list[Any] = []
        try:
            outcome = engine.call(
                sha256, Path(wasm_path), text, limits=limits, host=host, teardown=teardown, **extra
            )
        except KamiError as exc:
            reply: tuple[Any, ...] = ("error", error_to_wire(exc))
        except Exception as exc:
            error = InternalError(f"a worker process failed running the call: {exc!r}")
            reply = ("error", error_to_wire(error))
        else:
            reply = ("ok", outcome)
        finally:
            _running = None
        channel.send((*reply, list(host.logs), host.host_calls, engine.statistics()))
        # The store is closed once the answer is sent (with pooling that resets its
        # memory, 0.4-1 ms for the examples), before the next call is read.
        for close in teardown:
            close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fd, aot_dir, lru_capacity, tick_ms = int(args[0]), Path(args[1]), int(args[2]), int(args[3])
    keep_resident = None if args[4] == "-" else int(args[4])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(CANCEL_SIGNAL, _cancel_running)
    from kamid.engine._engine import Engine  # after the signals: importing takes a while
    from kamid.engine._wasm import Pooling

    channel = _Channel(socket.socket(fileno=fd))
    engine = Engine(
        aot_dir=aot_dir,
        aot_index=_RemoteIndex(channel),
        lru_capacity=lru_capacity,
        tick_ms=tick_ms,
        # One call at a time, closed before the next: one store is all it needs.
        pooling=None if keep_resident is None else Pooling(stores=1, keep_resident=keep_resident),
    )
    channel.send(("ready", os.getpid(), engine.statistics()))
    _serve(channel, engine)
    return 0


def rebuild_error(wire: dict[str, Any]) -> KamiError:
    """The daemon-side exception for a worker's ``error_to_wire`` answer."""
    return error_from_wire(wire)


if __name__ == "__main__":
    sys.exit(main())
