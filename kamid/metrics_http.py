"""``kamid --metrics-listen HOST:PORT``: /metrics, /health and /ready over HTTP/1.1.

For Prometheus and for probes (a load balancer, Kubernetes, a systemd ``ExecStartPost``
curl). ``/metrics`` is the Prometheus text format, ``/health`` answers 200 while the
event loop runs, and ``/ready`` answers 200 while kamid accepts calls and 503 once it
drains. Only GET and HEAD; HTTP parsing is h11's.

The endpoint has no authentication: it exposes tool ids and call counts, never inputs
or outputs. Keep it on loopback unless the network in between is trusted.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import h11
import trio

from kamid.protocol import KamiError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["parse_listen_address", "serve_metrics_http"]

log = logging.getLogger("kamid.metrics")

#: A connection with no complete request for this long is closed.
IDLE_TIMEOUT_S = 30.0
#: A request line and headers larger than this are refused (there is no body to read).
MAX_REQUEST_BYTES = 16 * 1024
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def parse_listen_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:9464``, ``[::1]:9464`` or ``localhost:9464`` as (host, port).

    Raises:
        ValueError: with a message saying what form is expected.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(
            f"{text!r} is not HOST:PORT; use e.g. 127.0.0.1:9464 or [::1]:9464 "
            "(PORT 0 picks a free one)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError with its own message
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_metrics_http(
    address: str,
    render: Callable[[], str],
    ready: Callable[[], bool],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves until cancelled; started with the address actually bound (``host:port``).

    Args:
        address: ``host:port`` to listen on.
        render: the metrics text, called on every scrape.
        ready: whether kamid accepts calls (``/ready``).

    Raises:
        KamiError: the address is invalid or cannot be bound (in use, not local).
    """
    try:
        host, port = parse_listen_address(address)
        listeners = await trio.open_tcp_listeners(port, host=host)
    except (ValueError, OSError) as exc:
        raise KamiError(f"--metrics-listen {address}: cannot listen: {exc}") from exc
    bound = listeners[0].socket.getsockname()
    actual = format_address(bound[0], bound[1])
    if not ipaddress.ip_address(bound[0]).is_loopback:
        log.warning("metrics on %s are reachable from the network, without authentication", actual)
    log.info("metrics on http://%s/metrics", actual)
    handler = _Handler(render, ready)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler.serve, listeners)
        task_status.started(actual)


class _Handler:
    def __init__(self, render: Callable[[], str], ready: Callable[[], bool]) -> None:
        self.render = render
        self.ready = ready

    async def serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        try:
            async with stream:
                while await self._one_request(conn, stream):
                    conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # the peer went away or broke the protocol after an answer
        except Exception:
            # Never let one scrape take the daemon down with it.
            log.exception("metrics endpoint: unexpected error serving a request")

    async def _one_request(self, conn: h11.Connection, stream: trio.SocketStream) -> bool:
        """Answers one request; False when the connection should close."""
        request: h11.Request | None = None
        with trio.move_on_after(IDLE_TIMEOUT_S):
            while request is None:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    status = exc.error_status_hint
                    await self._send(conn, stream, status, f"{exc}\n", head=False, close=True)
                    return False
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return False
        if request is None:
            return False  # idle
        # Drain the (unexpected) body up to the end of the message.
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return False
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace").split("?", 1)[0]
        status, body, content_type = self._route(method, target)
        extra = [("Allow", "GET, HEAD")] if status == 405 else []
        await self._send(
            conn, stream, status, body, head=method == "HEAD", ctype=content_type, extra=extra
        )
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    def _route(self, method: str, target: str) -> tuple[int, str, str]:
        if target not in ("/metrics", "/health", "/ready"):
            return 404, "not found: try /metrics, /health or /ready\n", "text/plain"
        if method not in ("GET", "HEAD"):
            return 405, f"{method} is not allowed here; use GET\n", "text/plain"
        if target == "/metrics":
            try:
                return 200, self.render(), _PROMETHEUS
            except Exception:
                log.exception("metrics endpoint: rendering the metrics failed")
                return 500, "rendering the metrics failed; see kamid's log\n", "text/plain"
        if target == "/health":
            return 200, "ok\n", "text/plain"
        if self.ready():
            return 200, "ready\n", "text/plain"
        return 503, "draining: kamid is shutting down\n", "text/plain"

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        body: str,
        *,
        head: bool,
        ctype: str = "text/plain",
        extra: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        data = body.encode()
        headers = [
            ("Content-Type", ctype if "charset" in ctype else f"{ctype}; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            *(extra or []),
        ]
        if close:
            headers.append(("Connection", "close"))
        try:
            out = conn.send(h11.Response(status_code=status, headers=headers))
            if not head:
                out = (out or b"") + (conn.send(h11.Data(data=data)) or b"")
            out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return  # the connection is already broken: nothing we can say on it
        await stream.send_all(out)
