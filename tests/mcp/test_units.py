"""The pure parts of KAMI's MCP side: names, hints, envelopes, cutting, prompts, events."""

from __future__ import annotations

import json
import os

import pytest
import trio

from kamid.mcp._catalog import mcp_names, tool_annotations
from kamid.mcp._events import Change, EventBus
from kamid.mcp._results import cap_result
from kamid.protocol import FsGrant, Grants, InvalidTool, NetGrant, parse_manifest, render_prompt
from kamid.protocol import mcp as wire


def test_names_are_short_when_unique_and_full_ids_otherwise() -> None:
    names = mcp_names(["dev.kami.echo", "dev.kami.hello", "org.other.echo", "x.y-z.tool-name"])
    assert names == {
        "dev.kami.echo": "dev_kami_echo",
        "org.other.echo": "org_other_echo",
        "dev.kami.hello": "hello",
        "x.y-z.tool-name": "tool-name",
    }
    long_id = "dev." + "a" * 80 + ".echo"
    name = mcp_names([long_id, "dev.kami.echo"])[long_id]
    assert len(name) == 64
    assert all(c.isalnum() or c in "_-" for c in name)


@pytest.mark.parametrize(
    ("grants", "read_only", "open_world", "destructive"),
    [
        (Grants(), True, False, None),
        (Grants(net=(NetGrant(host="api.example.com"),)), False, True, None),
        (Grants(fs="sandbox"), False, False, False),
        (Grants(kv=True), False, False, False),
        (Grants(fs="read-only"), True, False, None),
        (Grants(paths=(FsGrant(host_path="/a", guest_path="/a", mode="ro"),)), True, False, None),
        (Grants(paths=(FsGrant(host_path="/a", guest_path="/a", mode="rw"),)), False, False, None),
    ],
)
def test_annotations_follow_the_grants(
    grants: Grants, read_only: bool, open_world: bool, destructive: bool | None
) -> None:
    hints = tool_annotations(grants, "t")
    assert hints["readOnlyHint"] is read_only
    assert hints["openWorldHint"] is open_world
    assert hints.get("destructiveHint") is destructive


def test_envelope_checks() -> None:
    ok = wire.check_envelope(
        {
            "_meta": {
                wire.PROTOCOL_VERSION_KEY: "2026-07-28",
                wire.CLIENT_CAPABILITIES_KEY: {},
                wire.LOG_LEVEL_KEY: "info",
            }
        }
    )
    assert isinstance(ok, wire.Envelope)
    assert ok.log_level == "info"
    assert wire.check_envelope({})["code"] == -32602  # type: ignore[index]
    assert wire.check_envelope(None)["code"] == -32602  # type: ignore[index]
    bad_level = wire.check_envelope(
        {
            "_meta": {
                wire.PROTOCOL_VERSION_KEY: "2026-07-28",
                wire.CLIENT_CAPABILITIES_KEY: {},
                wire.LOG_LEVEL_KEY: "loud",
            }
        }
    )
    assert bad_level["code"] == -32602  # type: ignore[index]
    old = wire.check_envelope(
        {"_meta": {wire.PROTOCOL_VERSION_KEY: "2025-11-25", wire.CLIENT_CAPABILITIES_KEY: {}}}
    )
    assert old["code"] == -32022  # type: ignore[index]
    assert old["data"] == {"supported": ["2026-07-28"], "requested": "2025-11-25"}  # type: ignore[index]
    assert wire.negotiate_legacy("2024-11-05") == "2024-11-05"
    assert wire.negotiate_legacy("2026-07-28") == "2025-11-25"
    assert wire.negotiate_legacy(None) == "2025-11-25"
    assert wire.has_modern_envelope({"_meta": {"progressToken": 1}}) is False


def test_cap_result_keeps_what_fits_and_says_so() -> None:
    text = "ü" * 3000 + '"quoted"\\' * 100
    result = {
        "content": [{"type": "text", "text": text}],
        "structuredContent": {"big": text},
        "isError": False,
        "_meta": {"dev.kami/usage": {"wall_ms": 1.0}},
    }
    assert cap_result(result, 1_000_000, has_output_schema=False) is result
    for limit in (1024, 2000, 5000):
        cut = cap_result(result, limit, has_output_schema=False)
        wire_size = len(json.dumps(cut, ensure_ascii=False, separators=(",", ":")).encode())
        assert wire_size <= limit
        assert "structuredContent" not in cut
        assert cut["isError"] is False
        assert cut["_meta"]["dev.kami/usage"] == {"wall_ms": 1.0}
        assert "cut" in cut["content"][-1]["text"]
    assert cap_result(result, 2000, has_output_schema=True)["isError"] is True


def test_prompt_text_and_validation() -> None:
    assert render_prompt("say {a} {{b}} {c}", {"a": "x"}) == "say x {b} "
    base = (
        '[tool]\nid = "dev.x.y"\nname = "y"\nversion = "0.1.0"\ndescription = "d"\n'
        'wasm = "a.wasm"\n'
    )
    with pytest.raises(InvalidTool, match=r"\[prompts\].p text uses \{who\}"):
        parse_manifest(base + '[prompts.p]\ndescription = "d"\ntext = "hi {who}"\n')
    with pytest.raises(InvalidTool, match="invalid prompt name"):
        parse_manifest(base + '[prompts."Bad Name"]\ndescription = "d"\ntext = "hi"\n')
    manifest = parse_manifest(base)
    assert "prompts" not in manifest.to_dict()


async def test_event_bus_merges_what_a_slow_subscriber_missed() -> None:
    bus = EventBus()
    with bus.subscribe() as subscription:
        bus.publish(Change(tools=frozenset({"a"})))
        bus.publish(Change(tools=frozenset({"b"}), prompts=True))
        change = await subscription.wait()
        assert change == Change(tools=frozenset({"a", "b"}), prompts=True)
        with trio.move_on_after(0.05) as scope:
            await subscription.wait()
        assert scope.cancelled_caught
        bus.publish(Change(profiles=frozenset({"p"})))
        assert (await subscription.wait()).profiles == {"p"}
    assert bus.statistics() == 0


def test_stdin_lines_skip_oversized_messages() -> None:
    from kamictl.mcp import _stdin_lines

    read_fd, write_fd = os.pipe()
    os.write(write_fd, b'{"a": 1}\r\n\n' + b"x" * 100 + b'\n{"b": 2}\n' + b"y" * 50)
    os.close(write_fd)
    saved = os.dup(0)
    try:
        os.dup2(read_fd, 0)
        lines = list(_stdin_lines(lambda: 64))
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read_fd)
    assert lines == [b'{"a": 1}', None, b'{"b": 2}', b"y" * 50]
