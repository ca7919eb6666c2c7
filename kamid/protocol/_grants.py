"""Grants: what the operator approved for a tool. Only the operator changes them.

A manifest *requests* capabilities (:class:`~kamid.protocol.SecurityRequests`); at install
the operator approves them (``--yes`` or the prompt), which turns them into these grants,
stored with the tool. ``kamictl grant`` / ``kamictl revoke`` change them later. Nothing a
tool or an MCP client sends can widen them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs
import cattrs

if TYPE_CHECKING:
    from ._manifest import SecurityRequests

__all__ = ["FsGrant", "Grants", "NetGrant", "grants_from_requests"]


@attrs.frozen(kw_only=True)
class NetGrant:
    #: ``api.example.com``, ``*.example.com``, ``api.example.com:8443``, ``http://host``,
    #: an IP literal (``93.184.216.34``, ``[::1]``) or a CIDR (``10.0.0.0/8``).
    host: str
    methods: tuple[str, ...] = ("GET", "HEAD")


@attrs.frozen(kw_only=True)
class FsGrant:
    """An operator path grant: a host directory mounted into the guest."""

    host_path: str
    guest_path: str
    mode: Literal["ro", "rw"] = "ro"


@attrs.frozen(kw_only=True)
class Grants:
    net: tuple[NetGrant, ...] = ()
    #: "sandbox": a persistent per-tool dir at /data; "read-only": the tool's assets at /assets.
    fs: Literal["none", "sandbox", "read-only"] = "none"
    paths: tuple[FsGrant, ...] = ()
    #: Variable name -> value; ``None`` passes kamid's own value of that variable.
    env: dict[str, str | None] = attrs.Factory(dict)
    kv: bool = False
    #: Tool ids this tool may call through ``kami:tool/invoke``.
    invoke: tuple[str, ...] = ()
    #: Limits the operator raised above the daemon defaults for this tool (Limits field names).
    limits: dict[str, int] = attrs.Factory(dict)

    def is_empty(self) -> bool:
        return self == Grants()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _converter.unstructure(self)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grants:
        return _converter.structure(data, cls)


_converter = cattrs.Converter()


def grants_from_requests(requests: SecurityRequests) -> Grants:
    """The grants an operator gives by approving a manifest's requests as they are."""
    return Grants(
        net=tuple(NetGrant(host=r.host, methods=r.methods) for r in requests.net),
        fs=requests.fs,
        env=dict.fromkeys(requests.env),
    )
