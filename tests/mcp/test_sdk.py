"""The official MCP Python SDK client, spawning ``kamictl mcp`` over stdio, under trio.

Both protocol eras: ``mode="legacy"`` negotiates with ``initialize``; ``mode="auto"``
probes ``server/discover`` and runs at 2026-07-28 with the per-request envelope.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import mcp_types as types
import pytest
import trio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.subscriptions import ToolsListChanged
from mcp.shared.exceptions import MCPError

from tests._examples import REPO
from tests.mcp.conftest import install_wat

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Daemon

MODES = ["legacy", "auto"]
VERSIONS = {"legacy": "2025-11-25", "auto": "2026-07-28"}


def kamictl_mcp(home: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "kamictl", "mcp", *args],
        env={"KAMI_HOME": str(home)},
        cwd=str(REPO),
    )


@pytest.mark.examples
@pytest.mark.parametrize("mode", MODES)
async def test_sdk_client_lists_and_calls_the_examples(examples_daemon: Daemon, mode: str) -> None:
    with trio.fail_after(120):
        async with Client(kamictl_mcp(examples_daemon.home), mode=mode) as client:
            assert client.protocol_version == VERSIONS[mode]
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"echo", "hello"}
            echo = tools["echo"]
            assert echo.input_schema["required"] == ["text"]
            assert echo.input_schema["properties"]["repeat"]["type"] == "integer"
            assert echo.title == "echo"
            assert echo.annotations is not None
            assert echo.annotations.read_only_hint is True
            assert echo.annotations.open_world_hint is False

            result = await client.call_tool("echo", {"text": "hi", "repeat": 2})
            assert result.is_error is False
            assert result.structured_content == {"echo": "hihi", "length": 4}
            assert isinstance(result.content[0], types.TextContent)
            assert '"echo": "hihi"' in result.content[0].text
            assert result.meta is not None
            usage = result.meta["dev.kami/usage"]
            assert usage["wall_ms"] > 0
            assert usage["fuel_consumed"] > 0

            hello = await client.call_tool("hello", {"name": "Ada"})
            assert hello.structured_content == {"greeting": "Hello, Ada!"}

            # Input that breaks the schema never reaches the tool; the message says why.
            bad = await client.call_tool("echo", {"text": "hi", "repeat": "twice"})
            assert bad.is_error is True
            text = bad.content[0].text  # type: ignore[union-attr]
            assert "arguments.repeat" in text
            assert "integer" in text

            # The tool's own error comes back as an error result, not a protocol error.
            refused = await client.call_tool("echo", {"text": "x", "repeat": 1000})
            assert refused.is_error is True
            assert "repeat" in refused.content[0].text  # type: ignore[union-attr]

            with pytest.raises(MCPError) as unknown:
                await client.call_tool("dev.kami.nope", {})
            assert unknown.value.code == -32602


@pytest.mark.parametrize("mode", MODES)
async def test_installing_a_tool_delivers_list_changed(
    wat_daemon: Daemon, tmp_path: Path, mode: str
) -> None:
    changed = trio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    with trio.fail_after(120):
        async with Client(
            kamictl_mcp(wat_daemon.home), mode=mode, message_handler=on_message
        ) as client:
            before = {t.name for t in (await client.list_tools()).tools}
            assert "late" not in before
            if mode == "legacy":
                await trio.to_thread.run_sync(
                    install_wat, wat_daemon, tmp_path, "echo.wat", "dev.test.late"
                )
                await changed.wait()
            else:
                async with client.listen(tools_list_changed=True) as subscription:
                    await trio.to_thread.run_sync(
                        install_wat, wat_daemon, tmp_path, "echo.wat", "dev.test.late"
                    )
                    event = await subscription.__anext__()
                    assert isinstance(event, ToolsListChanged)
            after = {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}
            assert after == before | {"late"}


@pytest.mark.parametrize("mode", MODES)
async def test_resources_prompts_and_progress(wat_daemon: Daemon, mode: str) -> None:
    with trio.fail_after(120):
        async with Client(kamictl_mcp(wat_daemon.home), mode=mode) as client:
            resources = {str(r.uri): r for r in (await client.list_resources()).resources}
            readme = "kami://tools/dev.test.echo/readme"
            assert readme in resources
            assert "kami://tools/dev.test.echo/manifest" in resources
            assert "kami://tools/dev.test.loop/readme" not in resources  # it has none
            contents = (await client.read_resource(readme)).contents
            assert "A test tool made of echo.wat" in contents[0].text  # type: ignore[union-attr]
            with pytest.raises(MCPError) as missing:
                await client.read_resource("kami://tools/dev.test.nope/readme")
            assert missing.value.code == (-32002 if mode == "legacy" else -32602)

            prompts = {p.name: p for p in (await client.list_prompts()).prompts}
            assert set(prompts) == {"echo.shout"}
            assert prompts["echo.shout"].arguments[0].required is True  # type: ignore[index]
            prompt = await client.get_prompt("echo.shout", {"text": "hi"})
            message = prompt.messages[0].content
            assert message.text == "Call echo with hi in capitals. {not a placeholder}"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as incomplete:
                await client.get_prompt("echo.shout", {})
            assert incomplete.value.code == -32602

            seen: list[tuple[float, float | None, str | None]] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                seen.append((progress, total, message))

            result = await client.call_tool("echo", {"text": "hi"}, progress_callback=on_progress)
            assert result.structured_content == {"text": "hi"}
            assert [p[0] for p in seen] == [0, 1]
            assert seen[-1][2] is not None
            assert "finished" in seen[-1][2]
