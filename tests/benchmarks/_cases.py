"""The two real examples the benchmarks run, with the input each gets and must answer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kamid.protocol import load_manifest

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CASES", "Case", "Tool", "resolve"]


@dataclass(frozen=True)
class Case:
    """One example as the benchmark drives it."""

    #: ``python`` or ``js`` (what ``--only`` selects).
    key: str
    tool_id: str
    input: dict[str, Any]
    #: The output the tool must give for ``input``; a wrong answer aborts the run.
    expected: dict[str, Any]

    @property
    def input_text(self) -> str:
        """The JSON text the daemon hands the tool (it uses ``json.dumps`` too)."""
        return json.dumps(self.input)


CASES: tuple[Case, ...] = (
    Case(
        key="python",
        tool_id="dev.kami.echo",
        input={"text": "hello"},
        expected={"echo": "hello", "length": 5},
    ),
    Case(
        key="js",
        tool_id="dev.kami.hello",
        input={"name": "bench"},
        expected={"greeting": "Hello, bench!"},
    ),
)


@dataclass(frozen=True)
class Tool:
    """A case with its built tool directory and component."""

    case: Case
    dir: Path
    wasm: Path
    sha256: str
    size: int


def resolve(case: Case, tool_dir: Path) -> Tool:
    """The built component of ``case`` in ``tool_dir`` (from ``tests._examples``)."""
    wasm = tool_dir / load_manifest(tool_dir).tool.wasm
    data = wasm.read_bytes()
    return Tool(
        case=case,
        dir=tool_dir,
        wasm=wasm,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
