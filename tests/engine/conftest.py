"""Engine fixtures: WAT components on disk, a dict-backed AOT index, an engine."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from kamid.engine import Engine, wat2wasm
from kamid.hostapi import HostContext
from kamid.sandbox import Limits

if TYPE_CHECKING:
    from collections.abc import Callable

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

#: Small enough that a runaway fixture fails fast, large enough for every honest one.
FAST = Limits(timeout_ms=300, fuel=200_000_000, memory_bytes=16 * 1024 * 1024)


class DictIndex(dict[str, str]):
    """An in-memory :class:`kamid.engine.AotIndex`."""

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


@pytest.fixture
def wasm(tmp_path: Path) -> Callable[[str], Wasm]:
    """Compiles ``tests/fixtures/<name>.wat`` to a ``.wasm`` file: ``wasm("echo")``."""

    def make(name: str) -> Wasm:
        data = wat2wasm((FIXTURES / f"{name}.wat").read_text())
        path = tmp_path / "wasm" / f"{name}.wasm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return Wasm(hashlib.sha256(data).hexdigest(), path)

    return make


@pytest.fixture
def index() -> DictIndex:
    return DictIndex()


@pytest.fixture
def aot_dir(tmp_path: Path) -> Path:
    return tmp_path / "aot"


@pytest.fixture
def engine(aot_dir: Path, index: DictIndex) -> Engine:
    """An engine with a short tick (it ticks its own epoch while calls run)."""
    return Engine(aot_dir=aot_dir, aot_index=index, tick_ms=5)


def host(tool_id: str = "dev.test.tool") -> HostContext:
    return HostContext(tool_id=tool_id)
