"""The engine as the daemon sees it: validated components, cached, run under limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from kamid.sandbox import DENY_ALL, exceeded

from ._cache import ComponentCache
from ._outcome import utf8_len
from ._threads import Reaper
from ._wasm import REAPER_JOBS, WASMTIME_VERSION, Pooling, Runtime

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from kamid.hostapi import HostContext
    from kamid.protocol import CacheStatistics
    from kamid.sandbox import Limits, SandboxSpec

    from ._cache import AotIndex, CompileReport
    from ._component import ComponentInfo
    from ._outcome import CallOutcome

__all__ = ["Engine"]


class Engine:
    """Compiles, caches and runs tool components. All methods block; all are thread-safe.

    Args:
        aot_dir: the AOT cache directory (native code; safe to delete).
        aot_index: records the hash of each AOT file written; only recorded files load.
        lru_capacity: compiled components kept in memory.
        tick_ms: epoch tick period; deadlines count ticks, which the engine makes from
            its own thread while calls run (never while idle).
        pooling: wasmtime's pooling allocator settings (by default: on, for up to four
            stores at once); None for fresh memory mappings on every call.
    """

    def __init__(
        self,
        *,
        aot_dir: Path,
        aot_index: AotIndex,
        lru_capacity: int = 32,
        tick_ms: int = 10,
        pooling: Pooling | None = Pooling(),  # noqa: B008 (frozen, so safe to share)
    ) -> None:
        self._runtime = Runtime(tick_ms=tick_ms, pooling=pooling)
        self._reaper = Reaper(capacity=REAPER_JOBS)
        # Kept so that worker processes can build engines like this one.
        self.aot_dir = aot_dir
        self.aot_index = aot_index
        self.lru_capacity = lru_capacity
        #: The pooling settings in use (None: off, or the address space had no room).
        self.pooling = self._runtime.pooling
        self._cache = ComponentCache(
            self._runtime.compiler,
            aot_dir=aot_dir,
            aot_index=aot_index,
            key_suffix=self._runtime.key_suffix,
            capacity=lru_capacity,
        )

    @property
    def wasmtime_version(self) -> str:
        return WASMTIME_VERSION

    @property
    def tick_ms(self) -> int:
        return self._runtime.tick_ms

    def aot_path(self, sha256: str) -> Path:
        """Where the AOT file of ``sha256`` lives (whether or not it exists)."""
        return self._cache.aot_path(sha256)

    def inspect(self, sha256: str, wasm_path: Path) -> ComponentInfo:
        """Imports and exports of a component, compiling or loading it if needed.

        Raises:
            InvalidTool: not a component; no ``kami:tool/tool@0.1.0`` export with
                ``run: func(string) -> result<string, string>``; or an import the daemon
                does not provide. The message says what to do instead.
            IntegrityError: ``wasm_path`` does not hash to ``sha256``.
        """
        loaded, _ = self._cache.get(sha256, wasm_path)
        return loaded.info

    def precompile(self, sha256: str, wasm_path: Path) -> CompileReport:
        """Makes sure the component's AOT file exists, validating the component first.

        Raises:
            InvalidTool: as for :meth:`inspect`; nothing is written.
            IntegrityError: ``wasm_path`` does not hash to ``sha256``.
        """
        return self._cache.ensure_on_disk(sha256, wasm_path)

    def call(
        self,
        sha256: str,
        wasm_path: Path,
        input: str,
        *,
        limits: Limits,
        host: HostContext,
        sandbox: SandboxSpec = DENY_ALL,
        teardown: list[Callable[[], None]] | None = None,
    ) -> CallOutcome:
        """Runs the tool's ``run`` once, on a fresh instance, under ``limits``.

        ``sandbox`` is the call's WASI context: the directories it sees (each read-only
        unless marked writable) and its environment; by default nothing.

        With ``teardown``, closing the call's store is appended to it instead of done
        before returning: the caller answers first, then hands it to :meth:`dispose`
        (closing a store resets or frees its memory: 0.1-0.7 ms for the examples).

        Every error raised once the guest has started carries ``data.usage``.

        Raises:
            LimitExceeded: ``data.limit`` names it: ``input_bytes`` (checked before
                anything runs), ``fuel``, ``timeout_ms``, ``memory_bytes``,
                ``output_bytes``, ``host_calls``, ``instances``, ``table_elements``,
                ``memories`` or ``tables``.
            ToolFailed: the tool returned ``err`` (``data.tool_error``), trapped
                (``data.trap``), exited, or returned output that is not JSON.
            InvalidTool, IntegrityError: as for :meth:`inspect`.
            InternalError: a host function of the daemon failed (a KAMI bug).
        """
        size = utf8_len(input)
        if size > limits.max_input_bytes:
            raise exceeded(host.tool_id, "input_bytes", limits.max_input_bytes)
        loaded, _ = self._cache.get(sha256, wasm_path)
        return self._runtime.run(loaded, input, limits, host, sandbox, teardown)

    def dispose(self, teardown: list[Callable[[], None]]) -> None:
        """Runs a call's ``teardown`` (see :meth:`call`) when a CPU is idle, or now on
        this thread if another one is still waiting (:class:`~._threads.Reaper`)."""
        if teardown:
            self._reaper.dispose(teardown)

    def close(self) -> None:
        """Finishes any deferred teardown; later ones run on their callers."""
        self._reaper.close()

    def tick(self) -> None:
        """Advances the epoch: one tick off every running call's deadline (the engine
        ticks by itself while calls run; this is one more)."""
        self._runtime.tick()

    @property
    def ticks(self) -> int:
        """Ticks the engine's own ticker has made (none while idle)."""
        return self._runtime.ticker.ticks

    def cache_state(self, sha256: str) -> Literal["memory", "disk", "none"]:
        """Where a call would find the component (the AOT file is not re-hashed here)."""
        return self._cache.state(sha256)

    def forget(self, sha256: str) -> None:
        """Drops the component from memory and deletes its AOT file (uninstall)."""
        self._cache.forget(sha256)

    def statistics(self) -> CacheStatistics:
        return self._cache.statistics()
