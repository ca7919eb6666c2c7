"""The MCP Inspector CLI (npm ``@modelcontextprotocol/inspector``), installed for the tests.

``tests/mcp/inspector/`` pins it with a lockfile; :func:`inspector` installs exactly that
with ``npm ci`` into ``<toolchain>/mcp-inspector/<lock digest>/`` once, and reuses it
afterwards. Parallel sessions serialize on a lock file.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
from pathlib import Path

from tests._examples import publish_once, toolchain

__all__ = ["inspector"]

SPEC = Path(__file__).resolve().parent / "inspector"


def inspector() -> Path | None:
    """The ``mcp-inspector`` executable, installing it first if needed; None without npm."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None
    lock = (SPEC / "package-lock.json").read_bytes()
    root = toolchain() / "mcp-inspector" / hashlib.sha256(lock).hexdigest()[:16]
    publish_once(root, functools.partial(_npm_ci, npm))
    return root / "node_modules" / ".bin" / "mcp-inspector"


def _npm_ci(npm: str, staging: Path) -> None:
    staging.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(SPEC / name, staging / name)
    proc = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=staging,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"npm ci of the MCP Inspector failed:\n{proc.stderr[-4000:]}")
