"""The only module in KAMI that imports wasmtime: the engine, its linker, and calls.

One wasmtime engine (fuel + epoch interruption) and one linker serve every call. The
linker is built once with WASI 0.2 and all four ``kami:tool`` host interfaces and is
shared by the worker threads: wasmtime's component ``Linker`` is ``Sync`` and
``instantiate`` only reads it. Every call gets a fresh store, so nothing leaks between
calls.

By default the engine uses wasmtime's pooling allocator (:class:`Pooling`): a fresh
instance's memories and tables come from slots reserved once, and a slot stays mapped
between calls, its memory copied back to the component's initial image when the store
closes. A call then takes no page faults. Without it every call maps fresh memory and
copies each page the guest writes on first touch; each such copy-on-write fault must
flush the TLB of every CPU running one of the daemon's threads, which on a VM is an
interrupt per page: two concurrent calls spent 44 % of their CPU time there, and ran
slower together than one alone.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import json
import logging
import mmap
import platform
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs
import wasmtime
from wasmtime import _bindings
from wasmtime import component as wc

from kamid.hostapi import HostError, HttpRequest
from kamid.protocol import InternalError, InvalidTool, Usage
from kamid.sandbox import DENY_ALL, FIXED_LIMITS, GuestOutput, epoch_ticks

from ._component import (
    KAMI_IMPORTS,
    TOOL_EXPORT,
    ComponentInfo,
    check_header,
    import_problem,
    initial_memory_bytes,
)
from ._outcome import CallOutcome, CallState, failure, finish
from ._ticker import EpochTicker

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from kamid.hostapi import HostContext, HttpResponse
    from kamid.sandbox import Limits, SandboxSpec

__all__ = ["WASMTIME_VERSION", "Loaded", "Pooling", "Runtime", "wat2wasm"]

log = logging.getLogger("kamid.engine")

WASMTIME_VERSION = importlib.metadata.version("wasmtime")
#: Everything that changes the native code; its hash is part of every AOT cache key.
_SETTINGS: dict[str, Any] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "cranelift_opt_level": "speed",
}
# Not configurable (see FIXED_LIMITS): the memory limit applies to each memory and the
# element limit to each table, so their counts must stay small.
_MAX_MEMORIES = FIXED_LIMITS["memories"]
_MAX_TABLES = FIXED_LIMITS["tables"]


def _always_tagged(_self: object) -> bool:
    return True


# wasmtime-py guesses which case a `result` or `option` value is from its Python type.
# The guess fails for kv.get's `result<option<list<u8>>, error>` (an option accepts any
# object, so an error is lowered as `ok` and raises), and it works through a
# module-global scratch set that concurrent threads overwrite. Declaring both "tagged"
# makes every result/option an explicit Variant(tag, payload) both ways: no guessing, no
# shared state. wasmtime is pinned; tests/engine/test_host.py fails if this stops working.
wc.ResultType._tagged = _always_tagged  # type: ignore[method-assign,assignment]
wc.OptionType._tagged = _always_tagged  # type: ignore[method-assign,assignment]


def wat2wasm(text: str) -> bytes:
    """The binary form of WebAssembly text (components included), for tests and tools."""
    return bytes(wasmtime.wat2wasm(text))


@attrs.frozen(kw_only=True)
class Pooling:
    """wasmtime's pooling allocator, as the engine configures it.

    Per store it allows what the built-in ceilings allow (:data:`POOL_MAXIMA`), so a
    call's own limits (``[limits]``, checked by the store) are what stop a tool first.
    """

    #: Stores alive at once: the calls running plus those whose memory is being reset.
    #: A call waits for a store when all are taken (never in kamid, which sizes this
    #: from its call threads).
    stores: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    #: Bytes at the start of each linear memory kept mapped between calls and reset by
    #: copying (``[engine] keep_resident_mb``); the rest is unmapped and faulted in
    #: again by the next call. Covering a tool's whole memory makes its calls fault-free;
    #: the reset then copies that much after the answer is out.
    keep_resident: int = attrs.field(default=16 * 1024 * 1024, validator=attrs.validators.ge(0))

    @classmethod
    def for_threads(cls, threads: int, *, keep_resident: int) -> Pooling:
        """Enough stores that ``threads`` call threads never wait for one: one each, and
        those the engine's reaper may hold while it resets them (``REAPER_JOBS``)."""
        return cls(stores=threads + REAPER_JOBS, keep_resident=keep_resident)


#: Stores the engine's reaper may hold at once, waiting to be reset or being reset.
REAPER_JOBS = 2
#: What one store of a pooled engine may hold (wasmtime reserves address space for it:
#: each memory slot is 4 GiB plus guard pages, never touched until used). The ceilings
#: kamid ships with allow no more, so a tool over them hits its own named limit first.
POOL_MAXIMA: dict[str, int] = {
    "memory_bytes": 4096 * 1024 * 1024,
    "table_elements": 10_000_000,
    "instances": 1_000,
}
# What one component may declare, checked when it is compiled: far above the store's
# limits, so that a component over those compiles and fails at its call, with the limit
# named (as without pooling), instead of being refused by the pool.
_POOL_DECLARED = {"instances": 100_000, "memories": 1_000, "tables": 1_000}
#: Size of an instance's runtime state (vmctx): wasmtime's default is 1 MiB; a component
#: with tens of thousands of functions or imports may need more.
_POOL_INSTANCE_BYTES = 8 * 1024 * 1024


def _reservation(pooling: Pooling) -> int:
    """Address space a pooled engine reserves, generously: measured ~18 GiB per store
    (four 4 GiB memory slots with guard pages, and table slots)."""
    return pooling.stores * 20 * 1024**3


def _address_space_for(pooling: Pooling) -> bool:
    """Whether ``RLIMIT_AS`` leaves room for the pool (logs a warning when it does not)."""
    try:
        import resource  # Unix only
    except ImportError:
        return True
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return True
    needed = _reservation(pooling)
    if limit >= needed + 8 * 1024**3:  # the interpreter, the AOT files and the rest
        return True
    log.warning(
        "the address space is limited to %d MiB (ulimit -v) and wasmtime's pooling allocator "
        "needs about %d MiB of it: calls run without it, each mapping fresh memory (slower; "
        "see docs/operators.md, 'Engine memory')",
        limit >> 20,
        needed >> 20,
    )
    return False


def _pooling_strategy(config: wasmtime.Config, pooling: Pooling) -> None:
    stores = pooling.stores
    settings = {
        "total_component_instances": stores,
        "max_component_instance_size": _POOL_INSTANCE_BYTES,
        "max_core_instances_per_component": _POOL_DECLARED["instances"],
        "total_core_instances": stores * POOL_MAXIMA["instances"],
        "max_core_instance_size": _POOL_INSTANCE_BYTES,
        "max_memories_per_component": _POOL_DECLARED["memories"],
        "max_memories_per_module": _POOL_DECLARED["memories"],
        "total_memories": stores * _MAX_MEMORIES,
        "max_memory_size": POOL_MAXIMA["memory_bytes"],
        "linear_memory_keep_resident": pooling.keep_resident,
        "max_tables_per_component": _POOL_DECLARED["tables"],
        "max_tables_per_module": _POOL_DECLARED["tables"],
        "total_tables": stores * _MAX_TABLES,
        "table_elements": POOL_MAXIMA["table_elements"],
        "table_keep_resident": 1024 * 1024,
        # Slots left warm (mapped, holding up to keep_resident bytes) once their store
        # closed: one per memory a store may have is enough for calls in a row.
        "max_unused_warm_slots": stores * _MAX_MEMORIES,
    }
    pool = _bindings.wasmtime_pooling_allocation_config_new()
    try:
        for name, value in settings.items():
            getattr(_bindings, f"wasmtime_pooling_allocation_config_{name}_set")(pool, value)
        _bindings.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        _bindings.wasmtime_pooling_allocation_config_delete(pool)


@attrs.frozen(kw_only=True)
class Loaded:
    """A compiled, validated component, as the cache keeps it."""

    component: wc.Component
    run: wc.ExportIndex
    info: ComponentInfo
    initial_memory: int


class Runtime:
    """The wasmtime engine and linker, and running one call on a fresh store. Thread-safe.

    Args:
        tick_ms: epoch tick period; deadlines are counted in ticks, which :attr:`ticker`
            makes from its own thread while a call runs (never while idle).
        pooling: the pooling allocator's settings, or None for wasmtime's default
            allocator (fresh mappings for every call).

    A pooling allocator that the address-space limit (``ulimit -v``) leaves no room for is
    not used: wasmtime would abort the process when it fails to reserve it. The engine
    then runs without it and logs why.
    """

    def __init__(self, *, tick_ms: int, pooling: Pooling | None = None) -> None:
        if tick_ms < 1:
            raise ValueError(f"tick_ms must be at least 1 (got {tick_ms})")
        self.tick_ms = tick_ms
        if pooling is not None and not _address_space_for(pooling):
            pooling = None
        #: The pooling settings in use (None: off, or no address space for it).
        self.pooling = pooling
        config = wasmtime.Config()
        for name, value in _SETTINGS.items():
            setattr(config, name, value)
        #: Taken for each store, given back when it is closed: with pooling, a call waits
        #: for a free slot instead of failing to instantiate.
        self._stores: threading.BoundedSemaphore | None = None
        if pooling is not None:
            _pooling_strategy(config, pooling)
            self._stores = threading.BoundedSemaphore(pooling.stores)
        self._engine = wasmtime.Engine(config)
        self._linker = _build_linker(self._engine)
        self.compiler = _Compiler(self._engine)
        settings = json.dumps([WASMTIME_VERSION, platform.machine(), _SETTINGS], sort_keys=True)
        #: Names the wasmtime version and settings in AOT cache keys.
        self.key_suffix = f"{WASMTIME_VERSION}-{hashlib.sha256(settings.encode()).hexdigest()[:16]}"
        #: Ticks the epoch from its own thread while calls run.
        self.ticker = EpochTicker(self.tick, tick_ms / 1000)

    def tick(self) -> None:
        self._engine.increment_epoch()

    def run(
        self,
        loaded: Loaded,
        input: str,
        limits: Limits,
        host: HostContext,
        sandbox: SandboxSpec = DENY_ALL,
        teardown: list[Callable[[], None]] | None = None,
    ) -> CallOutcome:
        """Instantiates ``loaded`` on a fresh store and calls ``run(input)``.

        The store is closed before this returns, unless ``teardown`` is given: then
        closing it (which frees its memory) is appended there, for the
        caller to run once the answer is out. Guest stdout/stderr ends with the call
        either way.

        Raises:
            KamiError: as documented by ``Engine.call``.
        """
        state = CallState(host, limits.max_host_calls, epoch_ticks(limits.timeout_ms, self.tick_ms))
        output = GuestOutput(host, limits.max_guest_output_bytes)
        wasi = _wasi_config(sandbox, output)
        store = self._new_store(limits, wasi)
        stores = self._stores
        outer = getattr(_current, "state", None)  # a tool invoking another tool nests
        _current.state = state
        started = time.perf_counter()
        host.start_clock()  # host calls (http) count the call's deadline from here too
        result: Any = None
        error: wasmtime.WasmtimeError | None = None
        linked = False
        self.ticker.enter()
        try:
            instance = self._linker.instantiate(store, loaded.component)
            linked = True
            func = instance.get_func(store, loaded.run)
            assert func is not None  # _Compiler checked the export
            result = func(store, input)
        except wasmtime.WasmtimeError as exc:
            error = exc
        finally:
            self.ticker.leave()
            wall_ms = (time.perf_counter() - started) * 1000
            _current.state = outer
            fuel_left = store.get_fuel()
            # Output written after this is dropped, so the logs are final; the store is
            # closed now (or by the caller), not at garbage collection, so none is left
            # for interpreter exit.
            output.close()
            close = store.close if stores is None else functools.partial(_close, store, stores)
            if teardown is None:
                close()
            else:
                teardown.append(close)
        usage = Usage(
            wall_ms=round(wall_ms, 3),
            fuel_consumed=limits.fuel - fuel_left,
            peak_memory_bytes=loaded.initial_memory,
            host_calls=host.host_calls,
        )
        if error is not None:
            exit_code = error.code if isinstance(error, wasmtime.ExitTrap) else None
            text = str(error)
            raise failure(
                text, exit_code=exit_code, linked=linked, state=state, limits=limits, usage=usage
            )
        # _Compiler checked that run returns result<string, string>.
        assert isinstance(result, wc.Variant)
        assert isinstance(result.payload, str)
        return finish(result.tag, result.payload, usage=usage, limits=limits, host=host)

    def _new_store(self, limits: Limits, wasi: wasmtime.WasiConfig) -> wasmtime.Store:
        """A store set up for one call: fuel, the tick callback, limits, WASI. With
        pooling it holds one of the pool's stores until :func:`_close` gives it back."""
        stores = self._stores
        if stores is not None:
            stores.acquire()
        store: wasmtime.Store | None = None
        try:
            store = wasmtime.Store(self._engine)
            store.set_fuel(limits.fuel)
            # Every tick asks _on_tick whether to go on: that is how a deadline or a
            # cancellation stops a running guest.
            store.set_epoch_deadline(1)
            _bindings.wasmtime_store_epoch_deadline_callback(
                store.ptr(), _on_tick, None, _NO_FINALIZER
            )
            store.set_limits(
                memory_size=limits.memory_bytes,
                table_elements=limits.table_elements,
                instances=limits.instances,
                tables=_MAX_TABLES,
                memories=_MAX_MEMORIES,
            )
            store.set_wasi(wasi)
        except BaseException:
            if store is not None:
                store.close()
            if stores is not None:
                stores.release()
            raise
        return store


def _close(store: wasmtime.Store, stores: threading.BoundedSemaphore) -> None:
    try:
        store.close()  # with pooling: resets the slots for the next call
    finally:
        stores.release()


def _wasi_config(sandbox: SandboxSpec, output: GuestOutput) -> wasmtime.WasiConfig:
    """No args, stdio captured (never inherited), and only the sandbox's env and preopens.

    Raises:
        InternalError: a preopen cannot be opened (the caller checked it exists).
    """
    wasi = wasmtime.WasiConfig()
    wasi.stdout_custom = output.stdout
    wasi.stderr_custom = output.stderr
    if sandbox.env:
        wasi.env = [list(pair) for pair in sandbox.env]
    for preopen in sandbox.preopens:
        # fs_mutable=False gives the guest read-only directory and file permissions:
        # creating, writing, renaming, linking and deleting all fail inside it.
        try:
            wasi.preopen_dir(preopen.host, preopen.guest, preopen.writable)
        except wasmtime.WasmtimeError as exc:
            raise InternalError(
                f"cannot mount {preopen.host} at {preopen.guest}: {exc}; check that the "
                "directory exists and kamid's user can open it",
                data={"host": preopen.host, "guest": preopen.guest},
            ) from exc
    return wasi


# The epoch deadline callback (wasmtime's C API; wasmtime-py has no wrapper for it). One
# function serves every store: it runs on the thread running the guest, inside
# Runtime.run, so the call's state is the thread's current one (a nested invoke's store
# runs, and ticks, only while the outer guest waits in a host call).
_UPDATE_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
_DeadlineCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(_bindings.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(_bindings.wasmtime_update_deadline_kind_t),
)
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()


def _tick(_context: object, _data: object, delta: Any, kind: Any) -> int:
    """One epoch tick of a running guest: go on for one more tick, or trap (returning a
    wasmtime error) when its deadline is reached or its call was cancelled."""
    try:
        state: CallState = _current.state
        if state.host.cancelled:
            state.failure = "cancelled"
        else:
            state.ticks_left -= 1
            if state.ticks_left > 0:
                delta[0] = 1
                kind[0] = _UPDATE_CONTINUE
                return 0
            state.failure = "timeout_ms"
    except BaseException:  # an exception must not reach wasmtime: stop the guest instead
        log.exception("the epoch deadline callback failed; stopping the call")
    error = _bindings.wasmtime_error_new(b"kami: call stopped at its deadline or cancelled")
    return ctypes.cast(error, ctypes.c_void_p).value or 0


_on_tick = _DeadlineCallback(_tick)


# Host functions. The guest thread that calls one is inside Runtime.run, which put the
# call's state in a thread-local: wasmtime-py hands host functions a StoreContext, which
# has no public accessor for the store's data.
_current = threading.local()
_HTTP_ERRORS = frozenset(
    {"not-granted", "denied", "limit-exceeded", "invalid-request", "transport", "timeout"}
)
_KV_ERRORS = frozenset({"not-granted", "limit-exceeded", "invalid-key"})
_INVOKE_ERRORS = frozenset({"not-granted", "not-found", "failed", "limit-exceeded"})


def _host_function(body: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps ``body(host, *args)`` as a host function: counts it, contains its failures."""

    def host_function(_store: object, *args: Any) -> Any:
        state: CallState | None = getattr(_current, "state", None)
        if state is None:
            raise wasmtime.WasmtimeError("kami: host function called outside a tool call")
        state.host.host_calls += 1
        if state.host.host_calls > state.budget:
            state.failure = "host_calls"
            raise wasmtime.WasmtimeError("kami: host call budget exhausted")
        try:
            return body(state.host, *args)
        except Exception as exc:
            # Only a WasmtimeError may leave a host function: wasmtime-py parks any other
            # exception in a process-global slot, where a concurrent call could find it.
            state.failure = exc
            raise wasmtime.WasmtimeError(f"kami: host function failed: {exc!r}") from None

    return host_function


def _result(get: Callable[[], Any], cases: frozenset[str]) -> wc.Variant:
    """``result<T, error>``: ok(get()), or err(case(message)) for a HostError."""
    try:
        return wc.Variant("ok", get())
    except HostError as exc:
        if exc.kind not in cases:
            raise ValueError(f"HostError kind {exc.kind!r} is not one of {sorted(cases)}") from exc
        return wc.Variant("err", wc.Variant(exc.kind, _text(exc.message)))


def _text(value: str) -> str:
    # A lone surrogate cannot be lowered, and wasmtime-py would report that through its
    # process-global exception slot after this function returned; replace it instead.
    return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")


def _some(value: wc.Variant) -> Any:
    return value.payload if value.tag == "some" else None


def _option(value: bytes | None) -> wc.Variant:
    return wc.Variant("none") if value is None else wc.Variant("some", bytes(value))


def _fetch(host: HostContext, req: Any) -> wc.Variant:
    request = HttpRequest(
        method=req.method,
        url=req.url,
        headers=tuple(req.headers),
        body=_some(req.body),
        timeout_ms=_some(getattr(req, "timeout-ms")),
    )
    return _result(lambda: _response(host.http_fetch(request)), _HTTP_ERRORS)


def _response(response: HttpResponse) -> wc.Record:
    # Values are normalized here, inside the host function, because a value that fails
    # to lower after it returns escapes the per-call error handling (see _text).
    status = int(response.status)
    if not 0 <= status <= 0xFFFF:
        raise ValueError(f"HTTP status {status} does not fit the WIT u16")
    record = wc.Record()  # fields are plain attributes, read back by name
    vars(record).update(
        status=status,
        headers=[(_text(str(k)), _text(str(v))) for k, v in response.headers],
        body=bytes(response.body),
    )
    return record


_HOST_FUNCTIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "kami:tool/host@0.1.0": {"log": lambda host, level, message: host.log(level, message)},
    "kami:tool/http@0.1.0": {"fetch": _fetch},
    "kami:tool/kv@0.1.0": {
        "get": lambda host, key: _result(lambda: _option(host.kv_get(key)), _KV_ERRORS),
        "set": lambda host, key, value: _result(lambda: host.kv_set(key, value), _KV_ERRORS),
        "delete": lambda host, key: _result(lambda: host.kv_delete(key), _KV_ERRORS),
        "list-keys": lambda host, prefix: _result(
            lambda: [_text(str(k)) for k in host.kv_list_keys(prefix)], _KV_ERRORS
        ),
    },
    "kami:tool/invoke@0.1.0": {
        "call": lambda host, tool, input: _result(
            lambda: _text(str(host.invoke(tool, input))), _INVOKE_ERRORS
        ),
    },
}
assert {k: frozenset(v) for k, v in _HOST_FUNCTIONS.items()} == KAMI_IMPORTS


def _build_linker(engine: wasmtime.Engine) -> wc.Linker:
    linker = wc.Linker(engine)
    linker.add_wasip2()
    with linker.root() as root:
        for interface, functions in _HOST_FUNCTIONS.items():
            with root.add_instance(interface) as instance:
                for name, body in functions.items():
                    instance.add_func(name, _host_function(body))
    return linker


class _Compiler:
    """Turns wasm into a validated :class:`Loaded`, and back and forth from AOT files."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine

    def compile(self, wasm: bytes) -> Loaded:
        check_header(wasm)
        try:
            component = wc.Component(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            text = str(exc).strip()
            first = text.splitlines()[0]
            if "pooling allocator" in text:
                # Valid, but bigger than a pooled store holds (POOL_MAXIMA).
                raise InvalidTool(
                    f"the component needs more than kamid's pooling allocator holds per call "
                    f"({first}); to run it, set `pooling = false` under [engine] in kamid.toml "
                    "and restart kamid",
                    data={"pooling": True},
                ) from exc
            raise InvalidTool(f"not a valid WebAssembly component: {first}") from exc
        return self._describe(component, initial_memory_bytes(wasm))

    def serialize(self, item: Loaded) -> bytes:
        return bytes(item.component.serialize())

    def load(self, aot_path: Path, wasm_path: Path) -> Loaded:
        component = wc.Component.deserialize_file(self._engine, str(aot_path))
        return self._describe(component, _file_memory(wasm_path))

    def _describe(self, component: wc.Component, initial_memory: int) -> Loaded:
        engine = self._engine
        exports = component.type.exports(engine)
        imports = component.type.imports(engine)
        tool = exports.get(TOOL_EXPORT)
        if tool is None:
            raise InvalidTool(
                f"the component does not export {TOOL_EXPORT} (it exports "
                f"{sorted(exports) or 'nothing'}); a KAMI tool implements the kami-tool "
                "world of wit/kami-tool.wit (`kamictl build` does this for Python and JS)"
            )
        if not _is_run(engine, tool.ty):
            raise InvalidTool(
                f"the component exports {TOOL_EXPORT}, but not as `run: func(input: "
                "string) -> result<string, string>`; implement the tool interface exactly "
                "as wit/kami-tool.wit declares it"
            )
        problems = [
            problem
            for name, extern in imports.items()
            if (problem := import_problem(name, _functions(engine, extern.ty)))
        ]
        if problems:
            raise InvalidTool("the component " + "; ".join(problems), data={"imports": [*imports]})
        tool_index = component.get_export_index(TOOL_EXPORT)
        run = component.get_export_index("run", tool_index)
        assert run is not None
        info = ComponentInfo(imports=sorted(imports), exports=sorted(exports))
        return Loaded(component=component, run=run, info=info, initial_memory=initial_memory)


def _is_run(engine: wasmtime.Engine, item: Any) -> bool:
    if not isinstance(item, wc.ComponentInstanceType):
        return False
    run = item.exports(engine).get("run")
    func = run.ty if run is not None else None
    if not isinstance(func, wc.FuncType):
        return False
    params, result = func.params, func.result
    return (
        len(params) == 1
        and isinstance(params[0][1], wc.String)
        and isinstance(result, wc.ResultType)
        and isinstance(result.ok, wc.String)
        and isinstance(result.err, wc.String)
    )


def _functions(engine: wasmtime.Engine, item: Any) -> set[str] | None:
    if not isinstance(item, wc.ComponentInstanceType):
        return None
    return {name for name, ext in item.exports(engine).items() if isinstance(ext.ty, wc.FuncType)}


def _file_memory(wasm_path: Path) -> int:
    # Mapped, not read: only the section headers and memory sections are touched.
    try:
        with wasm_path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return initial_memory_bytes(memoryview(m))
    except (OSError, ValueError):
        return 0
