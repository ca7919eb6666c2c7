"""Reading the WebAssembly binary format without wasmtime: LEB128 numbers and sections.

Pure Python, for what the daemon learns from a component's bytes before (or without)
compiling it: its imports (kamid/capabilities.py) and its declared memory
(kamid/engine/_component.py). Malformed input raises ``IndexError``; callers decide
what that means.
"""

from __future__ import annotations

__all__ = ["leb128", "sections"]


def leb128(buf: memoryview, pos: int) -> tuple[int, int]:
    """The unsigned LEB128 number at ``pos``, and the position after it."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def sections(buf: memoryview, start: int, end: int) -> list[tuple[int, int, int]]:
    """``(section id, body start, body end)`` of the module or component in
    ``buf[start:end]`` (after its 8-byte preamble)."""
    out = []
    pos = start + 8  # magic + version/layer
    while pos < end:
        section_id = buf[pos]
        size, pos = leb128(buf, pos + 1)
        out.append((section_id, pos, pos + size))
        pos += size
    return out
