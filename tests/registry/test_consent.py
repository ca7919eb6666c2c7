"""Consent on update (kamid/registry/_consent.py): what a new version asks for beyond the
installed grants, and the grants after the operator's yes. Pure functions, no daemon."""

from __future__ import annotations

import pytest

from kamid.protocol import FsGrant, Grants, NetGrant, parse_manifest
from kamid.registry import requested_grants, secret_widening, widen, widening
from kamid.registry._consent import net_covered
from kamid.sandbox import MiB

DEFAULTS = {"memory_bytes": 256 * MiB, "fuel": 10_000_000_000, "timeout_ms": 10_000}


def manifest(security: str = ""):  # type: ignore[no-untyped-def]
    return parse_manifest(
        '[tool]\nid = "dev.test.t"\nname = "t"\nversion = "1.0.0"\ndescription = "d"\n'
        f'wasm = "t.wasm"\n[security]\n{security}\n'
    )


def lines(installed: Grants, requested: Grants) -> list[str]:
    return [w.line() for w in widening(installed, requested, defaults=DEFAULTS)]


def test_nothing_new_is_no_widening() -> None:
    g = Grants(net=(NetGrant(host="api.example.com", methods=("GET", "POST")),), env={"A": None})
    assert lines(g, g) == []
    assert lines(g, Grants()) == []
    assert lines(g, Grants(net=(NetGrant(host="API.example.com", methods=("GET",)),))) == []


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (
            Grants(net=(NetGrant(host="evil.example.org"),)),
            ["network: evil.example.org (GET, HEAD)"],
        ),
        (
            Grants(net=(NetGrant(host="api.example.com", methods=("GET", "DELETE")),)),
            ["network: api.example.com: also DELETE"],
        ),
        (Grants(fs="sandbox"), ["filesystem: sandbox (a persistent /data, read-write)"]),
        (Grants(fs="read-only"), ["filesystem: read-only (its assets at /assets)"]),
        (Grants(env={"HOME": None}), ["environment: HOME"]),
        (Grants(kv=True), ["kv: its key-value store"]),
        (Grants(invoke=("dev.other.tool",)), ["invoke: dev.other.tool"]),
        (
            Grants(paths=(FsGrant(host_path="/srv", guest_path="/work", mode="rw"),)),
            ["path: /srv at /work (rw)"],
        ),
        (
            Grants(limits={"memory_bytes": 512 * MiB}),
            [f"limit: memory_bytes {256 * MiB} -> {512 * MiB}"],
        ),
    ],
)
def test_each_kind_of_widening(requested: Grants, expected: list[str]) -> None:
    installed = Grants(
        net=(NetGrant(host="api.example.com", methods=("GET", "POST")),),
        env={"TOKEN": None},
        paths=(FsGrant(host_path="/srv", guest_path="/work", mode="ro"),),
    )
    assert lines(installed, requested) == expected


def test_limits_compare_with_the_installed_raise_then_the_default() -> None:
    raised = Grants(limits={"memory_bytes": 512 * MiB})
    assert lines(raised, Grants(limits={"memory_bytes": 512 * MiB})) == []
    assert lines(raised, Grants(limits={"memory_bytes": 1024 * MiB})) == [
        f"limit: memory_bytes {512 * MiB} -> {1024 * MiB}"
    ]
    assert lines(Grants(), Grants(limits={"fuel": 5})) == []  # below the default: nothing new


def test_write_access_is_new_even_over_read_only() -> None:
    assert lines(Grants(fs="read-only"), Grants(fs="sandbox")) == [
        "filesystem: sandbox (a persistent /data, read-write)"
    ]
    ro = FsGrant(host_path="/srv", guest_path="/work", mode="ro")
    rw = FsGrant(host_path="/srv", guest_path="/work", mode="rw")
    assert lines(Grants(paths=(rw,)), Grants(paths=(ro,))) == []
    assert lines(Grants(paths=(ro,)), Grants(paths=(rw,))) == ["path: /srv at /work (rw)"]


@pytest.mark.parametrize(
    ("have", "want", "covered"),
    [
        ("api.example.com", "api.example.com", True),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "api.example.com:8443", False),
        ("*.example.com", "http://api.example.com", False),
        ("*.example.com", "*.api.example.com", False),
        ("api.example.com", "api.example.com:8443", False),
        ("10.0.0.0/8", "10.1.2.3", False),
        ("example.com", "evil-example.com", False),
        ("*.example.com", "evilexample.com", False),
    ],
)
def test_host_coverage_is_conservative(have: str, want: str, covered: bool) -> None:
    assert bool(net_covered((NetGrant(host=have),), want)) is covered


def test_revoked_requests_count_again() -> None:
    # The operator revoked the network grant v1 asked for; v2 asks for it again.
    v2 = requested_grants(manifest('net = [{ host = "api.example.com" }]'), DEFAULTS)
    assert lines(Grants(), v2) == ["network: api.example.com (GET, HEAD)"]


def test_requested_grants_from_a_manifest() -> None:
    m = manifest(
        'net = [{ host = "api.example.com", methods = ["GET", "POST"] }]\n'
        'fs = "sandbox"\nenv = ["LANG"]\nmax_memory_mb = 512\nmax_fuel = 5\n'
    )
    g = requested_grants(m, DEFAULTS)
    assert g.net == (NetGrant(host="api.example.com", methods=("GET", "POST")),)
    assert g.fs == "sandbox"
    assert g.env == {"LANG": None}
    assert g.limits == {"memory_bytes": 512 * MiB}  # fuel 5 is below the default


def test_widen_adds_exactly_the_widening_and_keeps_the_operators_grants() -> None:
    installed = Grants(
        net=(NetGrant(host="api.example.com", methods=("GET",)),),
        env={"TOKEN": "operator-value"},
        kv=True,
        invoke=("dev.a.b",),
        paths=(FsGrant(host_path="/srv", guest_path="/work"),),
        limits={"fuel": 20_000_000_000},
    )
    requested = Grants(
        net=(
            NetGrant(host="api.example.com", methods=("GET", "POST")),
            NetGrant(host="cdn.example.com"),
        ),
        fs="sandbox",
        env={"TOKEN": None, "LANG": None},
        limits={"memory_bytes": 512 * MiB, "fuel": 1},
    )
    after = widen(installed, requested, defaults=DEFAULTS)
    assert after.net == (
        NetGrant(host="api.example.com", methods=("GET", "POST")),
        NetGrant(host="cdn.example.com", methods=("GET", "HEAD")),
    )
    assert after.fs == "sandbox"
    assert after.env == {"TOKEN": "operator-value", "LANG": None}
    assert after.kv is True
    assert after.invoke == ("dev.a.b",)
    assert after.paths == installed.paths
    assert after.limits == {"fuel": 20_000_000_000, "memory_bytes": 512 * MiB}
    # Widening what was widened asks for nothing more, and it never narrows anything.
    assert lines(after, requested) == []
    assert lines(after, installed) == []


def test_secrets_are_compared_between_manifests() -> None:
    old = manifest(
        '[[security.secrets]]\nname = "TOKEN"\nhosts = ["api.example.com"]\n'
        'header = "Authorization"\n'
    ).security
    same = secret_widening(old, old)
    assert same == []
    moved = manifest(
        '[[security.secrets]]\nname = "TOKEN"\nhosts = ["api.example.com", "evil.example.org"]\n'
        'header = "Authorization"\n'
    ).security
    assert [w.line() for w in secret_widening(old, moved)] == [
        "secret: TOKEN sent as Authorization to api.example.com, evil.example.org "
        "(was: to api.example.com)"
    ]
    new = manifest(
        '[[security.secrets]]\nname = "OTHER"\nhosts = ["api.example.com"]\nheader = "X-Key"\n'
    ).security
    assert [w.kind for w in secret_widening(old, new)] == ["secret"]
    assert secret_widening(old, manifest().security) == []
