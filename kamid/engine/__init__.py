"""The execution engine: components compiled once, cached, and run under limits.

:mod:`kamid.engine._wasm` is the only module in KAMI that imports wasmtime.
"""

from ._cache import AotIndex, CompileReport
from ._component import ComponentInfo
from ._engine import Engine
from ._executor import Executor
from ._outcome import CallOutcome
from ._wasm import WASMTIME_VERSION, Pooling, wat2wasm

__all__ = [
    "WASMTIME_VERSION",
    "AotIndex",
    "CallOutcome",
    "CompileReport",
    "ComponentInfo",
    "Engine",
    "Executor",
    "Pooling",
    "wat2wasm",
]
