"""Compiled components: an in-memory LRU over an AOT disk cache, compiled once.

Compiling a componentize-py tool takes ~7 s; loading its 40 MB AOT file ~30 ms (mostly
hashing it); a component already in memory costs nothing. :class:`ComponentCache` serves
from the first of those that works and compiles each component exactly once, however
many threads ask for it at the same time.

An AOT file is native code that wasmtime maps and runs, so the cache loads one only if
its sha256 matches what :class:`AotIndex` recorded when this daemon wrote it; anything
else (a tampered, truncated or foreign file) is deleted and recompiled.

This module does not import wasmtime: :class:`Compiler` does the wasm work.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

import attrs

from kamid.protocol import CacheStatistics, IntegrityError, InvalidTool

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["AotIndex", "CompileReport", "Compiler", "ComponentCache"]

log = logging.getLogger("kamid.engine")

T = TypeVar("T")
Source = Literal["memory", "disk", "compiled"]


class AotIndex(Protocol):
    """Where the hash of each AOT file is recorded when it is written (the store)."""

    def aot_get(self, key: str) -> str | None:
        """The recorded sha256 of the AOT file ``key``, or None."""

    def aot_put(self, key: str, file_sha256: str) -> None:
        """Records the sha256 of the AOT file ``key`` just written."""

    def aot_delete(self, key: str) -> None:
        """Forgets ``key``."""


class Compiler(Protocol[T]):
    """The wasm side of the cache: what it stores, how it is made and reloaded."""

    def compile(self, wasm: bytes) -> T:
        """Compiles and validates a component; raises InvalidTool when it is unusable."""

    def serialize(self, item: T) -> bytes:
        """The AOT bytes of ``item``."""

    def load(self, aot_path: Path, wasm_path: Path) -> T:
        """Deserializes (maps) a verified AOT file; ``wasm_path`` is its source."""


@attrs.frozen(kw_only=True)
class CompileReport:
    #: Time spent getting the component ready.
    ms: float
    #: Where it came from: already in memory, the AOT file, or a fresh compile.
    source: Source


class _Flight:
    """One in-progress load that other threads wait for instead of repeating it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


class ComponentCache(Generic[T]):
    """Compiled components by sha256: LRU in memory, AOT files on disk, single flight.

    Thread-safe. The AOT file of a component is ``aot_dir/<key>.cwasm`` with
    ``key = <sha256>-<key_suffix>``; the suffix names the wasmtime version and engine
    settings, so an upgrade never loads stale native code.

    Args:
        compiler: makes, serializes and reloads items.
        aot_dir: the AOT directory; created (0700) if missing.
        aot_index: records the hash of every AOT file written.
        key_suffix: identifies the wasmtime version and engine settings.
        capacity: items kept in memory; the least recently used goes first.
    """

    def __init__(
        self,
        compiler: Compiler[T],
        *,
        aot_dir: Path,
        aot_index: AotIndex,
        key_suffix: str,
        capacity: int,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"lru_capacity must be at least 1 (got {capacity})")
        self._compiler = compiler
        self._dir = aot_dir
        self._index = aot_index
        self._suffix = key_suffix
        self._capacity = capacity
        self._lru: OrderedDict[str, T] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(
            ("memory_hits", "disk_hits", "compiles", "evictions", "rejected"), 0
        )
        self._compile_ms = 0.0
        aot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _remove_abandoned_temp_files(aot_dir)

    def key(self, sha256: str) -> str:
        return f"{sha256}-{self._suffix}"

    def aot_path(self, sha256: str) -> Path:
        return self._dir / f"{self.key(sha256)}.cwasm"

    def get(self, sha256: str, wasm_path: Path) -> tuple[T, Source]:
        """The item for ``sha256``, loading or compiling it on a miss.

        Concurrent misses for one sha256 share a single load; the others wait for it and
        get its result or its exception.

        Raises:
            IntegrityError: ``wasm_path`` does not hash to ``sha256``.
            InvalidTool: the wasm is not a usable component.
        """
        with self._lock:
            item = self._lru.get(sha256)
            if item is not None:
                self._lru.move_to_end(sha256)
                self._stats["memory_hits"] += 1
                return item, "memory"
            flight = self._flights.get(sha256)
            leader = flight is None
            if flight is None:
                flight = self._flights[sha256] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            with self._lock:
                self._stats["memory_hits"] += 1
            return flight.value, "memory"  # type: ignore[return-value]
        try:
            item, source = self._load(sha256, wasm_path)
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                del self._flights[sha256]
            flight.done.set()
            raise
        flight.value = item
        with self._lock:
            # Into the LRU before the flight ends, so a newcomer finds one or the other.
            self._insert(sha256, item)
            del self._flights[sha256]
        flight.done.set()
        return item, source

    def ensure_on_disk(self, sha256: str, wasm_path: Path) -> CompileReport:
        """Makes sure the AOT file exists and is recorded, compiling if needed.

        Raises:
            IntegrityError: ``wasm_path`` does not hash to ``sha256``.
            InvalidTool: the wasm is not a usable component; nothing is written.
        """
        start = time.perf_counter()
        item, source = self.get(sha256, wasm_path)
        if source == "memory" and self.state(sha256, memory=False) == "none":
            self._write(self.key(sha256), self._compiler.serialize(item))
        return CompileReport(ms=(time.perf_counter() - start) * 1000, source=source)

    def state(self, sha256: str, *, memory: bool = True) -> Literal["memory", "disk", "none"]:
        """Where a call would find the component now (the AOT file is not re-hashed)."""
        if memory:
            with self._lock:
                if sha256 in self._lru:
                    return "memory"
        key = self.key(sha256)
        if self.aot_path(sha256).exists() and self._index.aot_get(key) is not None:
            return "disk"
        return "none"

    def forget(self, sha256: str) -> None:
        """Drops the component from memory and deletes its AOT file and record."""
        with self._lock:
            self._lru.pop(sha256, None)
        self.aot_path(sha256).unlink(missing_ok=True)
        self._index.aot_delete(self.key(sha256))

    def statistics(self) -> CacheStatistics:
        with self._lock:
            return CacheStatistics(
                **self._stats,
                entries=len(self._lru),
                capacity=self._capacity,
                compile_ms_total=round(self._compile_ms, 3),
            )

    def _insert(self, sha256: str, item: T) -> None:
        self._lru[sha256] = item
        self._lru.move_to_end(sha256)
        while len(self._lru) > self._capacity:
            self._lru.popitem(last=False)
            self._stats["evictions"] += 1

    def _load(self, sha256: str, wasm_path: Path) -> tuple[T, Source]:
        key = self.key(sha256)
        aot = self.aot_path(sha256)
        recorded = self._index.aot_get(key)
        if aot.exists():
            item = self._load_verified(aot, wasm_path, recorded)
            if item is not None:
                with self._lock:
                    self._stats["disk_hits"] += 1
                return item, "disk"
            with self._lock:
                self._stats["rejected"] += 1
            aot.unlink(missing_ok=True)
        if recorded is not None:
            self._index.aot_delete(key)
        wasm = _read_verified(wasm_path, sha256)
        start = time.perf_counter()
        item = self._compiler.compile(wasm)
        ms = (time.perf_counter() - start) * 1000
        with self._lock:
            self._stats["compiles"] += 1
            self._compile_ms += ms
        log.info("compiled %s in %.0f ms", sha256[:12], ms)
        self._write(key, self._compiler.serialize(item))
        return item, "compiled"

    def _load_verified(self, aot: Path, wasm_path: Path, recorded: str | None) -> T | None:
        if recorded is None:
            log.warning("%s: no hash recorded for this AOT file; recompiling", aot.name)
            return None
        actual = _sha256_file(aot)
        if actual != recorded:
            log.warning("%s: hash %s, recorded %s; recompiling", aot.name, actual, recorded)
            return None
        try:
            return self._compiler.load(aot, wasm_path)
        except InvalidTool:
            raise
        except Exception as exc:  # a matching hash but unloadable file: recompile, don't fail
            log.warning("%s: cannot load (%s); recompiling", aot.name, exc)
            return None

    def _write(self, key: str, data: bytes) -> None:
        # tmp + fsync + rename: a crash leaves either no file or a complete one, and the
        # hash is recorded only once the file is in place (a file without a record is
        # rejected and rebuilt, never trusted).
        final = self._dir / f"{key}.cwasm"
        tmp = self._dir / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._index.aot_put(key, hashlib.sha256(data).hexdigest())


def _remove_abandoned_temp_files(aot_dir: Path) -> None:
    # A crash mid-write leaves a temp file (tens of MB) nobody will rename; one an hour
    # old is not being written by anyone.
    cutoff = time.time() - 3600
    for tmp in aot_dir.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()


def _sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_verified(wasm_path: Path, sha256: str) -> bytes:
    # Compiling is rare and slow (seconds); hashing the input first costs milliseconds and
    # guarantees the native code matches the component that was installed.
    try:
        wasm = wasm_path.read_bytes()
    except OSError as exc:
        raise InvalidTool(f"{wasm_path}: cannot read the component: {exc}") from exc
    actual = hashlib.sha256(wasm).hexdigest()
    if actual != sha256:
        raise IntegrityError(
            f"{wasm_path} has sha256 {actual}, expected {sha256}; the file changed since it "
            "was installed: reinstall the tool",
            data={"file": str(wasm_path), "expected": sha256, "actual": actual},
        )
    return wasm
