"""Engine fixtures: WAT components on disk, a dict-backed AOT index, an engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from kamid.engine import Engine
from kamid.hostapi import HostContext
from tests._engine import FAST, FIXTURES, DictIndex, Wasm, compile_wat

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["FAST", "FIXTURES", "DictIndex", "Wasm", "aot_dir", "engine", "host", "index", "wasm"]


@pytest.fixture
def wasm(tmp_path: Path) -> Callable[[str], Wasm]:
    """Compiles ``tests/fixtures/<name>.wat`` to a ``.wasm`` file: ``wasm("echo")``."""
    return lambda name: compile_wat(tmp_path / "wasm", name)


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
