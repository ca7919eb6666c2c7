"""The component cache: LRU, AOT files on disk, integrity, compiling exactly once."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from kamid.engine import Engine
from kamid.protocol import InvalidTool
from tests.conftest import run_in_threads

from .conftest import FAST, DictIndex, host

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .conftest import Wasm


def echo_works(engine: Engine, tool: Wasm) -> bool:
    outcome = engine.call(tool.sha256, tool.path, "[1]", limits=FAST, host=host())
    return bool(outcome.value == [1])


def test_precompile_writes_a_recorded_aot_file(
    engine: Engine, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    echo = wasm("echo")
    report = engine.precompile(echo.sha256, echo.path)
    assert report.source == "compiled"
    aot = engine.aot_path(echo.sha256)
    assert aot.name.startswith(f"{echo.sha256}-{engine.wasmtime_version}-")
    assert index == {aot.stem: hashlib.sha256(aot.read_bytes()).hexdigest()}
    assert engine.cache_state(echo.sha256) == "memory"
    assert engine.precompile(echo.sha256, echo.path).source == "memory"
    assert engine.statistics().compiles == 1
    assert [p.name for p in aot.parent.iterdir()] == [aot.name]  # no temp files left


def test_a_fresh_engine_loads_from_disk(
    engine: Engine, aot_dir: Path, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    echo = wasm("echo")
    engine.precompile(echo.sha256, echo.path)
    fresh = Engine(aot_dir=aot_dir, aot_index=index)
    assert fresh.cache_state(echo.sha256) == "disk"
    outcome = fresh.call(echo.sha256, echo.path, "[1]", limits=FAST, host=host())
    assert outcome.value == [1]
    assert outcome.usage.peak_memory_bytes == 65536  # read from the wasm, not compiled
    stats = fresh.statistics()
    assert (stats.disk_hits, stats.compiles, stats.rejected) == (1, 0, 0)
    assert fresh.cache_state(echo.sha256) == "memory"


def test_abandoned_temp_files_are_removed(
    aot_dir: Path, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    aot_dir.mkdir()
    old, recent = aot_dir / ".x-1.1.tmp", aot_dir / ".x-2.2.tmp"
    for tmp in (old, recent):
        tmp.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    Engine(aot_dir=aot_dir, aot_index=index)
    assert not old.exists()
    assert recent.exists()  # may still be being written


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:], id="bitflip"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"garbage" * 100, id="garbage"),
    ],
)
def test_an_altered_aot_file_is_rejected_and_rebuilt(
    engine: Engine,
    aot_dir: Path,
    index: DictIndex,
    wasm: Callable[[str], Wasm],
    damage: Callable[[bytes], bytes],
) -> None:
    echo = wasm("echo")
    engine.precompile(echo.sha256, echo.path)
    aot = engine.aot_path(echo.sha256)
    aot.write_bytes(damage(aot.read_bytes()))
    fresh = Engine(aot_dir=aot_dir, aot_index=index)
    assert echo_works(fresh, echo)
    stats = fresh.statistics()
    assert (stats.rejected, stats.disk_hits, stats.compiles) == (1, 0, 1)
    # The rebuilt file is recorded again and loads.
    assert index[aot.stem] == hashlib.sha256(aot.read_bytes()).hexdigest()
    assert echo_works(Engine(aot_dir=aot_dir, aot_index=index), echo)


def test_valid_native_code_that_was_not_recorded_is_not_run(
    engine: Engine, aot_dir: Path, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    # Swap in another component's perfectly loadable AOT file: only the recorded hash
    # stands between this and running the wrong native code.
    echo, err = wasm("echo"), wasm("err")
    engine.precompile(echo.sha256, echo.path)
    engine.precompile(err.sha256, err.path)
    engine.aot_path(echo.sha256).write_bytes(engine.aot_path(err.sha256).read_bytes())
    fresh = Engine(aot_dir=aot_dir, aot_index=index)
    assert echo_works(fresh, echo)
    assert (fresh.statistics().rejected, fresh.statistics().compiles) == (1, 1)


def test_an_unrecorded_aot_file_is_never_loaded(
    engine: Engine, aot_dir: Path, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    echo = wasm("echo")
    engine.precompile(echo.sha256, echo.path)
    index.clear()  # e.g. a file someone dropped into the cache directory
    fresh = Engine(aot_dir=aot_dir, aot_index=index)
    assert fresh.cache_state(echo.sha256) == "none"
    assert echo_works(fresh, echo)
    assert (fresh.statistics().rejected, fresh.statistics().compiles) == (1, 1)


def test_a_recorded_file_that_will_not_load_is_rebuilt(
    engine: Engine, aot_dir: Path, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    # The hash matches what was recorded, but it is not a loadable component.
    echo = wasm("echo")
    engine.precompile(echo.sha256, echo.path)
    aot = engine.aot_path(echo.sha256)
    aot.write_bytes(b"\0asm not native code")
    index[aot.stem] = hashlib.sha256(aot.read_bytes()).hexdigest()
    fresh = Engine(aot_dir=aot_dir, aot_index=index)
    assert echo_works(fresh, echo)
    assert (fresh.statistics().rejected, fresh.statistics().compiles) == (1, 1)


def test_lru_evicts_the_least_recently_used(
    aot_dir: Path, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    engine = Engine(aot_dir=aot_dir, aot_index=index, lru_capacity=2)
    echo, err, trap = wasm("echo"), wasm("err"), wasm("trap")
    for tool in (echo, err, echo, trap):  # echo was used after err: err goes
        engine.inspect(tool.sha256, tool.path)
    assert engine.cache_state(echo.sha256) == "memory"
    assert engine.cache_state(trap.sha256) == "memory"
    assert engine.cache_state(err.sha256) == "disk"
    stats = engine.statistics()
    assert (stats.entries, stats.capacity, stats.evictions) == (2, 2, 1)
    assert (stats.compiles, stats.memory_hits) == (3, 1)
    engine.inspect(err.sha256, err.path)
    assert engine.statistics().disk_hits == 1


def test_forget_removes_memory_disk_and_record(
    engine: Engine, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    echo = wasm("echo")
    engine.precompile(echo.sha256, echo.path)
    engine.forget(echo.sha256)
    assert engine.cache_state(echo.sha256) == "none"
    assert not engine.aot_path(echo.sha256).exists()
    assert index == {}


def test_an_invalid_component_leaves_nothing_behind(
    engine: Engine, aot_dir: Path, index: DictIndex, wasm: Callable[[str], Wasm]
) -> None:
    bad = wasm("wrong_export")
    with pytest.raises(InvalidTool):
        engine.precompile(bad.sha256, bad.path)
    assert list(aot_dir.iterdir()) == []
    assert index == {}


def test_concurrent_first_calls_compile_once(
    engine: Engine, wasm: Callable[[str], Wasm], monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = wasm("echo")
    compiler = engine._cache._compiler
    compiles: list[int] = []
    real_compile = compiler.compile

    def slow_compile(data: bytes) -> Any:
        compiles.append(threading.get_ident())
        time.sleep(0.2)  # a real componentize-py compile takes seconds
        return real_compile(data)

    monkeypatch.setattr(compiler, "compile", slow_compile)
    start = threading.Barrier(8)
    results: list[object] = []

    def first_call() -> None:
        start.wait()
        results.append(engine.call(echo.sha256, echo.path, "[1]", limits=FAST, host=host()))

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(compiles) == 1
    assert len(results) == 8
    stats = engine.statistics()
    assert (stats.compiles, stats.memory_hits) == (1, 7)


def test_concurrent_waiters_share_the_compile_error(
    engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    bad = wasm("unknown_import")
    start = threading.Barrier(4)
    errors: list[InvalidTool] = []

    def inspect() -> None:
        start.wait()
        try:
            engine.inspect(bad.sha256, bad.path)
        except InvalidTool as exc:
            errors.append(exc)

    run_in_threads(inspect, 4)
    assert len(errors) == 4
    assert all("acme:widgets/gears" in e.message for e in errors)
