"""The daemon's fetch in-process, against real servers: pinning, TLS, limits, headers.

These drive :class:`kamid.hostapi.HostContext` directly (what the engine calls for a
guest's ``http.fetch``), with a resolver the test controls where a case needs names that
DNS does not have. The guest-facing behaviour through a real daemon and wasm guest is in
``tests/adversarial/test_net_*.py``.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from kamid.hostapi import HostContext, HostError, HttpRequest, Network, Redactor
from kamid.hostapi._http import _client_context
from kamid.netpolicy import NetLimits
from kamid.protocol import Grants, IPAddress, NetGrant, SecretRequest
from tests.conftest import run_in_threads
from tests.net._servers import Server, make_certificate, serving

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

TOOL = "dev.test.fetch"
GET = ("GET", "HEAD")


class Resolver:
    """Answers from a table, in turn, and counts what it was asked."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        answers = self.table[host]
        answer = answers[min(len(self.asked) - 1, len(answers) - 1)]
        return [ipaddress.ip_address(a) for a in answer]


def context(
    rules: Sequence[str | tuple[str, Sequence[str]]],
    *,
    limits: NetLimits | None = None,
    resolver: Callable[[str, int], list[IPAddress]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    secrets: Sequence[SecretRequest] = (),
    values: dict[str, str] | None = None,
    timeout_ms: int = 10_000,
) -> HostContext:
    grants = Grants(
        net=tuple(
            NetGrant(host=r) if isinstance(r, str) else NetGrant(host=r[0], methods=tuple(r[1]))
            for r in rules
        )
    )
    network = Network(limits, resolver=resolver, ssl_context=ssl_context)
    session = network.session(
        tool_id=TOOL, grants=grants, secrets=secrets, values=values, timeout_ms=timeout_ms
    )
    return HostContext(tool_id=TOOL, net=session)


def get(host: HostContext, url: str, **fields: Any) -> Any:
    return host.http_fetch(HttpRequest(method=fields.pop("method", "GET"), url=url, **fields))


def error(host: HostContext, url: str, **fields: Any) -> HostError:
    with pytest.raises(HostError) as info:
        get(host, url, **fields)
    assert '"' not in info.value.message
    return info.value


# Pinning: the address checked is the address connected to.


def test_a_name_is_resolved_once_and_the_connection_goes_to_the_checked_address() -> None:
    with Server("127.0.0.2") as good, Server("127.0.0.3", port=good.port) as evil:
        # The first answer is the granted address; every later one (a rebinding attacker's
        # DNS) is another address, where another server listens on the same port.
        resolver = Resolver({"rebind.test": [["127.0.0.2"], ["127.0.0.3"]]})
        host = context([f"http://rebind.test:{good.port}", good.rule], resolver=resolver)
        for _ in range(3):
            assert get(host, f"http://rebind.test:{good.port}/echo").status == 200
        # Resolved once per call by the daemon, never by httpcore (the system resolver
        # does not know rebind.test at all).
        assert resolver.asked == ["rebind.test"]
        assert len(good.hits) == 3
        assert good.hits[0]["headers"]["Host"] == f"rebind.test:{good.port}"
        assert evil.hits == []
    assert [e["address"] for e in host.net_log] == ["127.0.0.2"] * 3


def test_addresses_a_name_resolves_to_are_each_checked() -> None:
    with Server("127.0.0.2") as good:
        resolver = Resolver({"mixed.test": [["127.0.0.3", "127.0.0.2"]]})
        host = context([f"http://mixed.test:{good.port}", good.rule], resolver=resolver)
        assert get(host, f"http://mixed.test:{good.port}/echo").status == 200
        entry = host.net_log[0]
        assert entry["refused"] == ["127.0.0.3"]
        assert entry["address"] == "127.0.0.2"
        assert entry["address_rule"] == good.rule
        # Nothing granted among the answers: denied, naming the first refused address.
        only_bad = context(
            [f"http://mixed.test:{good.port}"], resolver=Resolver({"mixed.test": [["10.9.8.7"]]})
        )
        failure = error(only_bad, f"http://mixed.test:{good.port}/echo")
        assert failure.kind == "denied"
        assert "mixed.test resolves to 10.9.8.7, a private address" in failure.message


def test_a_resolver_that_hangs_or_fails_is_bounded_and_reported() -> None:
    release = threading.Event()

    def hang(host: str, port: int) -> list[IPAddress]:
        release.wait(30)
        return [ipaddress.ip_address("127.0.0.2")]

    def fail(host: str, port: int) -> list[IPAddress]:
        raise OSError(-2, "Name or service not known")

    try:
        host = context(["slow.test"], resolver=hang)
        failure = error(host, "https://slow.test/", timeout_ms=300)
        assert failure.kind == "timeout"
        assert "resolving slow.test did not finish within its 300 ms request timeout" in (
            failure.message
        )
    finally:
        release.set()
    failure = error(context(["gone.test"], resolver=fail), "https://gone.test/")
    assert failure.kind == "transport"
    assert failure.message.startswith("cannot resolve gone.test")


def test_tls_to_a_pinned_address_still_verifies_the_name(tmp_path: Path) -> None:
    made = make_certificate(tmp_path, "api.test")
    if made is None:
        pytest.skip("openssl is not installed")
    cert, key = made
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc,unused-ignore]
    # The daemon's own kind of context (shared between threads), trusting the test's cert.
    client_tls = _client_context(str(cert))
    with Server("127.0.0.2", tls=server_tls) as server:
        resolver = Resolver({"api.test": [["127.0.0.2"]]})
        host = context(
            [f"api.test:{server.port}", f"127.0.0.2:{server.port}"],
            resolver=resolver,
            ssl_context=client_tls,
        )
        response = get(host, f"https://api.test:{server.port}/echo")
        assert response.status == 200
        assert names == ["api.test"]
        assert json.loads(response.body)["headers"]["Host"] == f"api.test:{server.port}"
        # The certificate names api.test, not the address: TLS fails, nothing is fetched.
        failure = error(host, f"https://127.0.0.2:{server.port}/echo")
        assert failure.kind == "transport"
        assert "TLS failed" in failure.message or "certificate" in failure.message.lower()
        assert len(server.hits) == 1


def test_calls_in_several_threads_share_one_network(tmp_path: Path) -> None:
    made = make_certificate(tmp_path, "api.test")
    if made is None:
        pytest.skip("openssl is not installed")
    cert, key = made
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    with Server("127.0.0.2", tls=server_tls) as server:
        network = Network(
            resolver=Resolver({"api.test": [["127.0.0.2"]]}),
            ssl_context=_client_context(str(cert)),
        )
        grants = Grants(
            net=(
                NetGrant(host=f"api.test:{server.port}"),
                NetGrant(host=f"127.0.0.2:{server.port}"),
            )
        )
        statuses: list[int] = []
        failures: list[BaseException] = []

        def call() -> None:
            session = network.session(tool_id=TOOL, grants=grants, timeout_ms=20_000)
            host = HostContext(tool_id=TOOL, net=session)
            try:
                for _ in range(5):
                    statuses.append(get(host, f"https://api.test:{server.port}/echo").status)
            except BaseException as exc:
                failures.append(exc)

        run_in_threads(call, 4)
    assert failures == []
    assert statuses == [200] * 20


def test_ipv6_literals_and_rules_work() -> None:
    with Server("::1") as server:
        host = context([server.rule])
        assert get(host, server.url("/echo")).status == 200
        failure = error(context([f"http://localhost:{server.port}"]), server.url("/echo"))
        assert failure.kind == "denied"
        assert "host name rules never match" in failure.message


# Limits.


def test_the_request_count_is_capped_per_call_redirect_hops_included() -> None:
    with Server() as server:
        host = context([server.rule], limits=NetLimits(max_requests=3))
        get(host, server.url("/echo"))
        get(host, server.url("/redirect?to=/echo"))  # two requests
        failure = error(host, server.url("/echo"))
        assert failure.kind == "limit-exceeded"
        assert "more than 3 HTTP requests in one call" in failure.message
        assert len(server.hits) == 3
        assert host.net_log[-1] == {"decision": "limit", "limit": "max_requests"}


def test_request_and_response_sizes_are_capped() -> None:
    limits = NetLimits(
        max_request_body_bytes=100,
        max_response_body_bytes=1000,
        max_response_bytes_per_call=2500,
    )
    with Server() as server:
        host = context([(server.rule, ("GET", "POST"))], limits=limits)
        failure = error(host, server.url("/echo"), method="POST", body=b"x" * 101)
        assert failure.kind == "limit-exceeded"
        assert "101 bytes, more than the 100-byte limit" in failure.message
        assert server.hits == []
        assert len(get(host, server.url("/big?n=1000")).body) == 1000
        failure = error(host, server.url("/big?n=1001"))
        assert "1000-byte response limit" in failure.message
        assert len(get(host, server.url("/big?n=1000")).body) == 1000
        # 2000 bytes used of the call's 2500: the next response may have only 500.
        failure = error(host, server.url("/big?n=600"))
        assert "2500-byte limit on all responses of one call" in failure.message


def test_a_gzip_body_is_decoded_under_the_cap_and_labelled_as_decoded() -> None:
    with Server() as server:
        host = context([server.rule], limits=NetLimits(max_response_body_bytes=4096))
        response = get(host, server.url("/gzip?n=4096"))
        assert response.body == b"\0" * 4096
        names = {k.lower() for k, _ in response.headers}
        assert "content-encoding" not in names
        assert "content-length" not in names
        failure = error(host, server.url("/gzip?n=50000000"))  # 50 MB in ~50 KB
        assert failure.kind == "limit-exceeded"
    assert len(gzip.compress(b"\0" * 50_000_000)) < 100_000


def test_the_call_deadline_bounds_every_request() -> None:
    with Server() as server:
        host = context([server.rule], timeout_ms=600)
        failure = error(host, server.url("/drip"))
        assert failure.kind == "timeout"
        assert "within the call deadline (600 ms)" in failure.message
        # After the deadline no request starts at all.
        failure = error(host, server.url("/echo"))
        assert failure.kind == "timeout"
        assert "has no time left for requests" in failure.message
        hits = len(server.hits)
        # The engine restarts the clock when the guest starts running.
        host.start_clock()
        assert get(host, server.url("/echo")).status == 200
        assert len(server.hits) == hits + 1


# What the guest may send and gets back.


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("Host", "elsewhere.example", "header Host is set by the daemon"),
        ("host", "elsewhere.example", "header host is set by the daemon"),
        ("Transfer-Encoding", "chunked", "is set by the daemon"),
        ("Content-Length", "5", "is set by the daemon"),
        ("Connection", "close", "is set by the daemon"),
        ("Proxy-Authorization", "x", "is set by the daemon"),
        ("Proxy-Anything", "x", "is set by the daemon"),
        ("Accept-Encoding", "br", "is set by the daemon"),
        ("Upgrade", "h2c", "is set by the daemon"),
        ("X-Split", "a\r\nHost: evil", "line break or NUL"),
        ("Bad Name", "x", "not a valid header name"),
        ("X-Ask", "{SECRET:TOKEN}", "placeholder"),
    ],
)
def test_headers_only_the_daemon_sets_are_refused(name: str, value: str, complaint: str) -> None:
    with Server() as server:
        failure = error(context([server.rule]), server.url("/echo"), headers=((name, value),))
        assert failure.kind == "invalid-request"
        assert complaint in failure.message
        assert server.hits == []


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("ftp://127.0.0.1/x", "only absolute http:// and https:// URLs"),
        ("/relative", "only absolute http:// and https:// URLs"),
        ("http://user:pw@127.0.0.1/", "user:password@ are refused"),
        ("http://127.1/", "not a valid host name or canonical IP address"),
        ("http://2130706433/", "not a valid host name or canonical IP address"),
        ("http://0x7f000001/", "not a valid host name or canonical IP address"),
        ("http://[fe80::1%25eth0]/", "not a valid host name or canonical IP address"),
        ("http://127.0.0.1:99999/", "out of range"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_urls_are_refused_unless_plain_and_canonical(url: str, complaint: str) -> None:
    failure = error(context(["http://0.0.0.0/0"]), url)
    assert failure.kind == "invalid-request"
    assert complaint in failure.message


def test_methods_are_tokens_and_connect_is_never_sent() -> None:
    host = context([("http://127.0.0.1:9", ("GET",))])
    assert "is not an HTTP method" in error(host, "http://127.0.0.1:9/", method="G T").message
    assert "CONNECT requests are not supported" in (
        error(host, "http://127.0.0.1:9/", method="connect").message
    )


def test_hop_by_hop_response_headers_are_dropped() -> None:
    with Server() as server:
        response = get(context([server.rule]), server.url("/cookie"))
        names = {k.lower() for k, _ in response.headers}
        assert "set-cookie" in names
        assert not names & {"connection", "keep-alive", "transfer-encoding"}


def test_redirects_change_method_like_browsers_and_drop_credentials_across_origins() -> None:
    with serving("127.0.0.1", "127.0.0.2") as (first, second):
        host = context([(first.rule, ("GET", "POST")), (second.rule, ("GET", "POST"))])
        to_echo = "/redirect?to=/echo&status="
        seen = json.loads(get(host, first.url(to_echo + "303"), method="POST", body=b"a").body)
        assert (seen["method"], seen["body"]) == ("GET", "")
        seen = json.loads(get(host, first.url(to_echo + "307"), method="POST", body=b"a").body)
        assert (seen["method"], seen["body"]) == ("POST", "a")
        creds = (("Authorization", "guest-own"), ("Cookie", "c=1"), ("X-Keep", "1"))
        get(host, first.url(f"/redirect?to={second.url('/echo')}"), headers=creds)
        assert first.hits[-1]["headers"]["Authorization"] == "guest-own"
        assert "Authorization" not in second.hits[-1]["headers"]
        assert "Cookie" not in second.hits[-1]["headers"]
        assert second.hits[-1]["headers"]["X-Keep"] == "1"


# Secrets.


def bound(server: Server, name: str = "TOKEN") -> SecretRequest:
    return SecretRequest(
        name=name,
        hosts=(server.rule,),
        header="Authorization",
        format="Bearer {secret:" + name + "}",
    )


def test_a_secret_goes_only_to_its_hosts_and_comes_back_redacted() -> None:
    with serving("127.0.0.1", "127.0.0.2") as (api, other):
        host = context(
            [api.rule, other.rule], secrets=[bound(api)], values={"TOKEN": "v3ry-s3cret-token"}
        )
        body = get(host, api.url("/headers-echo")).body
        assert b"v3ry-s3cret-token" not in body
        assert api.hits[-1]["headers"]["Authorization"] == "Bearer v3ry-s3cret-token"
        get(host, other.url("/echo"))
        assert "Authorization" not in other.hits[-1]["headers"]
        assert host.net_log[0]["secrets"] == ["TOKEN"]
        assert "secrets" not in host.net_log[1]


def test_a_response_the_daemon_cannot_decode_is_refused_after_a_secret_was_sent() -> None:
    with serving("127.0.0.1", "127.0.0.2") as (api, other):
        host = context([api.rule, other.rule], secrets=[bound(api)], values={"TOKEN": "tkn-1234"})
        failure = error(host, api.url("/encoded?e=br"))
        assert failure.kind == "transport"
        assert "cannot inspect for the secret" in failure.message
        # Without a secret on the hop the bytes are passed through, labelled as they came.
        response = get(host, other.url("/encoded?e=br"))
        assert ("Content-Encoding", "br") in response.headers


def test_a_declared_secret_that_is_not_set_is_reported_in_the_tool_log() -> None:
    with Server() as api:
        host = context([api.rule], secrets=[bound(api)], values={})
        get(host, api.url("/echo"))
        get(host, api.url("/echo"))
        assert "Authorization" not in api.hits[-1]["headers"]
        notes = [line.message for line in host.logs if "TOKEN" in line.message]
        assert notes == [
            "[kami] secret TOKEN is declared but not set, so requests go without it; set it "
            f"with `kamictl secret set {TOOL} TOKEN`"
        ]


def test_secret_values_never_appear_in_error_messages() -> None:
    value = "hunter2-but-longer"
    host = context(["http://0.0.0.0/0"], secrets=[], values={"OLD": value})
    failure = error(host, f"http://{value}.example/")
    assert value not in failure.message
    assert "[redacted]" in failure.message


def test_the_redactor_covers_common_encodings() -> None:
    redactor = Redactor([("s3cr3t/+=", "Bearer s3cr3t/+=")])
    for text in (
        b"s3cr3t/+=",
        b"Bearer s3cr3t/+=",
        b"s3cr3t%2F%2B%3D",
        b"czNjcjN0Lys9",  # base64
        b"QmVhcmVyIHMzY3IzdC8rPQ==",  # base64 of the header value
    ):
        assert redactor.bytes(b"<" + text + b">") == b"<[redacted]>", text
    assert not Redactor([])
    assert Redactor([]).text("plain") == "plain"


def test_without_a_net_grant_the_answer_is_not_granted() -> None:
    network = Network()
    assert network.session(tool_id=TOOL, grants=Grants(), timeout_ms=1000) is None
    host = HostContext(tool_id=TOOL)
    failure = error(host, "https://example.com/")
    assert failure.kind == "not-granted"
    assert f"`kamictl grant {TOOL} --net HOST`" in failure.message
    assert host.net_log == []


def test_an_empty_grant_list_on_a_session_still_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    # A grant that no longer parses is dropped: the tool is denied, never widened.
    host = context(["127.1"])
    failure = error(host, "http://127.0.0.1/")
    assert failure.kind == "denied"
    assert "granted: nothing" in failure.message
    assert time.monotonic() > 0
