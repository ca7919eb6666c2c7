"""In-process measurements: what a call costs with no socket, no trio and no daemon.

Two floors, both with a fresh store and instance per call and kamid's engine settings
(fuel + epoch interruption, the same AOT file):

* :class:`EngineFloor` goes through ``kamid.engine.Engine.call``, exactly what a daemon
  worker thread runs (limits, WASI config, stdio capture, host context, result mapping);
* :class:`BareFloor` is the least wasmtime-py allows: store, fuel, deadline, default WASI,
  instantiate, call. The difference between the two is the engine wrapper's own cost.

Also here: the uncached compile (``Engine.precompile`` on an empty cache directory) and
the cold load of an AOT file by a new engine, split into its parts.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import wasmtime
from wasmtime import component as wc

from kamid.engine import Engine
from kamid.engine._component import KAMI_IMPORTS
from kamid.engine._wasm import _SETTINGS  # the exact settings kamid compiles with
from kamid.hostapi import HostContext
from kamid.sandbox import Limits, epoch_ticks
from tests._engine import DictIndex

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ._cases import Tool

__all__ = [
    "BareFloor",
    "ColdLoad",
    "Compiled",
    "DictIndex",
    "EngineFloor",
    "Ticker",
    "cold_load",
    "compile_uncached",
]

#: kamid's default tick (``[engine].tick_ms``); the floors tick at the same rate.
TICK_MS = 10
#: The limits a tool without ``[security]`` runs under in kamid (both examples).
LIMITS = Limits()
_TOOL_EXPORT = "kami:tool/tool@0.1.0"


class Ticker:
    """Calls ``tick`` every ``tick_ms`` from a thread while open (deadlines count these
    ticks); for the bare wasmtime engine, which has no ticker of its own (kamid's engine
    ticks itself while calls run)."""

    def __init__(self, tick: Callable[[], None], tick_ms: int = TICK_MS) -> None:
        self._tick = tick
        self._interval = tick_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ticker", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _check(tool: Tool, output: Any) -> None:
    if output != tool.case.expected:
        raise RuntimeError(
            f"{tool.case.tool_id} answered {output!r}, expected {tool.case.expected!r}; "
            "the benchmark only times correct calls"
        )


@dataclass(frozen=True)
class Compiled:
    """An uncached compile: the engine that did it, its cache, and how long it took."""

    #: Its LRU holds the component; its AOT file is in ``aot_dir``, recorded in ``index``.
    engine: Engine
    aot_dir: Path
    index: DictIndex
    ns: int
    #: What ``precompile`` reported (``compiled`` when nothing was cached).
    source: str


def compile_uncached(tool: Tool, aot_dir: Path) -> Compiled:
    """``Engine.precompile`` on an empty cache: compile, validate, serialize, fsync.

    Raises:
        RuntimeError: ``aot_dir`` is not empty.
    """
    if aot_dir.exists() and any(aot_dir.iterdir()):
        raise RuntimeError(f"{aot_dir} is not empty; an uncached compile needs an empty cache")
    index = DictIndex()
    engine = Engine(aot_dir=aot_dir, aot_index=index, tick_ms=TICK_MS)
    started = time.perf_counter_ns()
    report = engine.precompile(tool.sha256, tool.wasm)
    took = time.perf_counter_ns() - started
    return Compiled(engine=engine, aot_dir=aot_dir, index=index, ns=took, source=report.source)


class EngineFloor:
    """``Engine.call`` in this process, on this thread: what a daemon worker thread runs.

    A fresh :class:`HostContext` per call and the input as JSON text, as the daemon
    does. The engine ticks its own epoch while calls run, as in kamid. A sample is the
    whole call, closing its store included (with pooling that resets the memory slot;
    the daemon does it after the answer is out); :attr:`to_result_ns` also keeps the
    time until the result alone. Use it as a context manager (for symmetry with the
    other floors).
    """

    name = "engine"

    def __init__(self, engine: Engine, tool: Tool) -> None:
        self._engine = engine
        self._tool = tool
        self._checked = False
        #: The engine's own ``usage.wall_ms`` of every call (instantiate + run).
        self.wall_ms: list[float] = []
        #: Nanoseconds of every call until its result, its store not closed yet.
        self.to_result_ns: list[int] = []

    def __enter__(self) -> EngineFloor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def warm_up(self, n: int) -> None:
        """``n`` untimed calls (their wall times are not kept)."""
        self.sample(n)
        self.wall_ms.clear()
        self.to_result_ns.clear()

    def sample(self, n: int) -> list[int]:
        """Nanoseconds of ``n`` calls."""
        tool, engine = self._tool, self._engine
        text = tool.case.input_text
        samples: list[int] = []
        for _ in range(n):
            host = HostContext(tool_id=tool.case.tool_id)
            teardown: list[Callable[[], None]] = []
            started = time.perf_counter_ns()
            outcome = engine.call(
                tool.sha256, tool.wasm, text, limits=LIMITS, host=host, teardown=teardown
            )
            result = time.perf_counter_ns()
            for close in teardown:
                close()
            samples.append(time.perf_counter_ns() - started)
            self.to_result_ns.append(result - started)
            self.wall_ms.append(outcome.usage.wall_ms)
            if not self._checked:
                _check(tool, outcome.value)
                self._checked = True
        return samples


def _bare_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    for name, value in _SETTINGS.items():
        setattr(config, name, value)
    return wasmtime.Engine(config)


def _no_log(_store: object, _level: object, _message: object) -> None:
    return None


def _refuse(_store: object, *_args: object) -> None:
    raise wasmtime.WasmtimeError("bench: this host function is not available")


def _bare_linker(engine: wasmtime.Engine) -> wc.Linker:
    """WASI 0.2 and every ``kami:tool`` function kamid links: ``log`` does nothing, the
    rest fail (the examples only log)."""
    linker = wc.Linker(engine)
    linker.add_wasip2()
    with linker.root() as root:
        for interface, functions in KAMI_IMPORTS.items():
            with root.add_instance(interface) as instance:
                for name in sorted(functions):
                    instance.add_func(name, _no_log if name == "log" else _refuse)
    return linker


class BareFloor:
    """The least wasmtime-py allows per call, on kamid's AOT file and engine settings.

    Loading the AOT file kamid's engine wrote fails unless the settings match. Links
    WASI and stand-ins for the ``kami:tool`` imports; then per call: a fresh store with
    fuel, an epoch deadline and a default WASI context, instantiate, call ``run``, close
    the store. Use it as a context manager: the epoch ticks while it is open.
    """

    name = "bare"

    def __init__(self, tool: Tool, aot_path: Path) -> None:
        self._tool = tool
        self._engine = _bare_engine()
        self._component = wc.Component.deserialize_file(self._engine, str(aot_path))
        self._linker = _bare_linker(self._engine)
        tool_index = self._component.get_export_index(_TOOL_EXPORT)
        run_index = self._component.get_export_index("run", tool_index)
        assert run_index is not None
        self._run = run_index
        self._deadline = epoch_ticks(LIMITS.timeout_ms, TICK_MS)
        self._ticker = Ticker(self._engine.increment_epoch)
        self._checked = False

    def __enter__(self) -> BareFloor:
        self._ticker.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticker.__exit__()

    def warm_up(self, n: int) -> None:
        """``n`` untimed calls."""
        self.sample(n)

    def sample(self, n: int) -> list[int]:
        """Nanoseconds of ``n`` calls."""
        engine, linker, component = self._engine, self._linker, self._component
        text = self._tool.case.input_text
        samples: list[int] = []
        for _ in range(n):
            started = time.perf_counter_ns()
            store = wasmtime.Store(engine)
            store.set_fuel(LIMITS.fuel)
            store.set_epoch_deadline(self._deadline)
            store.set_wasi(wasmtime.WasiConfig())
            instance = linker.instantiate(store, component)
            func = instance.get_func(store, self._run)
            assert func is not None
            result = func(store, text)
            store.close()
            samples.append(time.perf_counter_ns() - started)
            if not self._checked:
                assert isinstance(result, wc.Variant)
                if result.tag != "ok" or not isinstance(result.payload, str):
                    raise RuntimeError(f"{self._tool.case.tool_id} failed: {result.payload!r}")
                _check(self._tool, json.loads(result.payload))
                self._checked = True
        return samples


@dataclass(frozen=True)
class ColdLoad:
    """A new engine's first call of a component whose AOT file is on disk (ns each)."""

    #: ``Engine(...)``: wasmtime engine, linker with WASI and the host interfaces.
    engine_init: int
    #: The first ``Engine.call``: verify + map the AOT file, validate, instantiate, call.
    first_call: int
    #: Of which: sha256 of the AOT file (kamid re-hashes it before trusting it).
    aot_sha256: int
    #: Of which: ``Component.deserialize_file`` alone.
    deserialize: int
    #: The second call on the same engine, for comparison (a hot call).
    second_call: int
    aot_bytes: int


def cold_load(tool: Tool, aot_dir: Path, index: DictIndex) -> ColdLoad:
    """Times a brand-new :class:`Engine` on an existing AOT cache, then its parts.

    The parts are measured separately, after the first call, with the file in the page
    cache: the same situation as a daemon restarted on a warm machine.
    """
    started = time.perf_counter_ns()
    engine = Engine(aot_dir=aot_dir, aot_index=index, tick_ms=TICK_MS)
    engine_init = time.perf_counter_ns() - started
    if engine.cache_state(tool.sha256) != "disk":
        raise RuntimeError(f"{tool.case.tool_id}: no AOT file in {aot_dir}; compile it first")
    text = tool.case.input_text
    # The engine ticks its own epoch while the calls run.
    started = time.perf_counter_ns()
    outcome = engine.call(
        tool.sha256, tool.wasm, text, limits=LIMITS, host=HostContext(tool_id="cold")
    )
    first_call = time.perf_counter_ns() - started
    _check(tool, outcome.value)
    started = time.perf_counter_ns()
    engine.call(tool.sha256, tool.wasm, text, limits=LIMITS, host=HostContext(tool_id="hot"))
    second_call = time.perf_counter_ns() - started
    aot = engine.aot_path(tool.sha256)
    started = time.perf_counter_ns()
    with aot.open("rb") as f:
        hashlib.file_digest(f, "sha256")
    aot_sha256 = time.perf_counter_ns() - started
    bare = _bare_engine()
    started = time.perf_counter_ns()
    wc.Component.deserialize_file(bare, str(aot))
    deserialize = time.perf_counter_ns() - started
    return ColdLoad(
        engine_init=engine_init,
        first_call=first_call,
        aot_sha256=aot_sha256,
        deserialize=deserialize,
        second_call=second_call,
        aot_bytes=aot.stat().st_size,
    )
