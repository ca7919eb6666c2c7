"""``tools/call`` results: what a call returned, or why it failed, as MCP content.

JSON output goes out as ``structuredContent`` (when it is an object) plus a text block with
the same JSON; failures as ``isError: true`` with the reason as text, so the model can act
on it. Usage goes in ``_meta``. A result larger than the session's cap is cut with a note
instead of being dropped.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import mcp as wire

if TYPE_CHECKING:
    from kamid.protocol import ExecToolResult, KamiError

    from ._catalog import ToolEntry

__all__ = ["USAGE_KEY", "cap_result", "error_result", "success_result"]

USAGE_KEY = "dev.kami/usage"
TOOL_KEY = "dev.kami/tool"
ERROR_KEY = "dev.kami/error"
CUT_KEY = "dev.kami/truncated"


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def success_result(entry: ToolEntry, outcome: ExecToolResult, version: str) -> dict[str, Any]:
    output = outcome.output
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": False}
    if isinstance(output, dict) and wire.version_at_least(version, "2025-06-18"):
        result["structuredContent"] = output
    result["_meta"] = {
        USAGE_KEY: attrs.asdict(outcome.usage),
        TOOL_KEY: {"id": outcome.tool or entry.id, "version": outcome.version or entry.version},
    }
    return result


def error_result(
    entry: ToolEntry | None, message: str, exc: KamiError | None = None
) -> dict[str, Any]:
    """An ``isError`` result: the tool ran and failed, or its input was refused."""
    meta: dict[str, Any] = {}
    if exc is not None:
        detail: dict[str, Any] = {"code": exc.code, "kind": exc.kind}
        for key in ("limit", "value"):
            if key in exc.data:
                detail[key] = exc.data[key]
        meta[ERROR_KEY] = detail
        usage = exc.data.get("usage")
        if isinstance(usage, dict):
            meta[USAGE_KEY] = usage
    if entry is not None:
        meta[TOOL_KEY] = {"id": entry.id, "version": entry.version}
    result: dict[str, Any] = {"content": [{"type": "text", "text": message}], "isError": True}
    if meta:
        result["_meta"] = meta
    return result


def cap_result(result: dict[str, Any], limit: int, *, has_output_schema: bool) -> dict[str, Any]:
    """``result`` if it serializes to at most ``limit`` bytes, else a cut copy with a note.

    Structured content cannot be cut and stay valid, so it is dropped; the text keeps as
    much as fits. A tool that declares an output schema promises structured content, so
    its cut result becomes an error result (clients reject a missing one otherwise).
    """
    chars = sum(len(b.get("text", "")) for b in result.get("content", []))
    if 12 * chars + 4096 <= limit:
        # The structured content is the text's JSON; at worst 6 bytes per character each.
        return result
    size = _size(result)
    if size <= limit:
        return result
    note = (
        f"[kami] This result was cut: it is {size} bytes, more than the {limit}-byte limit "
        "of this MCP session (kamictl mcp --max-result-bytes). The text above ends early"
        + (" and the structured content was dropped" if "structuredContent" in result else "")
        + ". Ask the tool for less at a time (a narrower input) to get complete results."
    )
    cut: dict[str, Any] = {
        k: v for k, v in result.items() if k not in ("content", "structuredContent")
    }
    if has_output_schema:
        cut["isError"] = True
    meta = dict(cut.get("_meta") or {})
    meta[CUT_KEY] = {"size": size, "limit": limit}
    cut["_meta"] = meta
    texts = [b["text"] for b in result.get("content", []) if b.get("type") == "text"]
    text = "\n".join(texts)
    note_block = {"type": "text", "text": note}
    cut["content"] = [{"type": "text", "text": ""}, note_block]
    budget = limit - _size(cut)
    encoded = text.encode()
    while budget > 0:
        piece = encoded[:budget].decode("utf-8", "ignore")
        cut["content"][0]["text"] = piece
        overflow = _size(cut) - limit
        if overflow <= 0:
            return cut
        # JSON escapes made it longer than its bytes; take that much less and retry.
        budget -= overflow
    cut["content"] = [note_block]
    return cut
