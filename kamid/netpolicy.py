"""Network policy: may this tool send this request to this address? Pure: no I/O.

A tool's net grants become :class:`Rule` objects (a :class:`~kamid.protocol.HostRule`
plus the methods it allows). :class:`NetPolicy` answers two questions the fetcher asks
for every hop of every request:

1. :meth:`NetPolicy.check_request`: does a rule allow this scheme, host, port and method?
2. :meth:`NetPolicy.check_address`: may the connection go to this address, one of those
   the host resolved to (or the address the URL names)?

Public addresses pass the second check. Loopback, private, link-local, multicast,
unspecified, reserved and cloud-metadata addresses do not, whatever name resolved to
them, unless a rule *names the address*: an IP literal, or a CIDR lying entirely in
non-public space (``10.0.0.0/8``, ``127.0.0.0/8``, ``fd00::/8``), allowing the same
scheme, port and method. A broad CIDR such as ``0.0.0.0/0`` covers public addresses only,
and cloud-metadata addresses (``169.254.169.254``, ``fd00:ec2::254``, ...) need a rule
naming exactly that address. Every denial says which rule or which reason denied it.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import DEFAULT_PORTS, HostRule, normalize_ip, parse_host_rule

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kamid.protocol import IPAddress, IPNetwork, NetGrant

__all__ = [
    "METADATA_ADDRESSES",
    "Decision",
    "NetLimits",
    "NetPolicy",
    "Rule",
    "Target",
    "classify",
]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: Instance-metadata and similar endpoints that hand out the machine's credentials.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
        "169.254.169.253",  # AWS DNS
        "169.254.169.123",  # AWS time
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
    )
)

# IANA special-purpose registries, spelled out rather than taken from ipaddress's
# is_private/is_global, whose answers changed between Python releases.
_SPECIAL_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (_V4(net), kind)
    for net, kind in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "private (shared address space)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)
_SPECIAL_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (_V6(net), kind)
    for net, kind in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private"),
        ("100::/64", "reserved"),
        ("2001::/23", "reserved"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("3fff::/20", "reserved (documentation)"),
        ("5f00::/16", "reserved"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),
        ("ff00::/8", "multicast"),
    )
)
_GLOBAL_UNICAST_V6 = _V6("2000::/3")
_NAT64 = _V6("64:ff9b::/96")
_SIXTOFOUR = _V6("2002::/16")


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is not public (``"loopback"``, ``"cloud-metadata"``, ...), or None.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:0:0/96``, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by the IPv4 address inside.
    """
    address = normalize_ip(address)
    if address in METADATA_ADDRESSES:
        return "cloud-metadata"
    if isinstance(address, ipaddress.IPv4Address):
        for net4, kind in _SPECIAL_V4:
            if address in net4:
                return kind
        return None
    if address in _NAT64:
        return classify(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _SIXTOFOUR:
        return classify(ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF))
    for net6, kind in _SPECIAL_V6:
        if address in net6:
            return kind
    if address not in _GLOBAL_UNICAST_V6:
        return "reserved"
    return None


def _is_special_network(network: IPNetwork) -> bool:
    """Whether every address of ``network`` lies in one non-public range."""
    if isinstance(network, ipaddress.IPv4Network):
        return any(network.subnet_of(net) for net, _ in _SPECIAL_V4)
    return any(network.subnet_of(net) for net, _ in _SPECIAL_V6)


@attrs.frozen(kw_only=True)
class NetLimits:
    """Per-call limits of ``kami:tool/http`` (``[net]`` in ``kamid.toml``).

    Moving a byte between host and guest costs about 1 µs in wasmtime-py (measured: a 1 MB
    response body takes ~0.9 s to hand to the guest), and that time is neither fuel
    counted nor stopped by the epoch deadline; the body caps are what bound it.
    """

    #: Requests per call; every redirect hop and every denied attempt counts.
    max_requests: int = 32
    #: Redirect hops followed per fetch.
    max_redirects: int = 5
    #: Bytes of request body a guest may send.
    max_request_body_bytes: int = 1024 * 1024
    #: Bytes of (decoded) response body per response; a longer one is an error.
    max_response_body_bytes: int = 1024 * 1024
    #: Bytes of response bodies per call, all fetches together.
    max_response_bytes_per_call: int = 4 * 1024 * 1024
    #: Deadline of one fetch (all its hops); the guest's timeout-ms and the call's
    #: remaining deadline lower it.
    request_timeout_ms: int = 10_000
    #: Request headers a guest may send, and their total size.
    max_request_headers: int = 64
    max_request_header_bytes: int = 32 * 1024

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(NetLimits):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"[net].{field.name} must be a non-negative integer (got {value!r})"
                )


@attrs.frozen(kw_only=True)
class Rule:
    """A granted host rule with the methods it allows."""

    host: HostRule
    methods: frozenset[str]

    @classmethod
    def from_grant(cls, grant: NetGrant) -> Rule:
        """Raises ValueError for a malformed host (a grant written before validation)."""
        return cls(
            host=parse_host_rule(grant.host), methods=frozenset(m.upper() for m in grant.methods)
        )

    def __str__(self) -> str:
        return f"'{self.host.text}' ({', '.join(sorted(self.methods))})"


@attrs.frozen(kw_only=True)
class Target:
    """Where one hop goes: normalized host, the address if the URL names one, port, method."""

    scheme: str
    #: Lower case ASCII without a trailing dot; for an address, its canonical text.
    host: str
    port: int
    method: str
    ip: IPAddress | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS.get(self.scheme)
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


@attrs.frozen(kw_only=True)
class Decision:
    allowed: bool
    #: Why, in a sentence free of double quotes; names the rule that allowed or denied.
    reason: str
    #: The text of the rule that allowed it (or that came closest, for a denial).
    rule: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return {"rule": self.rule, "reason": None if self.allowed else self.reason}


class NetPolicy:
    """The decisions for one tool's rules.

    Args:
        rules: the tool's granted rules, in grant order.
        tool_id: named in denial messages and in the grant commands they suggest.
    """

    def __init__(self, rules: Iterable[Rule], *, tool_id: str) -> None:
        self.rules = tuple(rules)
        self.tool_id = tool_id

    @classmethod
    def from_grants(cls, grants: Iterable[NetGrant], *, tool_id: str) -> NetPolicy:
        """Builds the policy; a grant that does not parse is dropped (it can only deny).

        Grants are validated when they are made, so this only happens to grants stored
        by an older kamid; dropping one never widens access.
        """
        rules = []
        for grant in grants:
            try:
                rules.append(Rule.from_grant(grant))
            except ValueError:
                continue
        return cls(rules, tool_id=tool_id)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def check_request(self, target: Target) -> Decision:
        """Whether a rule allows ``target``'s scheme, host, port and method."""
        hosts = [r for r in self.rules if r.host.matches_host(target.host, target.ip)]
        for rule in hosts:
            if (
                rule.host.scheme == target.scheme
                and rule.host.port == target.port
                and target.method in rule.methods
            ):
                return Decision(allowed=True, reason=f"allowed by rule {rule}", rule=rule.host.text)
        return self._denied(target, hosts)

    def check_address(self, target: Target, address: IPAddress) -> Decision:
        """Whether the connection for ``target`` may go to ``address``.

        Call it after :meth:`check_request` allowed ``target``, for every address its host
        resolved to (or the one the URL names).
        """
        address = normalize_ip(address)
        kind = classify(address)
        if kind is None:
            return Decision(allowed=True, reason=f"{address} is a public address")
        for rule in self.rules:
            if self._names(rule, address, kind) and (
                rule.host.scheme == target.scheme
                and rule.host.port == target.port
                and target.method in rule.methods
            ):
                return Decision(
                    allowed=True,
                    reason=f"{address} ({kind}) is named by rule {rule}",
                    rule=rule.host.text,
                )
        what = (
            f"{address} is a {kind} address"
            if target.ip is not None
            else f"{target.host} resolves to {address}, a {kind} address"
        )
        needs = (
            "a rule naming exactly this address"
            if kind == "cloud-metadata"
            else "a rule naming the address (an IP literal, or a CIDR inside that range)"
        )
        example = f"{target.scheme}://{_bracket(address)}:{target.port}"
        return Decision(
            allowed=False,
            reason=(
                f"{what}; {kind} addresses are denied "
                f"unless granted by {needs} for {target.scheme} port {target.port} and "
                f"{target.method}; if this is intended, the operator can grant it with "
                f"`kamictl grant {self.tool_id} --net {example}`"
            ),
        )

    @staticmethod
    def _names(rule: Rule, address: IPAddress, kind: str) -> bool:
        network = rule.host.network
        if network is None or address.version != network.version or address not in network:
            return False
        if kind == "cloud-metadata":
            return network.num_addresses == 1
        return network.num_addresses == 1 or _is_special_network(network)

    def _denied(self, target: Target, hosts: list[Rule]) -> Decision:
        methods = {"GET", "HEAD", target.method}
        grant = self._grant_command(_suggest(target), methods)
        if not hosts:
            names_only = target.ip is not None and any(not r.host.is_address for r in self.rules)
            hint = (
                "; host name rules never match a URL that names an IP address, which needs a "
                "rule naming the address"
                if names_only
                else ""
            )
            granted = ", ".join(str(r) for r in self.rules) or "nothing"
            return Decision(
                allowed=False,
                reason=(
                    f"no network rule of {self.tool_id} matches {target.host} "
                    f"(granted: {granted}){hint}; the operator can grant it with {grant}"
                ),
            )
        rule = hosts[0]
        if all(r.host.scheme != target.scheme for r in hosts):
            why = f"rule {rule} allows {rule.host.scheme} only, not {target.scheme}" + (
                "; plain http must be granted explicitly as http://..."
                if target.scheme == "http"
                else ""
            )
        elif all(r.host.port != target.port for r in hosts if r.host.scheme == target.scheme):
            ports = sorted({r.host.port for r in hosts if r.host.scheme == target.scheme})
            rule = next(r for r in hosts if r.host.scheme == target.scheme)
            why = (
                f"rule {rule} allows port {', '.join(map(str, ports))} only, not {target.port} "
                "(a rule without a port allows the default port of its scheme)"
            )
        else:
            same = [
                r for r in hosts if r.host.scheme == target.scheme and r.host.port == target.port
            ]
            rule = same[0]
            allowed = ", ".join(sorted(set().union(*(r.methods for r in same))))
            why = f"rule {rule} allows {allowed}, not {target.method}"
            grant = self._grant_command(rule.host.text, {*rule.methods, target.method})
        return Decision(
            allowed=False,
            reason=f"{why}; the operator can grant it with {grant}",
            rule=rule.host.text,
        )

    def _grant_command(self, host: str, methods: set[str]) -> str:
        # kamictl grant --net HOST[:METHODS]; GET and HEAD are the default.
        tail = "" if methods <= {"GET", "HEAD"} else ":" + ",".join(sorted(methods))
        return f"`kamictl grant {self.tool_id} --net {host}{tail}`"


def _bracket(address: IPAddress) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def _suggest(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    scheme = "http://" if target.scheme == "http" else ""
    port = "" if target.port == DEFAULT_PORTS[target.scheme] else f":{target.port}"
    return f"{scheme}{host}{port}"
