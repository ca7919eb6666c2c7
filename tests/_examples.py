"""The real example tools (examples/*), built from source for the tests that need them.

Building one takes 10-20 s (componentize-py, componentize-js), so the builds are cached
across sessions: the examples are copied into ``<repo>/.toolchain/examples/<key>/``, where
``<key>`` hashes everything that shapes the output (example sources, the WIT, the build
module, toolchain versions), and built there by ``kamictl.build.build_tool``. A session
whose inputs match an earlier one finds the components up to date and builds nothing; a
change to any input gets a fresh directory. The source tree is never written to, and
parallel sessions serialize on a lock file instead of building the same thing twice.

Tests receive the built tool directories (tool id -> directory) and must treat them as
read-only; a test that edits a tool copies it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kamictl import build

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["EXAMPLES", "REPO", "build_examples", "built_examples", "publish_once", "toolchain"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
#: Example directory name -> tool id.
EXAMPLE_IDS = {
    "echo": "dev.kami.echo",
    "hello": "dev.kami.hello",
    "http-fetch": "dev.kami.http-fetch",
    "github-repo": "dev.kami.github-repo",
}

_IGNORE = shutil.ignore_patterns("build", "__pycache__", "node_modules", "*.wasm", ".*")
_built: dict[str, Path] | None = None


def toolchain() -> Path:
    """The toolchain folder the examples build with: ``KAMI_TOOLCHAIN`` or ``<repo>/.toolchain``."""
    configured = os.environ.get("KAMI_TOOLCHAIN")
    return Path(configured) if configured else REPO / ".toolchain"


def build_examples(*, progress: bool = False) -> dict[str, Path]:
    """Builds every example once per process and returns tool id -> built tool directory.

    Args:
        progress: print the toolchains' output (for running this module by hand).

    Raises:
        kamid.protocol.InvalidTool: an example or its toolchain is broken; the message
            carries the toolchain's complaint.
    """
    global _built
    if _built is None:
        root = toolchain() / "examples" / _inputs_key()
        _copy_once(root)
        with _env("KAMI_TOOLCHAIN", str(toolchain())), _locked(root / ".build.lock"):
            for name in EXAMPLE_IDS:
                build.build_tool(root / name, progress=print if progress else lambda s: None)
        _built = {tool_id: root / name for name, tool_id in EXAMPLE_IDS.items()}
    return dict(_built)


@pytest.fixture(scope="session")
def built_examples() -> dict[str, Path]:
    """Tool id -> directory of the example, with its component built (read-only)."""
    return build_examples()


def _inputs_key() -> str:
    """A digest of everything that shapes the built components."""
    digest = hashlib.sha256(importlib.metadata.version("componentize-py").encode())
    for path in _inputs():
        digest.update(f"\0{path.relative_to(REPO)}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _inputs() -> list[Path]:
    files: list[Path] = []
    for name in EXAMPLE_IDS:
        for root, dirs, names in os.walk(EXAMPLES / name):
            dirs[:] = sorted(d for d in dirs if not _IGNORE(root, [d]))
            files += [Path(root, n) for n in sorted(names) if not _IGNORE(root, [n])]
    kamictl = Path(build.__file__).parent
    files += sorted(REPO.joinpath("wit").rglob("*.wit"))
    files += [kamictl / "build.py", *sorted(kamictl.joinpath("_js").iterdir())]
    return files


def _copy_once(root: Path) -> None:
    if root.exists():
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
    for name in EXAMPLE_IDS:
        shutil.copytree(EXAMPLES / name, staging / name, ignore=_IGNORE)
    try:
        # Atomic publish: a concurrent session sees no directory or a complete copy.
        staging.rename(root)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not root.exists():
            raise


def publish_once(target: Path, make: Callable[[Path], None]) -> Path:
    """``target``, made once by ``make(staging)`` and published by an atomic rename.

    Sessions running at once serialize on a lock beside it; each sees no directory or a
    complete one, and a session that finds it made makes nothing.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / ".lock"):
        if target.exists():
            return target
        staging = target.with_name(target.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        make(staging)
        staging.rename(target)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


if __name__ == "__main__":
    for tool_id, path in build_examples(progress=True).items():
        print(tool_id, path)
