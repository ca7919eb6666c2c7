"""Changing grants: what ``tools.grant`` and ``tools.revoke`` do to a tool's :class:`Grants`.

Pure functions over the grants, except for host paths, which are canonicalized here, at
grant time (symlinks resolved, ``..`` gone), and refused when they overlap KAMI's own
state: a tool that could see the database, the blobs, the AOT cache (native code kamid
runs) or another tool's sandbox would own the daemon. Every refusal says what to grant
instead; a refused request changes nothing.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import FsGrant, Grants, InvalidParams, NetGrant, PolicyDenied
from kamid.sandbox import LIMIT_NAMES

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kamid.protocol import GrantToolParams, Paths, RevokeToolParams
    from kamid.sandbox import Limits

__all__ = [
    "ASSETS_GUEST",
    "RESERVED_GUEST_PATHS",
    "SANDBOX_GUEST",
    "apply_grant",
    "apply_revoke",
    "canonical_host_path",
    "check_guest_path",
    "describe",
]

#: Where ``fs = "sandbox"`` mounts the tool's persistent directory.
SANDBOX_GUEST = "/data"
#: Where ``fs = "read-only"`` mounts the tool's installed assets.
ASSETS_GUEST = "/assets"
RESERVED_GUEST_PATHS = (SANDBOX_GUEST, ASSETS_GUEST)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOOL_ID = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_ENV_VALUE = 32 * 1024
#: Host directories no grant may reach: the kernel's views of processes and devices
#: (a tool reading /proc/<kamid>/environ or writing /proc/<kamid>/mem owns the daemon).
_SYSTEM_DIRS = ("/proc", "/sys", "/dev")


def _protected(paths: Paths) -> list[str]:
    home = os.environ.get("KAMI_HOME")
    dirs = [paths.data, paths.cache, paths.run, paths.logs, paths.config_file.parent]
    found = [os.path.realpath(d) for d in dirs]
    if home:
        found.append(os.path.realpath(os.path.expanduser(home)))
    return sorted(set(found))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def canonical_host_path(raw: str, paths: Paths) -> str:
    """The canonical form of a host directory an operator wants to grant.

    Raises:
        InvalidParams: not absolute, missing, or not a directory.
        PolicyDenied: it is, contains or lies inside KAMI's own state (KAMI_HOME, data,
            cache, sockets, logs, config) or /proc, /sys, /dev, or it is ``/``.
    """
    if not isinstance(raw, str) or not raw or "\0" in raw:
        raise InvalidParams(f"--fs: the host path must be a non-empty path (got {raw!r})")
    if not os.path.isabs(raw):
        raise InvalidParams(
            f"--fs {raw}: the host path must be absolute (kamictl resolves relative paths "
            "against the current directory before sending them)"
        )
    host = os.path.realpath(raw)
    if not os.path.isdir(host):
        what = "does not exist" if not os.path.lexists(host) else "is not a directory"
        raise InvalidParams(
            f"--fs {raw}: {host} {what}; grant an existing directory", data={"path": host}
        )
    if host == "/":
        raise PolicyDenied(
            f"--fs {raw}: refusing to grant the whole filesystem; grant the one directory "
            "the tool needs",
            data={"path": host},
        )
    for root in [*_protected(paths), *_SYSTEM_DIRS]:
        if _inside(host, root) or _inside(root, host):
            relation = "is inside" if _inside(host, root) else "contains"
            raise PolicyDenied(
                f"--fs {raw}: {host} {relation} {root}, which a tool must never reach "
                "(KAMI's own state, or the kernel's process and device files); grant a "
                "directory outside it",
                data={"path": host, "protected": root},
            )
    return host


def check_guest_path(raw: str) -> str:
    """A guest mount point: absolute, normalized, not ``/`` and not a reserved one.

    Raises:
        InvalidParams: otherwise, saying which form to use.
    """
    if not isinstance(raw, str) or not raw.startswith("/") or "\0" in raw or len(raw) > 255:
        raise InvalidParams(f"--fs: the guest path must be absolute, like /work (got {raw!r})")
    parts = raw.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(raw) != raw:
        raise InvalidParams(
            f"--fs: the guest path {raw!r} must be normalized (no '.', '..' or '//' and no "
            "trailing slash), like /work/input"
        )
    if raw == "/":
        raise InvalidParams("--fs: the guest path must not be / itself; use e.g. /work")
    for reserved in RESERVED_GUEST_PATHS:
        if _inside(raw, reserved):
            raise InvalidParams(
                f"--fs: {raw} is reserved ({SANDBOX_GUEST} is the tool's sandbox, "
                f"{ASSETS_GUEST} its assets); mount the directory elsewhere, e.g. /work"
            )
    return raw


def _check_env(name: str, value: str | None) -> None:
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise InvalidParams(
            f"--env: {name!r} is not a variable name (letters, digits and _, not starting "
            "with a digit)"
        )
    if value is not None and ("\0" in value or len(value) > _MAX_ENV_VALUE):
        raise InvalidParams(
            f"--env {name}: the value must be at most {_MAX_ENV_VALUE} characters without NUL"
        )


def _check_net(grant: NetGrant) -> NetGrant:
    host = grant.host.strip() if isinstance(grant.host, str) else ""
    problem = _host_rule_problem(host)
    if problem:
        raise InvalidParams(f"--net {grant.host!r}: {problem}")
    methods = tuple(dict.fromkeys(m.upper() for m in grant.methods))
    bad = [m for m in methods if m not in _METHODS]
    if bad or not methods:
        raise InvalidParams(
            f"--net {host}: unknown HTTP method(s) {bad or '(none)'}; use some of "
            f"{', '.join(sorted(_METHODS))}, as in --net {host}:GET,POST"
        )
    return NetGrant(host=host, methods=methods)


def _host_rule_problem(host: str) -> str | None:
    if not host:
        return "the host must not be empty"
    try:
        from kamid.protocol._netrules import parse_host_rule
    except ImportError:  # the network layer's grammar is not there: accept any name
        return None
    try:
        parse_host_rule(host)
    except ValueError as exc:
        return str(exc)
    return None


def _check_limit(name: str, value: Any, ceilings: Limits) -> int:
    if name not in LIMIT_NAMES:
        raise InvalidParams(
            f"--limit {name}: unknown limit; the limits are {', '.join(LIMIT_NAMES)}"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidParams(f"--limit {name}: the value must be a positive integer (got {value!r})")
    ceiling = getattr(ceilings, name)
    if value > ceiling:
        raise PolicyDenied(
            f"--limit {name}={value} is above this daemon's ceiling of {ceiling}; raise "
            f"[ceilings].{name} in kamid.toml first (and restart kamid) if the tool really "
            "needs it",
            data={"limit": name, "value": value, "ceiling": ceiling},
        )
    return value


def apply_grant(
    grants: Grants, p: GrantToolParams, *, paths: Paths, ceilings: Limits
) -> tuple[Grants, list[str]]:
    """``grants`` with everything in ``p`` added; and one line per actual change.

    Raises:
        InvalidParams, PolicyDenied: something in ``p`` cannot be granted; nothing is.
    """
    changes: list[str] = []
    fs = grants.fs
    if p.fs is not None and p.fs != fs:
        changes.append(f"filesystem: {fs} -> {p.fs}")
        fs = p.fs
    by_guest = {g.guest_path: g for g in grants.paths}
    for g in p.paths:
        if g.mode not in ("ro", "rw"):
            raise InvalidParams(f"--fs: the mode must be ro or rw (got {g.mode!r})")
        new = FsGrant(
            host_path=canonical_host_path(g.host_path, paths),
            guest_path=check_guest_path(g.guest_path),
            mode=g.mode,
        )
        old = by_guest.get(new.guest_path)
        if old != new:
            was = f" (was {_path_line(old)})" if old else ""
            changes.append(f"path: {_path_line(new)}{was}")
            by_guest[new.guest_path] = new
    env = dict(grants.env)
    for name, value in p.env.items():
        _check_env(name, value)
        if name not in env or env[name] != value:
            source = "kamid's own value" if value is None else "a value set by the operator"
            changes.append(f"environment: {name} ({source})")
            env[name] = value
    by_host = {n.host: n for n in grants.net}
    for n in p.net:
        new_net = _check_net(n)
        if by_host.get(new_net.host) != new_net:
            changes.append(f"network: {new_net.host} ({', '.join(new_net.methods)})")
            by_host[new_net.host] = new_net
    kv = grants.kv
    if p.kv and not kv:
        changes.append("kv: per-tool key-value store")
        kv = True
    invoke = list(grants.invoke)
    for tool in p.invoke:
        if not isinstance(tool, str) or not _TOOL_ID.match(tool):
            raise InvalidParams(f"--invoke: {tool!r} is not a tool id like dev.example.tool")
        if tool not in invoke:
            changes.append(f"invoke: {tool}")
            invoke.append(tool)
    limits = dict(grants.limits)
    for limit, amount in p.limits.items():
        checked = _check_limit(limit, amount, ceilings)
        if limits.get(limit) != checked:
            changes.append(f"limit: {limit} = {checked}")
            limits[limit] = checked
    updated = attrs.evolve(
        grants,
        fs=fs,
        paths=tuple(sorted(by_guest.values(), key=lambda g: g.guest_path)),
        env=env,
        net=tuple(by_host.values()),
        kv=kv,
        invoke=tuple(invoke),
        limits=limits,
    )
    return updated, changes


def apply_revoke(grants: Grants, p: RevokeToolParams) -> tuple[Grants, list[str]]:
    """``grants`` without what ``p`` names; and one line per removal.

    Raises:
        InvalidParams: ``p`` names something the tool was not granted (nothing changes).
    """
    if p.all:
        return Grants(), [f"everything ({'; '.join(describe(grants)) or 'nothing was granted'})"]
    changes: list[str] = []
    fs = grants.fs
    if p.fs:
        _require(fs != "none", "--fs", "a filesystem mode", [])
        changes.append(f"filesystem: {fs} -> none")
        fs = "none"
    kept_paths = list(grants.paths)
    for key in p.paths:
        match = [g for g in kept_paths if key in (g.guest_path, g.host_path)]
        _require(bool(match), "--fs", key, [g.guest_path for g in kept_paths])
        for g in match:
            kept_paths.remove(g)
            changes.append(f"path: {_path_line(g)}")
    env = dict(grants.env)
    for name in p.env:
        _require(name in env, "--env", name, list(env))
        del env[name]
        changes.append(f"environment: {name}")
    net = list(grants.net)
    for host in p.net:
        match_net = [n for n in net if n.host == host.strip()]
        _require(bool(match_net), "--net", host, [n.host for n in net])
        net = [n for n in net if n not in match_net]
        changes.append(f"network: {host.strip()}")
    kv = grants.kv
    if p.kv:
        _require(kv, "--kv", "the key-value store", [])
        kv = False
        changes.append("kv")
    invoke = list(grants.invoke)
    for tool in p.invoke:
        _require(tool in invoke, "--invoke", tool, invoke)
        invoke.remove(tool)
        changes.append(f"invoke: {tool}")
    limits = dict(grants.limits)
    for name in p.limits:
        _require(name in limits, "--limit", name, list(limits))
        del limits[name]
        changes.append(f"limit: {name} (back to the daemon default)")
    new = attrs.evolve(
        grants,
        fs=fs,
        paths=tuple(kept_paths),
        env=env,
        net=tuple(net),
        kv=kv,
        invoke=tuple(invoke),
        limits=limits,
    )
    return new, changes


def _require(ok: bool, flag: str, what: str, granted: Iterable[str]) -> None:
    if not ok:
        have = ", ".join(granted) or "none"
        raise InvalidParams(
            f"{flag} {what}: not granted to this tool, so there is nothing to revoke "
            f"(granted: {have}); `kamictl inspect TOOL` shows its grants",
        )


def _path_line(g: FsGrant) -> str:
    return f"{g.host_path} at {g.guest_path} ({g.mode})"


def describe(grants: Grants) -> list[str]:
    """One human-readable line per grant (empty: deny-all)."""
    lines = [f"network: {n.host} ({', '.join(n.methods)})" for n in grants.net]
    if grants.fs == "sandbox":
        lines.append(f"filesystem: sandbox (persistent {SANDBOX_GUEST}, read-write)")
    elif grants.fs == "read-only":
        lines.append(f"filesystem: read-only (its assets at {ASSETS_GUEST})")
    lines += [f"path: {_path_line(g)}" for g in grants.paths]
    for name, value in grants.env.items():
        source = "kamid's own value" if value is None else "operator's value"
        lines.append(f"environment: {name} ({source})")
    if grants.kv:
        lines.append("kv: per-tool key-value store")
    lines += [f"invoke: {tool}" for tool in grants.invoke]
    lines += [f"limit: {name} = {value}" for name, value in sorted(grants.limits.items())]
    return lines
