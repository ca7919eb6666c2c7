"""Consent on update: what a new version asks for beyond what the operator granted.

Pure functions over :class:`~kamid.protocol.Grants`. :func:`widening` lists every way in
which ``requested`` (what approving the new manifest would grant) goes beyond
``installed`` (the grants in force, including the operator's own grants and revocations);
an update with a non-empty widening is not applied until the operator says yes, and then
:func:`widen` adds exactly those items. Coverage is judged conservatively: when in doubt
(a port, a scheme, a CIDR), an item counts as new and the operator is asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import FsGrant, Grants, NetGrant, grants_from_requests
from kamid.sandbox import MiB

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kamid.protocol import Manifest, SecurityRequests

__all__ = [
    "Widening",
    "manifest_limits",
    "net_covered",
    "requested_grants",
    "secret_widening",
    "widen",
    "widening",
]

_FS_WORDS = {
    "sandbox": "sandbox (a persistent /data, read-write)",
    "read-only": "read-only (its assets at /assets)",
}


@attrs.frozen
class Widening:
    """One thing an update asks for that the installed grants do not give."""

    #: ``network``, ``filesystem``, ``path``, ``environment``, ``kv``, ``invoke``,
    #: ``limit`` or ``secret``.
    kind: str
    detail: str

    def line(self) -> str:
        return f"{self.kind}: {self.detail}"


def manifest_limits(requests: SecurityRequests) -> dict[str, int]:
    """The limits a manifest asks for, under the daemon's limit names and units."""
    out: dict[str, int] = {}
    if requests.max_memory_mb is not None:
        out["memory_bytes"] = requests.max_memory_mb * MiB
    if requests.max_fuel is not None:
        out["fuel"] = requests.max_fuel
    if requests.timeout_ms is not None:
        out["timeout_ms"] = requests.timeout_ms
    return out


def requested_grants(manifest: Manifest, defaults: Mapping[str, int]) -> Grants:
    """The grants approving ``manifest`` as it is would give, limits above the defaults
    included (a manifest asking for less than a default asks for nothing extra)."""
    base = grants_from_requests(manifest.security)
    raised = {
        name: value
        for name, value in manifest_limits(manifest.security).items()
        if value > defaults.get(name, 0)
    }
    return attrs.evolve(base, limits={**base.limits, **raised}) if raised else base


def _bare(host: str) -> bool:
    return "://" not in host and ":" not in host and "/" not in host and "*" not in host


def net_covered(grants: tuple[NetGrant, ...], host: str) -> set[str]:
    """The methods ``grants`` allow for the host pattern ``host`` (as written).

    A grant covers the same pattern (case-insensitively), and ``*.example.com`` covers a
    plain name below it (``api.example.com``, no scheme or port). Nothing else counts:
    different ports, schemes, IP ranges and wildcards are new hosts to approve.
    """
    want = host.strip().lower()
    methods: set[str] = set()
    for grant in grants:
        have = grant.host.strip().lower()
        covers = have == want or (
            have.startswith("*.") and _bare(want) and want.endswith(have[1:]) and want != have[2:]
        )
        if covers:
            methods.update(m.upper() for m in grant.methods)
    return methods


def widening(
    installed: Grants, requested: Grants, *, defaults: Mapping[str, int]
) -> list[Widening]:
    """Everything ``requested`` gives that ``installed`` does not, one item each.

    Args:
        installed: the grants in force now.
        requested: the grants the new version would get if approved as it is.
        defaults: the daemon's default limits; a limit at or below the default, or at or
            below what ``installed`` already raised it to, is not a widening.
    """
    out: list[Widening] = []
    for grant in requested.net:
        have = net_covered(installed.net, grant.host)
        if not have:
            out.append(Widening("network", f"{grant.host} ({', '.join(grant.methods)})"))
        elif missing := [m for m in grant.methods if m.upper() not in have]:
            out.append(Widening("network", f"{grant.host}: also {', '.join(missing)}"))
    if requested.fs != "none" and requested.fs != installed.fs:
        out.append(Widening("filesystem", _FS_WORDS.get(requested.fs, requested.fs)))
    for path in requested.paths:
        if not any(_path_covers(have, path) for have in installed.paths):
            out.append(Widening("path", f"{path.host_path} at {path.guest_path} ({path.mode})"))
    out += [Widening("environment", name) for name in requested.env if name not in installed.env]
    if requested.kv and not installed.kv:
        out.append(Widening("kv", "its key-value store"))
    out += [Widening("invoke", t) for t in requested.invoke if t not in installed.invoke]
    for name, value in sorted(requested.limits.items()):
        current = installed.limits.get(name, defaults.get(name, 0))
        if value > current:
            out.append(Widening("limit", f"{name} {current} -> {value}"))
    return out


def _path_covers(have: FsGrant, want: FsGrant) -> bool:
    same = (have.host_path, have.guest_path) == (want.host_path, want.guest_path)
    return same and (have.mode == "rw" or want.mode == "ro")


def widen(installed: Grants, requested: Grants, *, defaults: Mapping[str, int]) -> Grants:
    """``installed`` plus exactly what :func:`widening` lists (after the operator's yes).

    Nothing installed is dropped: the operator's own grants stay.
    """
    net = list(installed.net)
    for grant in requested.net:
        have = net_covered(tuple(net), grant.host)
        missing = tuple(m for m in grant.methods if m.upper() not in have)
        if not missing:
            continue
        same = [
            i for i, g in enumerate(net) if g.host.strip().lower() == grant.host.strip().lower()
        ]
        if same:
            old = net[same[0]]
            net[same[0]] = NetGrant(host=old.host, methods=(*old.methods, *missing))
        else:
            net.append(NetGrant(host=grant.host, methods=tuple(grant.methods)))
    paths = list(installed.paths)
    for path in requested.paths:
        if not any(_path_covers(have, path) for have in paths):
            paths = [
                p for p in paths if (p.host_path, p.guest_path) != (path.host_path, path.guest_path)
            ]
            paths.append(path)
    env = dict(installed.env)
    for name, env_value in requested.env.items():
        env.setdefault(name, env_value)
    limits = dict(installed.limits)
    for name, limit in requested.limits.items():
        if limit > limits.get(name, defaults.get(name, 0)):
            limits[name] = limit
    return attrs.evolve(
        installed,
        net=tuple(net),
        fs=requested.fs if requested.fs != "none" else installed.fs,
        paths=tuple(paths),
        env=env,
        kv=installed.kv or requested.kv,
        invoke=tuple(dict.fromkeys((*installed.invoke, *requested.invoke))),
        limits=limits,
    )


def secret_widening(old: SecurityRequests, new: SecurityRequests) -> list[Widening]:
    """Secrets the new manifest has injected somewhere the old one did not.

    Secrets are bound by the manifest (not held in :class:`Grants`), so the manifests are
    compared: a new secret, a new host for one, or a different header or format counts.
    """
    before: dict[str, Any] = {s.name: s for s in getattr(old, "secrets", ())}
    out = []
    for secret in getattr(new, "secrets", ()):
        prior = before.get(secret.name)
        where = f"{secret.name} sent as {secret.header} to {', '.join(secret.hosts)}"
        if prior is None:
            out.append(Widening("secret", where))
        elif (
            not set(secret.hosts) <= set(prior.hosts)
            or secret.header != prior.header
            or secret.format != prior.format
        ):
            out.append(Widening("secret", f"{where} (was: to {', '.join(prior.hosts)})"))
    return out
