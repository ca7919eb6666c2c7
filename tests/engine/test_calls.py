"""Engine.call: every way a call can end, and what the caller is told."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import attrs
import pytest

from kamid.protocol import IntegrityError, InvalidTool, LimitExceeded, ToolFailed
from kamid.sandbox import MiB

from .conftest import FAST, host

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from kamid.engine import Engine

    from .conftest import Wasm


def test_echo_returns_output_usage_and_no_logs(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    echo = wasm("echo")
    outcome = engine.call(echo.sha256, echo.path, '{"a": [1, "é"]}', limits=FAST, host=host())
    assert outcome.output == '{"a": [1, "é"]}'
    assert outcome.value == {"a": [1, "é"]}
    assert outcome.logs == []
    usage = outcome.usage
    assert 0 < usage.fuel_consumed < 1000
    assert usage.wall_ms > 0
    assert usage.peak_memory_bytes == 65536  # echo.wat declares one page
    assert usage.host_calls == 0


def test_every_call_runs_on_a_fresh_instance(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    counter = wasm("counter")  # answers 1 on a fresh instance, 2 on one used before
    answers = [
        engine.call(counter.sha256, counter.path, "{}", limits=FAST, host=host()).value
        for _ in range(5)
    ]
    assert answers == [1] * 5


def test_err_becomes_tool_failed_with_the_tools_message(
    engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    err = wasm("err")
    with pytest.raises(ToolFailed) as info:
        engine.call(err.sha256, err.path, "{}", limits=FAST, host=host())
    assert info.value.message == "the tool failed on purpose"
    assert info.value.data["tool_error"] == "the tool failed on purpose"
    assert info.value.data["usage"]["fuel_consumed"] > 0


def test_trap_is_tool_failed_naming_the_trap(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    trap = wasm("trap")
    with pytest.raises(ToolFailed) as info:
        engine.call(trap.sha256, trap.path, "{}", limits=FAST, host=host("dev.test.trap"))
    assert info.value.message == "dev.test.trap trapped: wasm `unreachable` instruction executed"
    assert "unreachable" in info.value.data["trap"]
    assert "usage" in info.value.data


def test_endless_loop_hits_the_deadline(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    loop = wasm("loop")
    limits = attrs.evolve(FAST, timeout_ms=150, fuel=10**15)
    with pytest.raises(LimitExceeded) as info:
        engine.call(loop.sha256, loop.path, "{}", limits=limits, host=host())
    assert info.value.data["limit"] == "timeout_ms"
    assert info.value.data["value"] == 150
    assert "150 ms deadline" in info.value.message
    # Deadlines count ticks: never early, at most a tick or two late (plus scheduling).
    assert 150 <= info.value.data["usage"]["wall_ms"] < 1500


def test_long_computation_runs_out_of_fuel(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    bomb = wasm("fuel_bomb")
    limits = attrs.evolve(FAST, fuel=2_000_000, timeout_ms=60_000)
    with pytest.raises(LimitExceeded) as info:
        engine.call(bomb.sha256, bomb.path, "{}", limits=limits, host=host())
    assert info.value.data["limit"] == "fuel"
    assert info.value.data["value"] == 2_000_000
    assert info.value.data["usage"]["fuel_consumed"] == 2_000_000
    assert "used all 2000000 units of fuel" in info.value.message
    assert "max_fuel" in info.value.message


def test_memory_growth_past_the_limit(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    # The guest grows until memory.grow returns -1, says so, and traps.
    bomb = wasm("memory_bomb")
    limits = attrs.evolve(FAST, memory_bytes=2 * MiB)
    with pytest.raises(LimitExceeded) as info:
        engine.call(bomb.sha256, bomb.path, "{}", limits=limits, host=host())
    assert info.value.data["limit"] == "memory_bytes"
    assert info.value.data["value"] == 2 * MiB
    assert "2 MiB limit" in info.value.message
    assert "max_memory_mb" in info.value.message
    assert "memory.grow refused" in info.value.message  # the evidence it gave


def test_memory_larger_than_the_limit_from_the_start(
    engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    big = wasm("big_memory")
    with pytest.raises(LimitExceeded) as info:
        engine.call(big.sha256, big.path, "{}", limits=FAST, host=host())
    assert info.value.data["limit"] == "memory_bytes"
    assert "starts with 128 MiB" in info.value.message
    # With room for it, the same component runs.
    roomy = attrs.evolve(FAST, memory_bytes=256 * MiB)
    outcome = engine.call(big.sha256, big.path, "[]", limits=roomy, host=host())
    assert outcome.usage.peak_memory_bytes == 128 * MiB


def test_a_plain_trap_is_not_mistaken_for_memory(
    engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    trap = wasm("trap")
    limits = attrs.evolve(FAST, memory_bytes=64 * 1024)  # exactly its one page: no room
    with pytest.raises(ToolFailed):
        engine.call(trap.sha256, trap.path, "{}", limits=limits, host=host())


def test_output_over_the_limit(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    big = wasm("big_output")  # returns 5 MiB of JSON
    with pytest.raises(LimitExceeded) as info:
        engine.call(big.sha256, big.path, "{}", limits=FAST, host=host())
    assert info.value.data["limit"] == "output_bytes"
    assert info.value.data["value"] == FAST.max_output_bytes
    roomy = attrs.evolve(FAST, max_output_bytes=5 * MiB)
    assert engine.call(big.sha256, big.path, "{}", limits=roomy, host=host()).value == 1


def test_input_over_the_limit_is_refused_before_running(
    engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    echo = wasm("echo")
    limits = attrs.evolve(FAST, max_input_bytes=10)
    with pytest.raises(LimitExceeded) as info:
        engine.call(echo.sha256, echo.path, '"ééééé"', limits=limits, host=host())
    assert info.value.data["limit"] == "input_bytes"
    assert engine.statistics().compiles == 0  # nothing was even loaded
    # 10 UTF-8 bytes exactly is fine.
    assert engine.call(echo.sha256, echo.path, '"éééé"', limits=limits, host=host()).value


def test_output_that_is_not_json(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    echo = wasm("echo")
    with pytest.raises(ToolFailed) as info:
        engine.call(echo.sha256, echo.path, "not json", limits=FAST, host=host("dev.t.echo"))
    assert info.value.message.startswith("dev.t.echo returned output that is not JSON")
    assert "'not json'" in info.value.message
    assert "usage" in info.value.data


@pytest.mark.parametrize("deferred", [False, True], ids=["closed", "teardown-deferred"])
def test_guest_stdout_is_captured_and_capped(
    engine: Engine, wasm: Callable[[str], Wasm], deferred: bool
) -> None:
    flood = wasm("stdout_flood")  # 256 lines of 4,095 "x"
    limits = attrs.evolve(FAST, max_guest_output_bytes=3 * 4096)
    teardown: list[Callable[[], None]] | None = [] if deferred else None
    outcome = engine.call(
        flood.sha256, flood.path, "{}", limits=limits, host=host(), teardown=teardown
    )
    if teardown is not None:
        # The store is still open; its output is final all the same.
        assert len(teardown) == 1
        teardown.pop()()
    assert outcome.value == {}
    stdout = [line for line in outcome.logs if line.level == "stdout"]
    assert [line.message for line in stdout] == ["x" * 4095] * 3
    assert outcome.logs[-1].level == "warn"
    assert f"{(256 - 3) * 4096} bytes of guest stdout/stderr dropped" in outcome.logs[-1].message


def test_host_call_budget(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    tool = wasm("host")  # "L": log forever
    limits = attrs.evolve(FAST, max_host_calls=50)
    context = host()
    with pytest.raises(LimitExceeded) as info:
        engine.call(tool.sha256, tool.path, "L", limits=limits, host=context)
    assert info.value.data["limit"] == "host_calls"
    assert info.value.data["usage"]["host_calls"] == 51  # the 51st was refused
    assert len(context.logs) == 50


def test_wasm_that_does_not_match_its_hash(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    echo = wasm("echo")
    with pytest.raises(IntegrityError) as info:
        engine.call("0" * 64, echo.path, "{}", limits=FAST, host=host())
    assert "reinstall" in info.value.message
    assert engine.statistics().compiles == 0


@pytest.mark.parametrize(
    ("fixture", "words"),
    [
        ("core_module", "core WebAssembly module, not a component"),
        ("wrong_export", "does not export kami:tool/tool@0.1.0 (it exports ['run'])"),
        ("wrong_signature", "run: func(input: string) -> result<string, string>"),
        ("unknown_import", "imports acme:widgets/gears@1.0.0, which KAMI does not provide"),
        ("wasi_http_import", "make HTTP requests through kami:tool/http"),
    ],
)
def test_components_that_are_not_kami_tools(
    engine: Engine, wasm: Callable[[str], Wasm], fixture: str, words: str
) -> None:
    bad = wasm(fixture)
    with pytest.raises(InvalidTool) as info:
        engine.inspect(bad.sha256, bad.path)
    assert words in info.value.message
    with pytest.raises(InvalidTool):
        engine.call(bad.sha256, bad.path, "{}", limits=FAST, host=host())
    assert engine.cache_state(bad.sha256) == "none"  # nothing cached, nothing written


def test_bytes_that_are_not_wasm(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "tool.wasm"
    path.write_bytes(b"#!/bin/sh\necho hi\n")
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(InvalidTool) as info:
        engine.inspect(sha256, path)
    assert "not a WebAssembly file" in info.value.message


def test_inspect_lists_imports_and_exports(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    tool = wasm("host")
    info = engine.inspect(tool.sha256, tool.path)
    assert info.exports == ["kami:tool/tool@0.1.0"]
    assert info.imports == [
        "kami:tool/host@0.1.0",
        "kami:tool/http@0.1.0",
        "kami:tool/invoke@0.1.0",
        "kami:tool/kv@0.1.0",
    ]
