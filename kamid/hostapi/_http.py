"""``kami:tool/http``: outbound HTTP done by the daemon, under the tool's network policy.

One :class:`NetSession` serves one call; :class:`Network` (one per daemon) makes them.
:meth:`NetSession.fetch` runs in the wasm worker thread, which is blocked in a host call
meanwhile: neither fuel nor the epoch deadline stops it, so every step is bounded here.

For every hop (the request, then each redirect the daemon follows):

1. the scheme, host, port and method are checked against the rules (:mod:`kamid.netpolicy`);
2. the daemon resolves the name itself and checks every address it got; the connection
   goes to a checked address and nowhere else (the network backend below only connects to
   pinned addresses, so httpcore never resolves anything: no DNS rebinding), while the URL
   keeps the name, so TLS still verifies it (SNI) and ``Host`` names it;
3. secrets bound to the hop's host are added as headers (never on a hop to another host);
4. the response is read as a stream, decoded (gzip, deflate) under a size cap, and every
   stored secret of the tool is redacted from its headers and body.

Limits per call: requests (hops and denied attempts count), request and response body
sizes, response bytes per call, and time: each fetch has the smaller of its own timeout
and the call's remaining deadline, enforced per socket operation and by a watchdog that
shuts the sockets down when it passes. Every refusal is a :class:`HostError` naming the
rule or the limit.
"""

from __future__ import annotations

import _socket
import base64
import contextlib
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from typing import TYPE_CHECKING, Any

import attrs
import certifi
import httpcore

from kamid import __version__
from kamid.netpolicy import NetLimits, NetPolicy, Target
from kamid.protocol import (
    DEFAULT_PORTS,
    HEADER_NAME,
    normalize_host,
    normalize_ip,
    parse_host_rule,
    reserved_header,
)

from ._context import HostError, HttpResponse

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    # Imported where used (URL parsing, request building): httpx is ~55 ms of kamid's
    # start-up, and a daemon whose tools have no network grant never needs it.
    import httpx

    from kamid.protocol import Grants, HostRule, IPAddress, SecretRequest

    from ._context import HttpRequest

__all__ = ["NetSession", "Network", "Redactor", "system_resolver"]

log = logging.getLogger("kamid.net")

# httpcore's debug traces print response headers, which may echo a secret before the
# daemon redacts it; they stay off whatever the daemon's log level.
logging.getLogger("httpcore").setLevel(logging.INFO)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NEVER = frozenset({"CONNECT", "TRACE"})
_METHOD = HEADER_NAME  # a method is a token too
_MAX_URL = 8192
# Dropped from the guest's own headers once a redirect leaves the first origin.
_CREDENTIALS = frozenset({"authorization", "cookie"})
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
    }
)
_PLACEHOLDER_START = "{secret:"
_REDACTED = b"[redacted]"
#: Time left to the guest after its requests' deadline, to report a timeout itself.
_GUEST_MARGIN_S = 0.1


class _SharedContext(ssl.SSLContext):
    """A client TLS context that worker threads share, so it is never changed after setup.

    httpcore sets ALPN on the context for every connection; on a shared context that
    would rewrite OpenSSL state while another thread's handshake reads it. ALPN is set
    once here (HTTP/1.1 only), and later calls are ignored.
    """

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        pass


def _client_context(cafile: str) -> ssl.SSLContext:
    """Like ``ssl.create_default_context``: TLS 1.2+, hostname and chain verified."""
    context = _SharedContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=cafile)
    ssl.SSLContext.set_alpn_protocols(context, ["http/1.1"])
    return context


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to for TCP, in the resolver's order, deduplicated.

    Raises:
        OSError: it does not resolve.
    """
    found: list[IPAddress] = []
    # With type=SOCK_STREAM and the default family, only AF_INET and AF_INET6 come back.
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        ip = normalize_ip(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
        if ip not in found:
            found.append(ip)
    return found


@attrs.frozen(kw_only=True)
class _Binding:
    """A secret with its value, and the hosts it goes to."""

    name: str
    header: str
    rules: tuple[HostRule, ...]
    #: The header value with the secret in it.
    rendered: str = attrs.field(repr=False)
    value: str = attrs.field(repr=False)

    def applies(self, target: Target) -> bool:
        return any(
            r.matches_host(target.host, target.ip)
            and r.scheme == target.scheme
            and r.port == target.port
            for r in self.rules
        )


class Redactor:
    """Replaces a tool's secret values, and common encodings of them, with ``[redacted]``.

    Covers the value as sent (the rendered header too), percent-encoded, JSON-escaped and
    base64. It is a second line of defense for a granted host that echoes requests back;
    the first is that a secret only ever goes to the hosts it is bound to.
    """

    def __init__(self, secrets: Iterable[tuple[str, str]]) -> None:
        patterns: set[bytes] = set()
        for value, rendered in secrets:
            for text in (value, rendered):
                if not text:
                    continue
                raw = text.encode()
                patterns.update(
                    {
                        raw,
                        urllib.parse.quote(text, safe="").encode(),
                        urllib.parse.quote_plus(text, safe="").encode(),
                        json.dumps(text)[1:-1].encode(),
                        base64.b64encode(raw),
                        base64.b64encode(raw).rstrip(b"="),
                        base64.urlsafe_b64encode(raw).rstrip(b"="),
                    }
                )
        # Longest first, so a rendered header goes before the value inside it.
        self._patterns = sorted((p for p in patterns if p), key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def bytes(self, data: bytes) -> bytes:
        for pattern in self._patterns:
            if pattern in data:
                data = data.replace(pattern, _REDACTED)
        return data

    def text(self, text: str) -> str:
        if not self._patterns:
            return text
        return self.bytes(text.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")

    def found_in(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return any(p in data for p in self._patterns)


class Network:
    """The daemon's side of ``kami:tool/http``: limits, TLS trust, resolver.

    Args:
        limits: ``[net]`` from ``kamid.toml``.
        ssl_context: trust for https; default: the certifi bundle (made once, on first use).
            It is shared by every fetch, from several threads: configure it before, and
            set ALPN on it yourself (httpcore's per-connection call is a race on it).
        resolver: turns a name into addresses; default :func:`system_resolver`. It runs in
            a helper thread so that the call's deadline bounds it.
    """

    def __init__(
        self,
        limits: NetLimits | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Callable[[str, int], list[IPAddress]] | None = None,
    ) -> None:
        self.limits = limits or NetLimits()
        self.resolver = resolver or system_resolver
        self._ssl_context = ssl_context
        self._lock = threading.Lock()

    def ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                self._ssl_context = _client_context(certifi.where())
            return self._ssl_context

    def session(
        self,
        *,
        tool_id: str,
        grants: Grants,
        secrets: Sequence[SecretRequest] = (),
        values: Mapping[str, str] | None = None,
        timeout_ms: int,
    ) -> NetSession | None:
        """The network of one call, or None when the tool has no network grant at all.

        Args:
            tool_id: the calling tool.
            grants: its grants; only ``net`` is used.
            secrets: the manifest's ``[[security.secrets]]``.
            values: stored secret values by name (absent ones are reported, not sent).
            timeout_ms: the call's deadline; fetches never run past it.
        """
        if not grants.net:
            return None
        values = values or {}
        bindings = []
        missing = []
        for secret in secrets:
            value = values.get(secret.name)
            if value is None:
                missing.append(secret.name)
                continue
            bindings.append(
                _Binding(
                    name=secret.name,
                    header=secret.header,
                    rules=tuple(parse_host_rule(h) for h in secret.hosts),
                    rendered=secret.render(value),
                    value=value,
                )
            )
        # Every stored value is redacted, bound in this manifest or left from an older one.
        redactor = Redactor(
            [(b.value, b.rendered) for b in bindings]
            + [(v, v) for n, v in values.items() if all(b.name != n for b in bindings)]
        )
        return NetSession(
            network=self,
            policy=NetPolicy.from_grants(grants.net, tool_id=tool_id),
            bindings=tuple(bindings),
            missing=tuple(missing),
            redactor=redactor,
            timeout_ms=timeout_ms,
        )


class NetSession:
    """The network of one tool call. Not shared between threads.

    Attributes:
        log: one entry per request attempt (hops included): host, port, scheme, method,
            decision, the rule or reason, the address connected to, status or error. No
            paths, headers, bodies or secret values. The audit log records it.
    """

    def __init__(
        self,
        *,
        network: Network,
        policy: NetPolicy,
        bindings: tuple[_Binding, ...],
        missing: tuple[str, ...],
        redactor: Redactor,
        timeout_ms: int,
    ) -> None:
        self.network = network
        self.policy = policy
        self.limits = network.limits
        self.tool_id = policy.tool_id
        self.log: list[dict[str, Any]] = []
        self.requests = 0
        self.response_bytes = 0
        #: Receives warnings for the tool's log (a bound secret that is not set).
        self.on_note: Callable[[str], None] | None = None
        self._bindings = bindings
        self._missing = missing
        self._redactor = redactor
        self._timeout_ms = timeout_ms
        self._deadline = time.monotonic() + timeout_ms / 1000
        self._resolved: dict[str, list[IPAddress]] = {}
        self._noted: set[str] = set()

    def start_clock(self) -> None:
        """Counts the call's deadline from now (the guest starts running)."""
        self._deadline = time.monotonic() + self._timeout_ms / 1000

    def fetch(self, request: HttpRequest) -> HttpResponse:
        """``http.fetch``: the response, after the policy allowed every hop.

        Raises:
            HostError: ``denied`` (a rule or the address check refused a hop; the message
                names which), ``limit-exceeded``, ``invalid-request``, ``transport`` or
                ``timeout``. Messages never contain a secret value.
        """
        try:
            return self._fetch(request)
        except HostError as exc:
            raise HostError(exc.kind, self._redactor.text(exc.message)) from None

    # The steps of one fetch.

    def _fetch(self, request: HttpRequest) -> HttpResponse:
        self._count()
        started = time.monotonic()
        # Requests stop a little before the call's deadline, so that the guest can still
        # handle the timeout error and answer before the engine interrupts it.
        call_deadline = self._deadline - min(_GUEST_MARGIN_S, self._timeout_ms / 10_000)
        if started >= call_deadline:
            raise HostError(
                "timeout",
                f"{self.tool_id} has no time left for requests: its call deadline of "
                f"{self._timeout_ms} ms has passed",
            )
        method = self._method(request.method)
        url = self._url(request.url)
        headers = self._headers(request.headers)
        body = request.body
        if body is not None and len(body) > self.limits.max_request_body_bytes:
            raise HostError(
                "limit-exceeded",
                f"the request body is {len(body)} bytes, more than the "
                f"{self.limits.max_request_body_bytes}-byte limit ([net].max_request_body_bytes)",
            )
        budget_ms = self.limits.request_timeout_ms
        if request.timeout_ms is not None:
            budget_ms = min(budget_ms, request.timeout_ms)
        if started + budget_ms / 1000 < call_deadline:
            deadline, why = started + budget_ms / 1000, f"its {budget_ms} ms request timeout"
        else:
            deadline, why = call_deadline, f"the call deadline ({self._timeout_ms} ms)"
        with _Connections(deadline, self.network.ssl_context()) as conns:
            return self._hops(conns, method, url, headers, body, why)

    def _hops(
        self,
        conns: _Connections,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        body: bytes | None,
        why: str,
    ) -> HttpResponse:
        first: Target | None = None
        previous: Target | None = None
        for hop in range(self.limits.max_redirects + 1):
            if hop:
                self._count()
            target, url = self._target(url, method)
            first = first or target
            if (target.scheme, target.host, target.port) != (first.scheme, first.host, first.port):
                headers = [(k, v) for k, v in headers if k.lower() not in _CREDENTIALS]
            entry: dict[str, Any] = {
                "scheme": target.scheme,
                "host": target.host,
                "port": target.port,
                "method": method,
                "hop": hop,
            }
            self.log.append(entry)
            where = f"redirect from {previous} to {target}" if previous else str(target)
            decision = self.policy.check_request(target)
            entry.update(
                decision="denied" if not decision.allowed else "allowed", rule=decision.rule
            )
            if not decision.allowed:
                entry["reason"] = decision.reason
                raise HostError("denied", f"{where}: {decision.reason}")
            addresses = self._addresses(target, entry, where, conns.deadline, why)
            sent, injected = self._inject(target, headers)
            if injected:
                entry["secrets"] = injected
            try:
                status, raw_headers, stream = conns.send(
                    method, url, sent, body, target.host, addresses
                )
                entry.update(address=conns.connected, status=status)
                location = _header(raw_headers, b"location")
                if status in _REDIRECTS and location is not None:
                    stream.close()
                    previous = target
                    url = self._redirect(url, location, where)
                    method, body, headers = _redirected(status, method, body, headers)
                    continue
                data = self._read(stream, raw_headers, target, bool(injected))
                if conns.expired():
                    # The watchdog may have cut a body that ends at connection close.
                    raise _Expired
            except HostError as exc:
                entry["error"] = exc.kind
                raise
            except (httpcore.TimeoutException, _Expired):
                entry["error"] = "timeout"
                raise HostError("timeout", f"{where} did not complete within {why}") from None
            except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
                entry["error"] = "transport"
                if conns.expired():
                    raise HostError("timeout", f"{where} did not complete within {why}") from None
                raise HostError("transport", f"{where}: {_describe(exc)}") from None
            return HttpResponse(
                status=status, headers=self._response_headers(raw_headers, data), body=data.body
            )
        raise HostError(
            "limit-exceeded",
            f"more than {self.limits.max_redirects} redirects, the last to {url.host}; "
            "fetch the final URL directly ([net].max_redirects)",
        )

    def _count(self) -> None:
        self.requests += 1
        if self.requests > self.limits.max_requests:
            if self.requests == self.limits.max_requests + 1:
                self.log.append({"decision": "limit", "limit": "max_requests"})
            raise HostError(
                "limit-exceeded",
                f"{self.tool_id} made more than {self.limits.max_requests} HTTP requests in "
                "one call (redirect hops count); make fewer, or the operator can raise "
                "[net].max_requests in kamid.toml",
            )

    def _method(self, text: str) -> str:
        method = text.upper()
        if not _METHOD.match(method):
            raise HostError("invalid-request", f"{_shown(text, 40)} is not an HTTP method")
        if method in _NEVER:
            raise HostError("invalid-request", f"{method} requests are not supported")
        return method

    def _url(self, text: str) -> httpx.URL:
        import httpx

        if len(text) > _MAX_URL:
            raise HostError("invalid-request", f"the URL is longer than {_MAX_URL} characters")
        try:
            url = httpx.URL(text)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise HostError(
                "invalid-request", f"{_shown(text, 200)} is not a valid URL: {exc}"
            ) from None
        if url.scheme not in DEFAULT_PORTS:
            raise HostError(
                "invalid-request",
                f"only absolute http:// and https:// URLs can be fetched (got {_shown(text, 200)})",
            )
        if url.userinfo:
            raise HostError(
                "invalid-request",
                "URLs with user:password@ are refused; send credentials in a header",
            )
        return url.copy_with(fragment=None)

    def _headers(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        if len(pairs) > self.limits.max_request_headers:
            raise HostError(
                "limit-exceeded",
                f"{len(pairs)} request headers, more than the limit of "
                f"{self.limits.max_request_headers} ([net].max_request_headers)",
            )
        size = 0
        for name, value in pairs:
            size += len(name) + len(value)
            if not HEADER_NAME.match(name):
                raise HostError("invalid-request", f"{_shown(name, 60)} is not a valid header name")
            if reserved_header(name):
                raise HostError(
                    "invalid-request",
                    f"header {name} is set by the daemon (from the URL, or for framing and "
                    "decoding); remove it from the request",
                )
            if any(c in value for c in "\r\n\0"):
                raise HostError(
                    "invalid-request", f"header {name} has a line break or NUL in its value"
                )
            if _PLACEHOLDER_START in value.lower():
                raise HostError(
                    "invalid-request",
                    f"header {name} contains a {{secret:...}} placeholder; a tool cannot ask "
                    "for a secret: the daemon adds secrets itself, to the requests its "
                    "manifest binds them to ([[security.secrets]])",
                )
        if size > self.limits.max_request_header_bytes:
            raise HostError(
                "limit-exceeded",
                f"request headers of {size} bytes, more than the limit of "
                f"{self.limits.max_request_header_bytes} ([net].max_request_header_bytes)",
            )
        return list(pairs)

    def _target(self, url: httpx.URL, method: str) -> tuple[Target, httpx.URL]:
        raw = url.raw_host.decode("ascii", "replace")
        try:
            host, ip = normalize_host(raw)
        except ValueError:
            raise HostError(
                "invalid-request",
                f"{_shown(raw, 200)} is not a valid host name or canonical IP address",
            ) from None
        port = url.port or DEFAULT_PORTS[url.scheme]
        if not 0 < port < 65536:
            raise HostError("invalid-request", f"port {port} is out of range")
        if host != raw:
            url = url.copy_with(host=host)
        return Target(scheme=url.scheme, host=host, port=port, method=method, ip=ip), url

    def _addresses(
        self, target: Target, entry: dict[str, Any], where: str, deadline: float, why: str
    ) -> list[IPAddress]:
        candidates = [target.ip] if target.ip is not None else self._resolve(target, deadline, why)
        allowed: list[IPAddress] = []
        refused: list[str] = []
        first_denial = None
        for address in candidates:
            decision = self.policy.check_address(target, address)
            if decision.allowed:
                allowed.append(address)
                if decision.rule is not None and target.ip is None:
                    entry.setdefault("address_rule", decision.rule)
            else:
                refused.append(str(address))
                first_denial = first_denial or decision
        if refused:
            entry["refused"] = refused
        if not allowed:
            assert first_denial is not None
            entry.update(decision="denied", reason=first_denial.reason, address=refused[0])
            raise HostError("denied", f"{where}: {first_denial.reason}")
        return allowed

    def _resolve(self, target: Target, deadline: float, why: str) -> list[IPAddress]:
        host = target.host
        if host in self._resolved:
            return self._resolved[host]
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["addresses"] = self.network.resolver(host, target.port)
            except Exception as exc:  # reported to the guest below
                outcome["error"] = exc

        # A helper thread, so the deadline bounds a resolver that hangs.
        thread = threading.Thread(target=work, name="kami-resolve", daemon=True)
        thread.start()
        thread.join(max(deadline - time.monotonic(), 0))
        if thread.is_alive():
            raise HostError("timeout", f"resolving {host} did not finish within {why}")
        if "error" in outcome or not outcome.get("addresses"):
            reason = outcome.get("error", "no addresses")
            raise HostError("transport", f"cannot resolve {host}: {reason}")
        addresses: list[IPAddress] = [normalize_ip(a) for a in outcome["addresses"]]
        self._resolved[host] = addresses
        return addresses

    def _inject(
        self, target: Target, headers: list[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """The hop's headers: the guest's, secrets bound to this host, the daemon's own."""
        bound = [b for b in self._bindings if b.applies(target)]
        replaced = {b.header.lower() for b in bound}
        sent = [(k, v) for k, v in headers if k.lower() not in replaced]
        sent += [(b.header, b.rendered) for b in bound]
        names = {k.lower() for k, _ in sent}
        if "accept" not in names:
            sent.append(("Accept", "*/*"))
        if "user-agent" not in names:
            sent.append(("User-Agent", f"kami/{__version__}"))
        sent.append(("Accept-Encoding", "gzip, deflate"))
        for name in self._missing:
            if name not in self._noted:
                self._noted.add(name)
                self._note(
                    f"[kami] secret {name} is declared but not set, so requests go without "
                    f"it; set it with `kamictl secret set {self.tool_id} {name}`"
                )
        return sent, [b.name for b in bound]

    def _note(self, message: str) -> None:
        if self.on_note is not None:
            self.on_note(message)

    def _redirect(self, url: httpx.URL, location: bytes, where: str) -> httpx.URL:
        import httpx

        text = location.decode("latin-1")
        if self._redactor.found_in(text):
            raise HostError(
                "denied",
                f"{where} answered with a redirect whose Location contains a secret value; "
                "the daemon does not follow it",
            )
        try:
            return url.join(text).copy_with(fragment=None)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise HostError(
                "transport", f"{where} redirected to an invalid Location {_shown(text, 200)}"
            ) from None

    def _read(
        self,
        stream: _Response,
        raw_headers: list[tuple[bytes, bytes]],
        target: Target,
        injected: bool,
    ) -> _Body:
        left = self.limits.max_response_bytes_per_call - self.response_bytes
        per_call = left < self.limits.max_response_body_bytes
        cap = max(min(self.limits.max_response_body_bytes, left), 0)
        encoding = (_header(raw_headers, b"content-encoding") or b"").decode("latin-1").strip()
        decoder = _Decoder.make(encoding.lower(), cap)
        if decoder is None and injected:
            stream.close()
            raise HostError(
                "transport",
                f"{target} sent a {encoding}-encoded response after the daemon sent it a "
                "secret; the daemon refuses what it cannot inspect for the secret",
            )
        decoder = decoder or _Decoder(cap, None)
        try:
            with stream:
                for chunk in stream:
                    decoder.feed(chunk)
                decoder.finish()
        except _TooBig:
            limit = (
                f"the {self.limits.max_response_bytes_per_call}-byte limit on all responses of "
                "one call ([net].max_response_bytes_per_call)"
                if per_call
                else f"the {self.limits.max_response_body_bytes}-byte response limit "
                "([net].max_response_body_bytes)"
            )
            raise HostError(
                "limit-exceeded", f"the response body of {target} is larger than {limit}"
            ) from None
        except zlib.error as exc:
            raise HostError(
                "transport", f"{target} sent a body that does not decode: {exc}"
            ) from None
        data = bytes(decoder.out)
        self.response_bytes += len(data)
        return _Body(body=self._redactor.bytes(data), decoded=decoder.decoded)

    def _response_headers(
        self, raw: list[tuple[bytes, bytes]], data: _Body
    ) -> tuple[tuple[str, str], ...]:
        out = []
        for name, value in raw:
            lowered = name.lower()
            if lowered.decode("latin-1") in _HOP_BY_HOP:
                continue
            if data.decoded and lowered in (b"content-encoding", b"content-length"):
                continue
            out.append((_text(self._redactor.bytes(name)), _text(self._redactor.bytes(value))))
        return tuple(out)


@attrs.frozen
class _Body:
    body: bytes
    #: True when the body was decoded from gzip/deflate.
    decoded: bool


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _redirected(
    status: int, method: str, body: bytes | None, headers: list[tuple[str, str]]
) -> tuple[str, bytes | None, list[tuple[str, str]]]:
    """Method, body and headers of the next hop, as browsers and httpx do it."""
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        dropped = {"content-type"}
        return "GET", None, [(k, v) for k, v in headers if k.lower() not in dropped]
    return method, body, headers


def _shown(text: str, limit: int) -> str:
    """``text`` quoted for a message: cut, and without double quotes (tools embed
    messages in JSON by hand)."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return "'" + cut.replace('"', "'") + "'"


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return f"TLS failed: {text}"
    return text


class _TooBig(Exception):
    pass


class _Expired(Exception):
    pass


class _Decoder:
    """Decodes a body chunk by chunk and refuses to produce more than ``cap`` bytes.

    Decompression is bounded as it goes (``max_length``), so a small gzip bomb never
    inflates in memory past the cap.
    """

    def __init__(self, cap: int, wbits: int | None) -> None:
        self.cap = cap
        self.out = bytearray()
        self.decoded = wbits is not None
        self._wbits = wbits
        self._z = zlib.decompressobj(wbits) if wbits is not None else None
        self._started = False

    @classmethod
    def make(cls, encoding: str, cap: int) -> _Decoder | None:
        """A decoder for a Content-Encoding, or None for one the daemon cannot decode."""
        if encoding in ("", "identity"):
            return cls(cap, None)
        if encoding in ("gzip", "x-gzip"):
            return cls(cap, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            return cls(cap, zlib.MAX_WBITS)
        return None

    def feed(self, data: bytes) -> None:
        if self._z is None:
            self._emit(data)
            return
        if not self._started and self._wbits == zlib.MAX_WBITS:
            self._started = True
            try:
                probe = zlib.decompressobj(zlib.MAX_WBITS)
                probe.decompress(data[:2])
            except zlib.error:
                # Many servers send raw deflate without the zlib header.
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        while data:
            self._emit(self._z.decompress(data, self.cap - len(self.out) + 1))
            data = self._z.unconsumed_tail

    def finish(self) -> None:
        if self._z is not None:
            self._emit(self._z.flush())

    def _emit(self, chunk: bytes) -> None:
        if len(self.out) + len(chunk) > self.cap:
            raise _TooBig
        self.out += chunk


class _Response:
    """A response body stream that closes its httpcore response."""

    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        stream = self._response.stream
        assert not isinstance(stream, bytes)
        yield from stream  # type: ignore[misc]

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Connections:
    """One fetch's connections: a pool whose backend only dials pinned, checked addresses.

    Every socket operation gets at most the time left until ``deadline``, and a watchdog
    shuts the sockets down when it passes, so no loop inside httpcore or ssl (a TLS
    handshake fed one byte at a time) outlives it.
    """

    def __init__(self, deadline: float, ssl_context: ssl.SSLContext) -> None:
        self.deadline = deadline
        self.backend = _PinnedBackend(self)
        self.connected: str | None = None
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=4,
            http1=True,
            http2=False,
            retries=0,
            network_backend=self.backend,
        )
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0), self._shutdown)
        self._timer.daemon = True

    def __enter__(self) -> _Connections:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._pool.close()

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def left(self, timeout: float | None = None) -> float:
        """Seconds an operation may take; raises _Expired when none are left."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Expired
        return left if timeout is None else min(timeout, left)

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self.expired():
            self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            # The plain socket's shutdown, also for an SSLSocket: it wakes a thread blocked
            # in recv or send on it without touching the TLS state that thread is using.
            with contextlib.suppress(OSError):
                _socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def send(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        body: bytes | None,
        host: str,
        addresses: list[IPAddress],
    ) -> tuple[int, list[tuple[bytes, bytes]], _Response]:
        import httpx

        self.backend.pins[host] = addresses
        # httpx builds the request line and Host/Content-Length from the URL and body.
        request = httpx.Request(method, url, headers=_encode(headers), content=body)
        left = self.left()
        core = httpcore.Request(
            method=request.method.encode("ascii"),
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=body or b"",
            extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), left)},
        )
        response = self._pool.handle_request(core)
        return response.status, list(response.headers), _Response(response)


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("ascii"), v.encode("utf-8")) for k, v in headers]


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the addresses the policy checked for a host, never resolving."""

    def __init__(self, conns: _Connections) -> None:
        self.pins: dict[str, list[IPAddress]] = {}
        self._conns = conns
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.pins.get(host)
        if not addresses:
            raise httpcore.ConnectError(f"{host} was not checked by the network policy")
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=self._conns.left(timeout),
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            self._conns.connected = str(address)
            self._conns.track(stream.get_extra_info("socket"))
            return _DeadlineStream(stream, self._conns)
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("tools cannot reach Unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation gets at most the fetch's remaining time."""

    def __init__(self, inner: httpcore.NetworkStream, conns: _Connections) -> None:
        self._inner = inner
        self._conns = conns

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._conns.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # In slices, so a peer that reads slowly cannot stretch one write past the deadline.
        view = memoryview(buffer)
        for start in range(0, len(view), 16384):
            self._inner.write(bytes(view[start : start + 16384]), self._conns.left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.start_tls(ssl_context, server_hostname, self._conns.left(timeout))
        self._conns.track(stream.get_extra_info("socket"))
        return _DeadlineStream(stream, self._conns)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
