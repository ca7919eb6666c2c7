"""The daemon's side of one call's ``kami:tool`` imports, in plain Python.

The engine binds every import of ``wit/kami-tool.wit`` to a method here and converts the
values; this module never sees wasmtime. A tool without a grant gets a typed
:class:`HostError` (the WIT ``error.not-granted`` case), never a trap: deny by default is
an answer the tool can handle, not a crash.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import LogLine

if TYPE_CHECKING:
    from ._http import NetSession

__all__ = [
    "DEFAULT_MAX_LINE_CHARS",
    "DEFAULT_MAX_LOG_LINES",
    "HostContext",
    "HostError",
    "HttpRequest",
    "HttpResponse",
]

#: Lines one call may add to its log (host.log plus captured stdout/stderr).
DEFAULT_MAX_LOG_LINES = 1000
#: Longer lines are cut; a tool log is for humans, not a data channel.
DEFAULT_MAX_LINE_CHARS = 4096


class HostError(Exception):
    """A host call that failed in a way the tool is told about.

    Args:
        kind: the WIT ``error`` variant case, e.g. ``"not-granted"``, ``"denied"``,
            ``"invalid-key"``; it must be a case of the interface that raised it.
        message: what went wrong and what the operator or author can do, for the tool to
            pass on. Keep it free of double quotes: tools often embed it in JSON by hand.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"HostError({self.kind!r}, {self.message!r})"


@attrs.frozen(kw_only=True)
class HttpRequest:
    """``kami:tool/http.request``: what a tool asks the daemon to fetch."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    #: The tool's own timeout; the daemon's limit applies when absent or lower.
    timeout_ms: int | None = None


@attrs.frozen(kw_only=True)
class HttpResponse:
    """``kami:tool/http.response``."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class HostContext:
    """Host state of one tool call: its identity, its log, its counters.

    A fresh context serves exactly one call. The engine calls these methods from the
    worker thread running the guest (and :meth:`output` from wasmtime's I/O threads), so
    appends to :attr:`logs` are serialized by a lock.

    Args:
        tool_id: the calling tool, named in every error message.
        max_log_lines: lines kept; later ones are counted in one final marker line.
        max_line_chars: longer lines are cut and marked.
    """

    def __init__(
        self,
        *,
        tool_id: str,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
        max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
        net: NetSession | None = None,
    ) -> None:
        self.tool_id = tool_id
        self.max_log_lines = max_log_lines
        self.max_line_chars = max_line_chars
        #: Log lines and captured guest stdout/stderr, in arrival order.
        self.logs: list[LogLine] = []
        #: Lines dropped past ``max_log_lines``.
        self.dropped_lines = 0
        #: Calls the guest made into any kami:tool interface (the engine counts them).
        self.host_calls = 0
        self._lock = threading.Lock()
        #: The call's network (None: no net grant); see kamid/hostapi/_http.py.
        self.net = net
        #: One entry per HTTP request attempt: hosts contacted and denied, for the audit log.
        self.net_log: list[dict[str, Any]] = net.log if net is not None else []
        if net is not None:
            net.on_note = lambda message: self.log("warn", message)
        #: Set by :meth:`cancel`; the engine stops the guest at its next epoch tick.
        self.cancelled = False

    def cancel(self) -> None:
        """Asks for the call to stop (any thread): the guest traps within one epoch tick
        and the call fails with ``cancelled``. A call already finished is unaffected."""
        self.cancelled = True

    @property
    def hosts(self) -> list[dict[str, Any]]:
        """:attr:`net_log`, under the name the audit writer reads (kamid/audit.py)."""
        return self.net_log

    def start_clock(self) -> None:
        """Called by the engine when the guest starts: deadlines of host calls count from now."""
        if self.net is not None:
            self.net.start_clock()

    # kami:tool/host
    def log(self, level: str, message: str) -> None:
        """``host.log``: appends one line; never fails, cuts long lines, drops excess."""
        self._append(level, message)

    def output(self, stream: str, line: str) -> None:
        """Records one line the guest wrote to ``stdout`` or ``stderr``."""
        self._append(stream, line)

    def _append(self, level: str, message: str) -> None:
        if len(message) > self.max_line_chars:
            cut = len(message) - self.max_line_chars
            message = f"{message[: self.max_line_chars]}... [{cut} more characters cut]"
        with self._lock:
            if len(self.logs) < self.max_log_lines:
                self.logs.append(LogLine(level=level, message=message))
                return
            self.dropped_lines += 1
            marker = LogLine(
                level="warn",
                message=f"[kami] {self.dropped_lines} more log lines dropped "
                f"(limit {self.max_log_lines} lines per call)",
            )
            if self.dropped_lines == 1:
                self.logs.append(marker)
            else:
                self.logs[-1] = marker

    # kami:tool/http
    def http_fetch(self, request: HttpRequest) -> HttpResponse:
        """``http.fetch``: the daemon does the request under the tool's network policy.

        Raises:
            HostError: ``not-granted`` without any net grant; otherwise as
                :meth:`NetSession.fetch <kamid.hostapi._http.NetSession.fetch>`.
        """
        if self.net is not None:
            return self.net.fetch(request)
        raise HostError(
            "not-granted",
            f"{self.tool_id} has no network grant; the operator can grant one with "
            f"`kamictl grant {self.tool_id} --net HOST` after the manifest requests it "
            "under [security].net",
        )

    # kami:tool/kv
    def kv_get(self, key: str) -> bytes | None:
        """``kv.get``: the value, or None when the key is absent.

        Raises:
            HostError: ``not-granted`` until the key-value store is implemented.
        """
        raise self._no_kv()

    def kv_set(self, key: str, value: bytes) -> None:
        """``kv.set``.

        Raises:
            HostError: ``not-granted``.
        """
        raise self._no_kv()

    def kv_delete(self, key: str) -> None:
        """``kv.delete``.

        Raises:
            HostError: ``not-granted``.
        """
        raise self._no_kv()

    def kv_list_keys(self, prefix: str) -> list[str]:
        """``kv.list-keys``: keys starting with ``prefix``.

        Raises:
            HostError: ``not-granted``.
        """
        raise self._no_kv()

    def _no_kv(self) -> HostError:
        return HostError(
            "not-granted",
            f"{self.tool_id} has no key-value store grant; the operator can grant one with "
            f"`kamictl grant {self.tool_id} --kv`",
        )

    # kami:tool/invoke
    def invoke(self, tool: str, input: str) -> str:
        """``invoke.call``: runs another installed tool and returns its JSON output.

        Raises:
            HostError: ``not-granted`` until tool-to-tool calls are implemented.
        """
        raise HostError(
            "not-granted",
            f"{self.tool_id} may not invoke other tools (asked for {tool}); the operator can "
            f"grant it with `kamictl grant {self.tool_id} --invoke {tool}`",
        )
