"""The grammar of network host rules, shared by manifests, grants and the daemon's policy.

A rule names where a tool may connect; the daemon's policy (:mod:`kamid.netpolicy`)
decides with it. Forms (scheme and port optional)::

    api.example.com            exact name, https, port 443
    *.example.com              any name under example.com (one label or more), not
                               example.com itself
    api.example.com:8443       that port only (no port: the scheme's default port only)
    http://api.example.com     plain http (port 80); https is the default scheme and the
                               only one a rule without a scheme allows
    93.184.216.34              an IPv4 literal; ``[2001:db8::1]`` or ``2001:db8::1`` (IPv6)
    10.0.0.0/8                 a CIDR; ``[fd00::/8]:8080`` for IPv6 with a port

Names are ASCII (write internationalized names in their ``xn--`` form) and matched case
insensitively, without a trailing dot. Pure and importable by ``kamictl``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

import attrs

__all__ = [
    "DEFAULT_PORTS",
    "HEADER_NAME",
    "RESERVED_REQUEST_HEADERS",
    "HostRule",
    "IPAddress",
    "IPNetwork",
    "normalize_host",
    "normalize_ip",
    "parse_host_rule",
    "reserved_header",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS: dict[str, int] = {"https": 443, "http": 80}

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_MAX_NAME = 253


@attrs.frozen(kw_only=True)
class HostRule:
    """One parsed rule. Exactly one of ``name``, ``suffix`` and ``network`` is set."""

    #: The rule as written, for messages and for finding it again (revoke).
    text: str
    scheme: Literal["http", "https"]
    #: The one port the rule allows: the written one, else the scheme's default.
    port: int
    #: An exact host name, lower case, no trailing dot.
    name: str | None = None
    #: For ``*.example.com``: ``".example.com"``; a name matches when it ends with it.
    suffix: str | None = None
    #: An IP literal (a /32 or /128 network) or a CIDR.
    network: IPNetwork | None = None

    @property
    def is_address(self) -> bool:
        """True for IP literals and CIDRs."""
        return self.network is not None

    @property
    def is_literal(self) -> bool:
        """True for a rule naming exactly one address."""
        return self.network is not None and self.network.num_addresses == 1

    def matches_host(self, host: str, ip: IPAddress | None) -> bool:
        """Whether the host part matches (scheme, port and method are checked apart).

        Args:
            host: a normalized host name (lower case, ASCII, no trailing dot).
            ip: the address when the URL names one; name rules never match it.
        """
        if ip is not None:
            return (
                self.network is not None
                and ip.version == self.network.version
                and (ip in self.network)
            )
        if self.name is not None:
            return host == self.name
        if self.suffix is not None:
            return host.endswith(self.suffix) and len(host) > len(self.suffix)
        return False

    def describe(self) -> str:
        """``scheme://host:port`` as the rule allows it, e.g. ``https://*.example.com:443``."""
        if self.network is not None:
            net = str(self.network.network_address) if self.is_literal else str(self.network)
            host = f"[{net}]" if self.network.version == 6 else net
        else:
            host = self.name or f"*{self.suffix}"
        return f"{self.scheme}://{host}:{self.port}"


def normalize_ip(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalize_host(host: str) -> tuple[str, IPAddress | None]:
    """A URL's host as rules match it: ``(name, None)`` or ``(address text, address)``.

    Names come back lower case without a trailing dot; an IPv4-mapped IPv6 address comes
    back as IPv4. Only canonical forms are accepted: ``127.1``, ``2130706433`` or
    ``0x7f.0.0.1`` would reach an address through a name no rule can mean.

    Raises:
        ValueError: not a valid host name or IP address; the message says why.
    """
    if "%" in host:
        raise ValueError(f"{host} is not a valid host (IPv6 zone ids and %-escapes are refused)")
    try:
        ip = normalize_ip(ipaddress.ip_address(host.removesuffix(".")))
    except ValueError:
        return _name(host, host), None
    return str(ip), ip


def parse_host_rule(text: str) -> HostRule:
    """Parses one rule.

    Raises:
        ValueError: the rule is malformed; the message says what is wrong with it and
            shows the accepted forms. It never contains double quotes.
    """
    if not isinstance(text, str):
        raise ValueError(f"a host rule must be a string (got {type(text).__name__})")
    raw = text.strip()
    if not raw:
        raise ValueError("a host rule must not be empty; " + _FORMS)
    rest = raw
    scheme: Literal["http", "https"] = "https"
    if "://" in rest:
        given, rest = rest.split("://", 1)
        if given.lower() == "http":
            scheme = "http"
        elif given.lower() != "https":
            raise ValueError(f"{raw}: the scheme must be http or https (got {given})")
    if any(c in rest for c in "?#@ \t\\"):
        raise ValueError(f"{raw}: a rule names a host, not a URL; " + _FORMS)
    host, port = _split_port(raw, rest)
    port = DEFAULT_PORTS[scheme] if port is None else port
    if "%" in host:
        raise ValueError(f"{raw}: IPv6 zone ids (%...) are not allowed")
    network = _network(raw, host)
    if network is not None:
        return HostRule(text=raw, scheme=scheme, port=port, network=network)
    if "/" in host:
        raise ValueError(f"{raw}: a rule names a host, not a path; " + _FORMS)
    if host.startswith("*."):
        suffix = _name(raw, host[2:])
        if suffix.count(".") < 1:
            raise ValueError(
                f"{raw}: a wildcard must cover a domain of at least two labels "
                "(like *.example.com), not a whole top-level domain"
            )
        return HostRule(text=raw, scheme=scheme, port=port, suffix="." + suffix)
    if "*" in host:
        raise ValueError(
            f"{raw}: a wildcard is allowed only as the whole first label, as in *.example.com"
        )
    return HostRule(text=raw, scheme=scheme, port=port, name=_name(raw, host))


_FORMS = (
    "write a name (api.example.com), a wildcard (*.example.com), an IP address "
    "(93.184.216.34, [2001:db8::1]) or a CIDR (10.0.0.0/8), optionally with http:// "
    "and a :port"
)


def _split_port(raw: str, rest: str) -> tuple[str, int | None]:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"{raw}: missing ] after the IPv6 address")
        host, after = rest[1:end], rest[end + 1 :]
        if not after:
            return host, None
        if not after.startswith(":"):
            raise ValueError(f"{raw}: unexpected text after ]; " + _FORMS)
        return host, _port(raw, after[1:])
    if rest.count(":") > 1:
        return rest, None  # a bare IPv6 address or CIDR, which cannot carry a port
    if ":" in rest:
        host, port = rest.split(":", 1)
        return host, _port(raw, port)
    return rest, None


def _port(raw: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(
            f"{raw}: the port must be a number from 1 to 65535 (got {text or 'nothing'})"
        )
    return int(text)


def _network(raw: str, host: str) -> IPNetwork | None:
    if "/" in host:
        address, _, bits = host.partition("/")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return None  # not an address: the caller reports a path
        try:
            network = ipaddress.ip_network(host, strict=True)
        except ValueError as exc:
            if "has host bits set" in str(exc):
                fixed = ipaddress.ip_network(host, strict=False)
                raise ValueError(
                    f"{raw}: {host} has host bits set; did you mean {fixed}?"
                ) from None
            raise ValueError(f"{raw}: /{bits} is not a valid prefix length for {address}") from None
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:
                return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        return network
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host:
            raise ValueError(f"{raw}: {host} is not a valid IPv6 address") from None
        return None
    return ipaddress.ip_network(normalize_ip(ip))


def _name(raw: str, host: str) -> str:
    name = host.lower().removesuffix(".")
    if not name.isascii():
        raise ValueError(
            f"{raw}: write internationalized names in their ASCII (xn--) form, as DNS sees them"
        )
    labels = name.split(".")
    if len(name) > _MAX_NAME or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{raw}: {host} is not a valid host name; " + _FORMS)
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        raise ValueError(
            f"{raw}: {host} is neither a host name nor a canonical IP address "
            "(write IPv4 addresses as four decimal numbers, like 10.0.0.1)"
        )
    return name


#: Request headers only the daemon sets: a guest (or a secret binding) naming one is
#: refused. Host would let a tool reach another virtual host on a granted address; the
#: framing and hop-by-hop ones would let it desynchronize the connection; Accept-Encoding
#: stays the daemon's so that it can decode, and so redact, every response body.
RESERVED_REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept-encoding",
    }
)
#: An HTTP header name (RFC 9110 token).
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def reserved_header(name: str) -> bool:
    """Whether only the daemon may set the request header ``name``."""
    lowered = name.lower()
    return lowered in RESERVED_REQUEST_HEADERS or lowered.startswith("proxy-")
