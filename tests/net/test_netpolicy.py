"""The network policy on its own: rule grammar, address classes, and decisions (no I/O)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import pytest

from kamid.config import load_config
from kamid.netpolicy import NetLimits, NetPolicy, Target, classify
from kamid.protocol import InvalidParams, NetGrant, normalize_host, parse_host_rule

if TYPE_CHECKING:
    from pathlib import Path


def policy(*rules: str | tuple[str, tuple[str, ...]]) -> NetPolicy:
    grants = [
        NetGrant(host=r) if isinstance(r, str) else NetGrant(host=r[0], methods=r[1]) for r in rules
    ]
    return NetPolicy.from_grants(grants, tool_id="dev.test.net")


def target(
    url_host: str, *, scheme: str = "https", port: int | None = None, method: str = "GET"
) -> Target:
    host, ip = normalize_host(url_host)
    return Target(
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        method=method,
        ip=ip,
    )


def allowed(p: NetPolicy, t: Target, *addresses: str) -> bool:
    """The full check a hop goes through: the request, then every address."""
    if not p.check_request(t).allowed:
        return False
    candidates = [t.ip] if t.ip is not None else [ipaddress.ip_address(a) for a in addresses]
    return all(p.check_address(t, a).allowed for a in candidates)


# Grammar.


@pytest.mark.parametrize(
    ("text", "described"),
    [
        ("api.example.com", "https://api.example.com:443"),
        ("API.Example.COM.", "https://api.example.com:443"),
        ("*.example.com", "https://*.example.com:443"),
        ("api.example.com:8443", "https://api.example.com:8443"),
        ("http://api.example.com", "http://api.example.com:80"),
        ("https://api.example.com:8443", "https://api.example.com:8443"),
        ("93.184.216.34", "https://93.184.216.34:443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("10.0.0.0/8", "https://10.0.0.0/8:443"),
        ("2001:db8::1", "https://[2001:db8::1]:443"),
        ("[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("fd00::/8", "https://[fd00::/8]:443"),
        ("[fd00::/8]:8080", "https://[fd00::/8]:8080"),
        ("::ffff:127.0.0.1", "https://127.0.0.1:443"),
        ("localhost", "https://localhost:443"),
        ("xn--bcher-kva.de", "https://xn--bcher-kva.de:443"),
    ],
)
def test_rules_parse_to_one_scheme_host_and_port(text: str, described: str) -> None:
    assert parse_host_rule(text).describe() == described


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "must not be empty"),
        ("ftp://example.com", "scheme must be http or https"),
        ("example.com/path", "not a path"),
        ("user@example.com", "not a URL"),
        ("*.com", "at least two labels"),
        ("*", "whole first label"),
        ("api.*.example.com", "whole first label"),
        ("ex*ample.com", "whole first label"),
        ("example.com:0", "port must be a number from 1 to 65535"),
        ("example.com:70000", "port must be a number from 1 to 65535"),
        ("example.com:http", "port must be a number"),
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ("10.0.0.0/33", "not a valid prefix length"),
        ("127.1", "canonical IP address"),
        ("2130706433", "canonical IP address"),
        ("0x7f.0.0.1", "canonical IP address"),
        ("fe80::1%eth0", "zone ids"),
        ("[::1", "missing ]"),
        ("[::1]x", "unexpected text"),
        ("2001:db8::zz", "not a valid IPv6 address"),
        ("bücher.de", "xn--"),
        ("-bad.example.com", "not a valid host name"),
        ("a..example.com", "not a valid host name"),
    ],
)
def test_malformed_rules_are_refused_with_the_reason(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as info:
        parse_host_rule(text)
    assert '"' not in str(info.value)


# Address classes.


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private (shared address space)"),
        ("fd12:3456::1", "private"),
        ("fc00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved (documentation)"),
        ("2001:db8::1", "reserved (documentation)"),
        ("169.254.169.254", "cloud-metadata"),
        ("169.254.170.2", "cloud-metadata"),
        ("100.100.100.200", "cloud-metadata"),
        ("fd00:ec2::254", "cloud-metadata"),
        ("::ffff:169.254.169.254", "cloud-metadata"),
        ("64:ff9b::a9fe:a9fe", "cloud-metadata"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("2001::1", "reserved"),  # Teredo
        ("::127.0.0.1", "reserved"),  # IPv4-compatible, deprecated
        ("4000::1", "reserved"),  # outside global unicast
    ],
)
def test_non_public_addresses_are_classified(address: str, kind: str) -> None:
    assert classify(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "::ffff:8.8.8.8",
    ],
)
def test_public_addresses_are_public(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None


# Decisions: names.


def test_an_exact_name_allows_https_on_443_with_get_and_head() -> None:
    p = policy("api.example.com")
    assert allowed(p, target("api.example.com"), "93.184.216.34")
    assert allowed(p, target("API.EXAMPLE.COM."), "93.184.216.34")
    assert allowed(p, target("api.example.com", method="HEAD"), "93.184.216.34")
    assert not allowed(p, target("api.example.com", method="POST"), "93.184.216.34")
    assert not allowed(p, target("api.example.com", scheme="http"), "93.184.216.34")
    assert not allowed(p, target("api.example.com", port=8443), "93.184.216.34")
    assert not allowed(p, target("www.example.com"), "93.184.216.34")
    assert not allowed(p, target("api.example.com.evil.net"), "93.184.216.34")


def test_a_wildcard_covers_one_label_or_more_but_not_the_domain_itself() -> None:
    p = policy("*.example.com")
    assert allowed(p, target("api.example.com"), "93.184.216.34")
    assert allowed(p, target("a.b.c.example.com"), "93.184.216.34")
    assert not allowed(p, target("example.com"), "93.184.216.34")
    assert not allowed(p, target("evilexample.com"), "93.184.216.34")
    assert not allowed(p, target("example.com.evil.net"), "93.184.216.34")


def test_a_port_in_the_rule_is_the_only_port() -> None:
    p = policy("api.example.com:8443")
    assert allowed(p, target("api.example.com", port=8443), "93.184.216.34")
    denial = p.check_request(target("api.example.com"))
    assert not denial.allowed
    assert "allows port 8443 only, not 443" in denial.reason
    assert denial.rule == "api.example.com:8443"


def test_plain_http_needs_an_explicit_rule() -> None:
    denial = policy("api.example.com").check_request(target("api.example.com", scheme="http"))
    assert "allows https only, not http" in denial.reason
    assert "granted explicitly as http://" in denial.reason
    p = policy("http://api.example.com")
    assert allowed(p, target("api.example.com", scheme="http"), "93.184.216.34")
    assert not allowed(p, target("api.example.com"), "93.184.216.34")


def test_methods_are_per_rule() -> None:
    p = policy(("api.example.com", ("GET", "POST")), "other.example.com")
    assert allowed(p, target("api.example.com", method="POST"), "93.184.216.34")
    assert not allowed(p, target("other.example.com", method="POST"), "93.184.216.34")
    denial = p.check_request(target("api.example.com", method="DELETE"))
    assert "allows GET, POST, not DELETE" in denial.reason
    assert "--net api.example.com:DELETE,GET,POST`" in denial.reason


def test_a_denial_names_what_is_granted_and_how_to_grant_more() -> None:
    denial = policy("api.example.com").check_request(target("evil.example.net"))
    assert not denial.allowed
    assert "no network rule of dev.test.net matches evil.example.net" in denial.reason
    assert "granted: 'api.example.com' (GET, HEAD)" in denial.reason
    assert "`kamictl grant dev.test.net --net evil.example.net`" in denial.reason
    assert '"' not in denial.reason


# Decisions: addresses.


def test_a_name_rule_never_matches_an_ip_literal() -> None:
    p = policy("api.example.com")
    denial = p.check_request(target("93.184.216.34"))
    assert not denial.allowed
    assert "host name rules never match a URL that names an IP address" in denial.reason


def test_ip_and_cidr_rules_match_addresses_in_both_families() -> None:
    p = policy("93.184.216.34", "203.0.113.0/24", "2606:4700::/32", "[2001:db8::5]:8443")
    assert allowed(p, target("93.184.216.34"))
    assert not allowed(p, target("93.184.216.35"))
    assert allowed(p, target("2606:4700:4700::1111"))
    assert not allowed(p, target("2606:4701::1"))
    assert allowed(p, target("2001:db8::5", port=8443))
    assert not allowed(p, target("2001:db8::5"))
    assert not allowed(p, target("::ffff:93.184.216.35"))
    assert allowed(p, target("::ffff:93.184.216.34"))


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("fd00::5", "private"),
        ("169.254.169.254", "cloud-metadata"),
        ("fd00:ec2::254", "cloud-metadata"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_a_name_resolving_to_a_non_public_address_is_denied(address: str, kind: str) -> None:
    p = policy("api.example.com")
    t = target("api.example.com")
    assert p.check_request(t).allowed
    denial = p.check_address(t, ipaddress.ip_address(address))
    assert not denial.allowed
    assert f"api.example.com resolves to {ipaddress.ip_address(address)}" in denial.reason
    assert f"a {kind} address" in denial.reason


def test_a_non_public_address_needs_a_rule_naming_it_with_the_same_scheme_and_port() -> None:
    t = target("internal.example.com", scheme="http", port=8080)
    loopback = ipaddress.ip_address("127.0.0.1")
    assert not policy("http://internal.example.com:8080").check_address(t, loopback).allowed
    both = policy("http://internal.example.com:8080", "http://127.0.0.1:8080")
    assert both.check_address(t, loopback).allowed
    assert (
        not policy("http://internal.example.com:8080", "http://127.0.0.1:9090")
        .check_address(t, loopback)
        .allowed
    )
    assert (
        not policy("http://internal.example.com:8080", "127.0.0.1:8080")
        .check_address(t, loopback)
        .allowed
    )  # https only
    narrow = policy("http://internal.example.com:8080", "http://127.0.0.0/8:8080")
    assert narrow.check_address(t, loopback).allowed


def test_a_broad_cidr_covers_public_addresses_only() -> None:
    p = policy("0.0.0.0/0", "::/0")
    assert allowed(p, target("93.184.216.34"))
    assert allowed(p, target("2606:4700:4700::1111"))
    for address in ("127.0.0.1", "10.0.0.1", "192.168.0.1", "169.254.169.254", "::1", "fd00::1"):
        assert not allowed(p, target(address)), address
    # A CIDR straddling public and private space does not unlock the private part.
    assert not allowed(policy("8.0.0.0/6"), target("10.0.0.1"))
    assert allowed(policy("8.0.0.0/6"), target("8.8.8.8"))


def test_cloud_metadata_needs_a_rule_naming_exactly_that_address() -> None:
    metadata = "169.254.169.254"
    assert not allowed(policy("169.254.0.0/16"), target(metadata))
    assert allowed(policy("169.254.0.0/16"), target("169.254.1.1"))
    assert allowed(policy(metadata), target(metadata))
    assert not allowed(policy("fd00:ec2::/32"), target("fd00:ec2::254"))
    assert allowed(policy("[fd00:ec2::254]"), target("fd00:ec2::254"))


def test_private_ranges_open_with_an_ip_or_cidr_grant() -> None:
    p = policy("10.0.0.0/8", "http://[fd00::/8]:8080", "127.0.0.1")
    assert allowed(p, target("10.20.30.40"))
    assert not allowed(p, target("10.20.30.40", scheme="http", port=80))
    assert allowed(p, target("fd00::1", scheme="http", port=8080))
    assert allowed(p, target("127.0.0.1"))
    assert not allowed(p, target("127.0.0.2"))


def test_ipv4_mapped_addresses_are_judged_as_ipv4() -> None:
    p = policy("api.example.com")
    t = target("api.example.com")
    assert not p.check_address(t, ipaddress.ip_address("::ffff:127.0.0.1")).allowed
    assert p.check_address(t, ipaddress.ip_address("::ffff:93.184.216.34")).allowed
    assert allowed(policy("127.0.0.1"), target("::ffff:127.0.0.1"))


def test_grants_that_do_not_parse_deny_rather_than_widen() -> None:
    p = policy("127.1", "api.example.com")
    assert len(p.rules) == 1
    assert not allowed(p, target("127.0.0.1"))


def test_net_limits_refuse_negative_values() -> None:
    with pytest.raises(ValueError, match="max_requests must be a non-negative integer"):
        NetLimits(max_requests=-1)


def test_net_limits_come_from_kamid_toml(tmp_path: Path) -> None:
    path = tmp_path / "kamid.toml"
    path.write_text("[net]\nmax_requests = 3\nrequest_timeout_ms = 2500\n")
    config = load_config(path)
    assert config.net == NetLimits(max_requests=3, request_timeout_ms=2500)
    path.write_text("[net]\nmax_request = 3\n")
    with pytest.raises(InvalidParams, match="max_request"):
        load_config(path)
