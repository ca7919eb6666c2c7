"""Engine test helpers without pytest: WAT fixtures compiled to files, an in-memory AOT
index, and limits for fast tests (used by tests/engine, tests/service, the benchmarks)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs

from kamid.engine import wat2wasm
from kamid.hostapi import HostContext, HttpRequest, HttpResponse
from kamid.sandbox import Limits

__all__ = ["FAST", "FIXTURES", "DictIndex", "Granted", "Wasm", "compile_wat"]

FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: Small enough that a runaway fixture fails fast, large enough for every honest one.
FAST = Limits(timeout_ms=300, fuel=200_000_000, memory_bytes=16 * 1024 * 1024)


class DictIndex(dict[str, str]):
    """An in-memory :class:`kamid.engine.AotIndex` (kamid keeps it in its database)."""

    def aot_get(self, key: str) -> str | None:
        return self.get(key)

    def aot_put(self, key: str, file_sha256: str) -> None:
        self[key] = file_sha256

    def aot_delete(self, key: str) -> None:
        self.pop(key, None)


@attrs.frozen
class Wasm:
    sha256: str
    path: Path


def compile_wat(directory: Path, name: str) -> Wasm:
    """Compiles ``tests/fixtures/<name>.wat`` to ``directory/<name>.wasm``."""
    data = wat2wasm((FIXTURES / f"{name}.wat").read_text())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.wasm"
    path.write_bytes(data)
    return Wasm(hashlib.sha256(data).hexdigest(), path)


class Granted(HostContext):
    """Answers every host call, remembering what it was asked."""

    def __init__(self) -> None:
        super().__init__(tool_id="dev.test.granted")
        self.asked: list[object] = []

    def http_fetch(self, request: HttpRequest) -> HttpResponse:
        self.asked.append(request)
        return HttpResponse(status=201, headers=(("x-a", "1"), ("x-b", "2")), body=b"pong")

    def kv_get(self, key: str) -> bytes | None:
        self.asked.append(key)
        return b"stored" if key == "key" else None

    def kv_set(self, key: str, value: bytes) -> None:
        self.asked.append((key, value))

    def kv_delete(self, key: str) -> None:
        self.asked.append(key)

    def kv_list_keys(self, prefix: str) -> list[str]:
        self.asked.append(prefix)
        return ["key-1", "key-2"]

    def invoke(self, tool: str, input: str) -> str:
        self.asked.append((tool, input))
        return '{"ok":1}'.replace('"', "'")
