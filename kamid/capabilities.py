"""What a manifest asks for, checked against the daemon's ceilings and the component's imports.

At install the operator sees one row per requested capability, each marked with whether
the component could use it at all: a tool that requests network access but does not
import ``kami:tool/http`` is asking for something it cannot use, which is worth a second
look before approving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kamid.grants import ASSETS_GUEST, SANDBOX_GUEST
from kamid.protocol import COMPONENT_PREAMBLE, Capability, PolicyDenied
from kamid.sandbox import MiB
from kamid.wasmbin import leb128, sections

if TYPE_CHECKING:
    from kamid.protocol import Grants, SecurityRequests
    from kamid.sandbox import Limits

__all__ = ["capabilities", "check_ceilings", "component_imports", "requested_limits"]

# Capability kind -> (what the component must import, with a prefix match, and the name
# shown when it does not).
_NEEDS: dict[str, tuple[str, str]] = {
    "network": ("kami:tool/http@", "kami:tool/http"),
    "secret": ("kami:tool/http@", "kami:tool/http"),
    "filesystem": ("wasi:filesystem/", "wasi:filesystem"),
    "path": ("wasi:filesystem/", "wasi:filesystem"),
    "environment": ("wasi:cli/environment@", "wasi:cli/environment"),
    "kv": ("kami:tool/kv@", "kami:tool/kv"),
    "invoke": ("kami:tool/invoke@", "kami:tool/invoke"),
}


def _manifest_limits(requests: SecurityRequests) -> dict[str, tuple[str, int]]:
    """Limit name -> (the manifest key as written, the value in the limit's unit)."""
    out: dict[str, tuple[str, int]] = {}
    if requests.max_memory_mb is not None:
        mb = requests.max_memory_mb
        out["memory_bytes"] = (f"max_memory_mb = {mb}", mb * MiB)
    if requests.max_fuel is not None:
        out["fuel"] = (f"max_fuel = {requests.max_fuel}", requests.max_fuel)
    if requests.timeout_ms is not None:
        out["timeout_ms"] = (f"timeout_ms = {requests.timeout_ms}", requests.timeout_ms)
    return out


def check_ceilings(tool_id: str, requests: SecurityRequests, ceilings: Limits) -> None:
    """Refuses a manifest that asks for more than the daemon will ever give.

    Raises:
        PolicyDenied: naming each limit, the value asked and the ceiling.
    """
    over = [
        (name, key, value, getattr(ceilings, name))
        for name, (key, value) in _manifest_limits(requests).items()
        if value > getattr(ceilings, name)
    ]
    if over:
        parts = [
            f"[security].{key} asks for {value} but this daemon allows at most {ceiling} "
            f"([ceilings].{name} in kamid.toml)"
            for name, key, value, ceiling in over
        ]
        raise PolicyDenied(
            f"{tool_id}: " + "; ".join(parts) + ". Nothing was installed; lower the request "
            "in tool.toml, or have the operator raise the ceiling",
            data={"ceilings": {name: ceiling for name, _, _, ceiling in over}},
        )


def requested_limits(requests: SecurityRequests, defaults: Limits) -> dict[str, int]:
    """Limits the manifest asks to have above the daemon's defaults (they need approval)."""
    return {
        name: value
        for name, (_, value) in _manifest_limits(requests).items()
        if value > getattr(defaults, name)
    }


def _used(kind: str, imports: list[str]) -> tuple[bool | None, str]:
    need = _NEEDS.get(kind)
    if need is None:
        return None, ""
    prefix, shown = need
    if any(name.startswith(prefix) for name in imports):
        return True, ""
    return False, f"requested but unused: the component does not import {shown}"


def capabilities(
    requests: SecurityRequests | None,
    imports: list[str],
    *,
    grants: Grants | None = None,
    raised: dict[str, int] | None = None,
    defaults: Limits | None = None,
) -> list[Capability]:
    """One row per capability requested (``requests``) or held (``grants``).

    Args:
        requests: the manifest's requests (approval table); or None to describe ``grants``.
        imports: the component's imports, to mark each row used or unused.
        grants: the grants to describe when ``requests`` is None.
        raised: limits the manifest asks above the defaults.
        defaults: the daemon's default limits, to show what a raise is from.
    """
    rows: list[tuple[str, str, str]] = []
    if requests is not None:
        rows += [("network", f"{r.host} ({', '.join(r.methods)})", "") for r in requests.net]
        fs = requests.fs
        rows += [("environment", name, "kamid's own value") for name in requests.env]
        rows += [
            (
                "secret",
                f"{r.name}: header {r.header} on requests to {', '.join(r.hosts)}",
                f"value from `kamictl secret set {r.name}`; the tool never sees it",
            )
            for r in requests.secrets
        ]
    else:
        assert grants is not None
        rows += [("network", f"{n.host} ({', '.join(n.methods)})", "") for n in grants.net]
        fs = grants.fs
        rows += [("path", f"{g.host_path} at {g.guest_path} ({g.mode})", "") for g in grants.paths]
        for name, value in grants.env.items():
            rows.append(
                ("environment", name, "kamid's own value" if value is None else "operator's value")
            )
        if grants.kv:
            rows.append(("kv", "per-tool key-value store", ""))
        rows += [("invoke", tool, "") for tool in grants.invoke]
        raised = dict(grants.limits)
    if fs == "sandbox":
        rows.append(("filesystem", "sandbox", f"persistent {SANDBOX_GUEST}, read-write"))
    elif fs == "read-only":
        rows.append(("filesystem", "read-only", f"its installed assets at {ASSETS_GUEST}"))
    for limit, amount in sorted((raised or {}).items()):
        default = getattr(defaults, limit, None) if defaults is not None else None
        shown = f"daemon default {default}" if default is not None else ""
        rows.append(("limit", f"{limit} = {amount}", shown))
    out: list[Capability] = []
    for kind, detail, note in rows:
        used, why = _used(kind, imports)
        out.append(Capability(kind=kind, detail=detail, used=used, note=why or note))
    return out


def _skip_extern(buf: memoryview, pos: int) -> int | None:
    """Skips one ``externdesc``; None when it is not one this parser knows."""
    sort = buf[pos]
    pos += 1
    if sort == 0x00:  # core module: 0x11 typeidx
        return leb128(buf, pos + 1)[1] if buf[pos] == 0x11 else None
    if sort in (0x01, 0x04, 0x05):  # func, component, instance: a type index
        return leb128(buf, pos)[1]
    tag = buf[pos]
    pos += 1
    if sort == 0x02 and tag in (0x00, 0x01):  # value: eq index, or a value type
        return leb128(buf, pos)[1]
    if sort == 0x03 and tag == 0x00:  # type: eq index
        return leb128(buf, pos)[1]
    if sort == 0x03 and tag == 0x01:  # type: sub resource
        return pos
    return None


def component_imports(wasm: bytes | memoryview) -> list[str] | None:
    """The names a component imports, read from its binary without compiling it.

    Only the top-level import sections are read (what the host must provide). Returns
    None for anything this reader does not understand, so that callers fall back to
    wasmtime's own answer after compiling.
    """
    buf = memoryview(wasm)
    if bytes(buf[:8]) != COMPONENT_PREAMBLE:
        return None
    names: set[str] = set()
    try:
        for section, body, end in sections(buf, 0, len(buf)):
            if section == 10:  # imports
                count, at = leb128(buf, body)
                for _ in range(count):
                    kind = buf[at]
                    if kind not in (0x00, 0x01):
                        return None
                    length, at = leb128(buf, at + 1)
                    names.add(bytes(buf[at : at + length]).decode("utf-8"))
                    at += length
                    if kind == 0x01:  # a version suffix follows the name
                        length, at = leb128(buf, at)
                        at += length
                    skipped = _skip_extern(buf, at)
                    if skipped is None:
                        return None
                    at = skipped
                if at != end:
                    return None
    except (IndexError, UnicodeDecodeError):
        return None
    return sorted(names)
