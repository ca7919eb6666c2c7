"""The engine fixtures, for tests that run guests against real preopens."""

from tests.engine.conftest import aot_dir, engine, index, wasm

__all__ = ["aot_dir", "engine", "index", "wasm"]
