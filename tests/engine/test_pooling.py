"""The pooling allocator: reused memory slots never show a call what an earlier one
wrote, and a pooled engine never runs out of slots (a call waits for one instead)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

from kamid.engine import Engine, Pooling, wat2wasm
from kamid.protocol import InvalidTool, LimitExceeded
from tests._engine import FAST, FIXTURES, DictIndex
from tests.conftest import run_in_threads

from .conftest import host

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests._engine import Wasm

MiB = 1024 * 1024


def _engine(tmp_path: Path, pooling: Pooling | None) -> Engine:
    return Engine(aot_dir=tmp_path / "aot", aot_index=DictIndex(), tick_ms=5, pooling=pooling)


def _call_deferred(engine: Engine, tool: Wasm) -> object:
    """One call as kamid makes it: answered first, its store closed by ``dispose``."""
    teardown: list[Callable[[], None]] = []
    outcome = engine.call(tool.sha256, tool.path, "{}", limits=FAST, host=host(), teardown=teardown)
    engine.dispose(teardown)
    return outcome.value


@pytest.mark.parametrize(
    "pooling",
    [
        Pooling(stores=1, keep_resident=16 * MiB),  # the whole memory is copied back
        Pooling(stores=1, keep_resident=64 * 1024),  # the image page copied, the rest unmapped
        Pooling(stores=1, keep_resident=0),  # everything unmapped
        None,
    ],
    ids=["keep-all", "keep-first-page", "keep-none", "no-pooling"],
)
def test_every_call_sees_fresh_memory(
    tmp_path: Path, wasm: Callable[[str], Wasm], pooling: Pooling | None
) -> None:
    # One store: every call reuses the same slot. "111" is a fresh data segment, a fresh
    # zero page and a freshly grown page; memory left over would answer 2 somewhere.
    engine = _engine(tmp_path, pooling)
    dirty = wasm("dirty")
    answers = [
        engine.call(dirty.sha256, dirty.path, "{}", limits=FAST, host=host()).value
        for _ in range(5)
    ]
    assert answers == [111] * 5


def test_deferred_teardown_resets_before_the_slot_is_reused(
    tmp_path: Path, wasm: Callable[[str], Wasm]
) -> None:
    engine = _engine(tmp_path, Pooling(stores=1))
    dirty = wasm("dirty")
    assert [_call_deferred(engine, dirty) for _ in range(3)] == [111] * 3


def test_a_call_waits_for_a_store_instead_of_failing(
    tmp_path: Path, wasm: Callable[[str], Wasm]
) -> None:
    engine = _engine(tmp_path, Pooling(stores=1))
    echo = wasm("echo")
    held: list[Callable[[], None]] = []
    engine.call(echo.sha256, echo.path, '"a"', limits=FAST, host=host(), teardown=held)
    answers: list[object] = []

    def second() -> None:
        answers.append(engine.call(echo.sha256, echo.path, '"b"', limits=FAST, host=host()).value)

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.3)
    # The only store is still held by the first call's teardown: the second call waits
    # (without the wait it would fail, the pool having no slot left).
    assert answers == []
    assert thread.is_alive()
    engine.dispose(held)
    thread.join(timeout=10)
    assert answers == ["b"]


def test_more_threads_than_stores(tmp_path: Path, wasm: Callable[[str], Wasm]) -> None:
    engine = _engine(tmp_path, Pooling(stores=2))
    dirty = wasm("dirty")
    answers: list[object] = []
    errors: list[BaseException] = []

    def calls() -> None:
        try:
            for _ in range(10):
                answers.append(_call_deferred(engine, dirty))
        except BaseException as exc:
            errors.append(exc)

    run_in_threads(calls, 5)
    assert errors == []
    assert answers == [111] * 50


def test_a_component_over_the_memory_count_still_compiles(
    tmp_path: Path, wasm: Callable[[str], Wasm]
) -> None:
    # The pool checks what a component declares when it compiles; it allows far more than
    # a store does, so the call fails with its limit named, as without pooling.
    engine = _engine(tmp_path, Pooling(stores=1))
    memories = wasm("adversarial_memories")
    engine.precompile(memories.sha256, memories.path)
    with pytest.raises(LimitExceeded) as caught:
        engine.call(memories.sha256, memories.path, "{}", limits=FAST, host=host())
    assert caught.value.data["limit"] == "memories"


def test_an_aot_file_from_an_engine_without_pooling_loads(
    tmp_path: Path, wasm: Callable[[str], Wasm]
) -> None:
    # A daemon upgraded to pooling keeps its AOT cache: the allocator is not part of
    # the compiled code.
    index = DictIndex()
    echo = wasm("echo")
    plain = Engine(aot_dir=tmp_path / "aot", aot_index=index, pooling=None)
    plain.precompile(echo.sha256, echo.path)
    pooled = Engine(aot_dir=tmp_path / "aot", aot_index=index, pooling=Pooling(stores=1))
    assert pooled.cache_state(echo.sha256) == "disk"
    outcome = pooled.call(echo.sha256, echo.path, '"x"', limits=FAST, host=host())
    assert outcome.value == "x"
    assert pooled.statistics().compiles == 0


def test_a_component_bigger_than_a_pooled_store_says_how_to_run_it(
    tmp_path: Path, wasm: Callable[[str], Wasm]
) -> None:
    echo = (FIXTURES / "echo.wat").read_text()
    huge_table = echo.replace(
        '(memory (export "memory") 1)', '(memory (export "memory") 1)\n    (table 20000000 funcref)'
    )
    path = tmp_path / "huge.wasm"
    path.write_bytes(wat2wasm(huge_table))
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(InvalidTool, match="set `pooling = false` under \\[engine\\]"):
        _engine(tmp_path, Pooling(stores=1)).precompile(sha256, path)
    # Without pooling it compiles (and its call would meet the table_elements limit).
    _engine(tmp_path / "plain", None).precompile(sha256, path)


def test_an_address_space_limit_turns_pooling_off_instead_of_aborting(tmp_path: Path) -> None:
    # wasmtime aborts the process when it cannot reserve the pool; under a `ulimit -v`
    # too small for it the engine must run without pooling, and say so.
    script = f"""
import logging, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (16 * 1024**3, resource.RLIM_INFINITY))
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
from kamid.engine import Engine
from kamid.hostapi import HostContext
from tests._engine import FAST, DictIndex, compile_wat
engine = Engine(aot_dir=Path({str(tmp_path / "aot")!r}), aot_index=DictIndex())
echo = compile_wat(Path({str(tmp_path)!r}), "echo")
print("pooling", engine.pooling)
outcome = engine.call(echo.sha256, echo.path, '"x"', limits=FAST, host=HostContext(tool_id="t"))
print("answer", outcome.value)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pooling None" in done.stdout
    assert "answer x" in done.stdout
    assert "calls run without it" in done.stdout
