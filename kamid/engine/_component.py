"""What KAMI requires of a component, read from its bytes and its types (no wasmtime).

The engine asks these questions of every component it compiles or loads: is it a
component at all, does it export ``kami:tool/tool@0.1.0``, does it import only what the
daemon links, and how much linear memory does it start with.
"""

from __future__ import annotations

import re

import attrs

from kamid.protocol import InvalidTool
from kamid.wasmbin import leb128, sections

__all__ = [
    "KAMI_IMPORTS",
    "TOOL_EXPORT",
    "ComponentInfo",
    "check_header",
    "import_problem",
    "initial_memory_bytes",
]

TOOL_EXPORT = "kami:tool/tool@0.1.0"
#: The kami:tool interfaces the daemon links, with the functions each defines.
KAMI_IMPORTS: dict[str, frozenset[str]] = {
    "kami:tool/host@0.1.0": frozenset({"log"}),
    "kami:tool/http@0.1.0": frozenset({"fetch"}),
    "kami:tool/kv@0.1.0": frozenset({"get", "set", "delete", "list-keys"}),
    "kami:tool/invoke@0.1.0": frozenset({"call"}),
}
#: WASI 0.2 packages ``Linker.add_wasip2`` defines. Sockets are linked (componentize-py
#: imports them) but a store's default WASI context allows no address and no lookup.
_WASI_PACKAGES = frozenset({"cli", "clocks", "filesystem", "io", "random", "sockets"})
_NAME = re.compile(r"(?P<ns>[a-z0-9-]+):(?P<pkg>[a-z0-9-]+)/(?P<iface>[a-z0-9-]+)(@(?P<v>.+))?")
_ALLOWED = (
    "a tool may import wasi:{cli,clocks,filesystem,io,random,sockets}@0.2 and "
    "kami:tool/{host,http,kv,invoke}@0.1.0 (see wit/kami-tool.wit)"
)
_BUILD = (
    "build it with componentize-py or componentize-js (`kamictl build`), or wrap it with "
    "`wasm-tools component new`"
)


@attrs.frozen(kw_only=True)
class ComponentInfo:
    """What a component imports and exports, by interface name."""

    imports: list[str]
    exports: list[str]


def check_header(wasm: bytes) -> None:
    """Refuses bytes that are not a WebAssembly component, saying what they are instead.

    Raises:
        InvalidTool: not WebAssembly, or a core module rather than a component.
    """
    if not wasm.startswith(b"\0asm"):
        raise InvalidTool(
            "not a WebAssembly file (it does not start with \\0asm); point [tool].wasm in "
            "tool.toml at the built component"
        )
    if wasm[4:8] == b"\x01\x00\x00\x00":
        raise InvalidTool(f"this is a core WebAssembly module, not a component; {_BUILD}")
    if wasm[6:8] != b"\x01\x00":
        raise InvalidTool(f"unknown WebAssembly binary layer {wasm[4:8].hex()}; {_BUILD}")


def import_problem(name: str, functions: set[str] | None) -> str | None:
    """Why the daemon cannot satisfy import ``name``, or None if it can.

    Args:
        name: the import name, e.g. ``wasi:http/outgoing-handler@0.2.0``.
        functions: for a ``kami:tool`` instance import, the functions it expects.
    """
    if name in KAMI_IMPORTS:
        extra = sorted((functions or set()) - KAMI_IMPORTS[name])
        if not extra:
            return None
        return (
            f"imports {name} functions {extra} that this daemon does not define; rebuild "
            "against the wit/kami-tool.wit shipped with KAMI"
        )
    match = _NAME.fullmatch(name)
    if match is None:
        return f"imports `{name}`, which KAMI does not provide; {_ALLOWED}"
    ns, pkg, version = match["ns"], match["pkg"], match["v"] or ""
    if ns == "wasi" and pkg == "http":
        return (
            f"imports {name}, which KAMI does not provide: make HTTP requests through "
            "kami:tool/http (the daemon performs them under the tool's network grants)"
        )
    if ns == "wasi" and pkg in _WASI_PACKAGES:
        if version.startswith("0.2."):
            return None
        return f"imports {name}, but KAMI provides WASI 0.2 (wasi:{pkg}@0.2.x); rebuild for it"
    if (ns, pkg) == ("kami", "tool"):
        return (
            f"imports {name}, but this daemon provides kami:tool@0.1.0 "
            "(host, http, kv, invoke); rebuild against the WIT shipped with KAMI"
        )
    return f"imports {name}, which KAMI does not provide; {_ALLOWED}"


def initial_memory_bytes(wasm: bytes | memoryview) -> int:
    """Linear memory the component's core modules declare at instantiation, in bytes.

    Sums the minimum size of every memory a core module defines (imported memories are
    someone else's), in nested components too. This is exactly what wasmtime allocates
    when it instantiates the component, assuming each module is instantiated once.
    Malformed input yields 0: compiling it will fail with wasmtime's own message.
    """
    with memoryview(wasm) as buf:
        try:
            return _component_memory(buf, 0, len(buf))
        except (IndexError, ValueError):
            return 0


def _component_memory(buf: memoryview, start: int, end: int) -> int:
    total = 0
    for section_id, body, body_end in sections(buf, start, end):
        if section_id == 1:  # core module
            total += _module_memory(buf, body, body_end)
        elif section_id == 4:  # nested component
            total += _component_memory(buf, body, body_end)
    return total


def _module_memory(buf: memoryview, start: int, end: int) -> int:
    total = 0
    for section_id, body, _ in sections(buf, start, end):
        if section_id != 5:  # memory section
            continue
        count, pos = leb128(buf, body)
        for _ in range(count):
            flags = buf[pos]
            minimum, pos = leb128(buf, pos + 1)
            if flags & 0x01:  # has a maximum
                _, pos = leb128(buf, pos)
            page = 65536
            if flags & 0x08:  # custom page size (log2)
                log2, pos = leb128(buf, pos)
                page = 1 << log2
            total += minimum * page
    return total
