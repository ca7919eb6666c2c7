"""``kamictl build``: turns a tool's source into its WebAssembly component.

The manifest's ``[build]`` table names the language and the source module. Python goes
through componentize-py (a dev dependency, found next to the running interpreter);
JavaScript goes through componentize-js, which kamictl installs with npm, at the version
pinned in ``kamictl/_js/package.json``, into a toolchain folder shared by every build
(``KAMI_TOOLCHAIN``, default ``~/.cache/kami/toolchain``).

This module stays on the thin-client side of KAMI: it runs toolchains as subprocesses and
imports nothing from ``kamid`` except the wire protocol's manifest model and errors.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from kamid.protocol import (
    COMPONENT_PREAMBLE,
    MANIFEST_NAME,
    BuildSpec,
    InvalidTool,
    load_manifest,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "BuildError",
    "BuildResult",
    "build_tool",
    "bundled_wit_dir",
    "ensure_js_toolchain",
    "toolchain_dir",
]

_HERE = Path(__file__).parent
_JS_PACKAGE = "@bytecodealliance/componentize-js"
_TAIL_LINES = 20
# Directories that hold build products, caches or dependencies, never a tool's sources.
_NOT_SOURCES = frozenset({"__pycache__", "node_modules", "build", "dist"})


class BuildError(InvalidTool):
    """A toolchain is missing or failed; the message carries the end of its output."""


@attrs.frozen
class BuildResult:
    """What :func:`build_tool` produced, or found already built."""

    #: The component, at the manifest's ``[tool].wasm`` path.
    wasm: Path
    size: int
    #: Wall time of this call, including any toolchain install.
    seconds: float
    #: True when the component was already newer than every input and nothing ran.
    skipped: bool


def bundled_wit_dir() -> Path:
    """The kami:tool WIT package shipped with kamictl (the default ``[build].wit``)."""
    return _HERE / "wit"


def toolchain_dir() -> Path:
    """Where kamictl installs toolchains: ``KAMI_TOOLCHAIN``, else the user's cache."""
    configured = os.environ.get("KAMI_TOOLCHAIN")
    if configured:
        return Path(configured).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "kami" / "toolchain"


def build_tool(
    tool_dir: Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda s: None,
) -> BuildResult:
    """Builds the component of the tool in ``tool_dir`` as its ``[build]`` table says.

    Blocks while the toolchain runs (about 10 s per build, plus a one-time npm install for
    the first JavaScript build). The component is written to a temporary file next to
    ``[tool].wasm`` and renamed over it, so a failed or interrupted build leaves the
    previous component, if any, in place and never a truncated one.

    Args:
        tool_dir: the directory holding ``tool.toml``.
        force: rebuild even when the component is newer than every input.
        progress: receives one line at a time: what is happening, and the toolchain's
            own output as it runs.

    Returns:
        Where the component is, its size, how long this took and whether it was skipped.

    Raises:
        InvalidTool: the manifest is missing or invalid, has no ``[build]`` table, or
            names a source or WIT directory that does not exist.
        BuildError: a toolchain is missing, cannot be installed, or failed; the message
            includes the end of its output and what to check.
    """
    started = time.monotonic()
    tool_dir = tool_dir.absolute()
    manifest = load_manifest(tool_dir)
    manifest_path = tool_dir / MANIFEST_NAME
    spec = manifest.build
    if spec is None:
        raise InvalidTool(
            f"{manifest_path}: no [build] table, so kamictl does not know how to build this "
            'tool; add one, e.g.\n\n[build]\nlanguage = "python"  # or "javascript"\n'
            'source = "app.py"     # the module that implements tool.run\n',
            data={"file": str(manifest_path), "key": "build"},
        )
    source = _existing(tool_dir / spec.source, manifest_path, "[build].source")
    wit = bundled_wit_dir() if spec.wit is None else tool_dir / spec.wit
    wit = _existing(wit, manifest_path, "[build].wit").resolve()
    out = tool_dir / manifest.tool.wasm

    if not force and _up_to_date(out, [manifest_path, *_sources(tool_dir), *_wit_files(wit)]):
        return BuildResult(out, out.stat().st_size, time.monotonic() - started, True)

    progress(f"building {manifest.id} {manifest.version} ({spec.language}) from {spec.source}")
    with _temporary_output(out) as tmp:
        if spec.language == "python":
            _componentize_py(tool_dir, source, wit, spec, tmp, progress)
        else:
            _componentize_js(tool_dir, source, wit, spec, tmp, progress)
        _check_component(tmp, spec)
    return BuildResult(out, out.stat().st_size, time.monotonic() - started, False)


def _existing(path: Path, manifest_path: Path, key: str) -> Path:
    if not path.exists():
        raise InvalidTool(
            f"{manifest_path}: {key} names {path}, which does not exist",
            data={"file": str(manifest_path), "key": key},
        )
    return path


def _sources(tool_dir: Path) -> Iterator[Path]:
    """Every file under ``tool_dir`` that could feed the build."""
    for root, dirs, files in os.walk(tool_dir):
        # Pruning in place keeps os.walk out of caches, dependencies and earlier outputs.
        dirs[:] = [d for d in dirs if d not in _NOT_SOURCES and not d.startswith(".")]
        for name in files:
            if not name.endswith((".wasm", ".pyc", ".tmp")):
                yield Path(root, name)


def _wit_files(wit: Path) -> Iterator[Path]:
    yield from [wit] if wit.is_file() else wit.rglob("*.wit")


def _up_to_date(out: Path, inputs: list[Path]) -> bool:
    try:
        built = out.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    # Strictly newer: an input saved in the same clock tick as the output is treated as
    # changed, trading a spare rebuild for never serving a stale component.
    return all(p.stat().st_mtime_ns < built for p in inputs)


@contextlib.contextmanager
def _temporary_output(out: Path) -> Iterator[Path]:
    """Yields a temporary path next to ``out``; renames it over ``out`` if the body succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file owner-only; a component is no secret, and the daemon or
        # a teammate's checkout may need to read it.
        tmp.chmod(0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _check_component(path: Path, spec: BuildSpec) -> None:
    with path.open("rb") as f:
        head = f.read(len(COMPONENT_PREAMBLE))
    if head != COMPONENT_PREAMBLE:
        raise BuildError(
            f"the {spec.language} toolchain reported success but did not write a "
            f"WebAssembly component (it starts with {head!r}); rebuild with --force, and "
            "if it persists, reinstall the toolchain",
        )


# --- Python ------------------------------------------------------------------------------


def _componentize_py(
    tool_dir: Path,
    source: Path,
    wit: Path,
    spec: BuildSpec,
    out: Path,
    progress: Callable[[str], None],
) -> None:
    if source.suffix != ".py":
        raise InvalidTool(
            f"{tool_dir / MANIFEST_NAME}: [build].source must be a .py module for a Python "
            f"tool (got {spec.source!r})",
            data={"file": str(tool_dir / MANIFEST_NAME), "key": "[build].source"},
        )
    exe = _find_componentize_py()
    argv = [str(exe), "-d", str(wit), "-w", spec.world, "componentize", source.stem]
    argv += ["-p", str(source.parent.resolve()), "-o", str(out)]
    _run(
        argv,
        cwd=tool_dir,
        what="componentize-py",
        hint=(
            f"that {spec.source} has no syntax error, defines `class Tool(exports.Tool)` with "
            f"`def run(self, input: str) -> str`, imports only the standard library, "
            f"`wit_world` and modules in {source.parent}, and that world {spec.world!r} "
            f"exists in {wit}"
        ),
        progress=progress,
    )


def _find_componentize_py() -> Path:
    # The interpreter's own scripts directory first: a venv need not be activated.
    scripts = Path(sys.executable).parent
    for name in ("componentize-py", "componentize-py.exe"):
        if (scripts / name).is_file():
            return scripts / name
    found = shutil.which("componentize-py")
    if found is None:
        raise BuildError(
            "componentize-py is not installed, and kamictl needs it to build Python tools; "
            f"run `{sys.executable} -m pip install componentize-py` (or "
            "`pip install componentize-py` in the environment that runs kamictl)",
        )
    return Path(found)


# --- JavaScript --------------------------------------------------------------------------


def _componentize_js(
    tool_dir: Path,
    source: Path,
    wit: Path,
    spec: BuildSpec,
    out: Path,
    progress: Callable[[str], None],
) -> None:
    if source.suffix not in (".js", ".mjs"):
        raise InvalidTool(
            f"{tool_dir / MANIFEST_NAME}: [build].source must be a .js or .mjs ES module "
            f"for a JavaScript tool (got {spec.source!r})",
            data={"file": str(tool_dir / MANIFEST_NAME), "key": "[build].source"},
        )
    node = _which("node")
    js = ensure_js_toolchain(progress)
    _run(
        [str(node), str(js / "componentize.mjs"), str(source), str(wit), spec.world, str(out)],
        cwd=tool_dir,
        what="componentize-js",
        hint=(
            f"that {spec.source} is an ES module without syntax errors that exports "
            f"`tool = {{ run(input) {{ ... }} }}`, imports only WIT interfaces of world "
            f"{spec.world!r} (like 'kami:tool/host@0.1.0') or relative modules, and fails "
            "by throwing a string or an object with a `payload` (a plain Error traps)"
        ),
        progress=progress,
    )


def ensure_js_toolchain(progress: Callable[[str], None] = lambda s: None) -> Path:
    """Installs the pinned componentize-js into ``toolchain_dir()/js`` unless it is there.

    Concurrent callers (parallel builds, test sessions) serialize on a lock file, so npm
    never runs twice into the same folder.

    Returns:
        The folder holding ``node_modules`` and the ``componentize.mjs`` driver.

    Raises:
        BuildError: npm or node is missing, or ``npm install`` failed.
    """
    package = json.loads((_HERE / "_js" / "package.json").read_text(encoding="utf-8"))
    pinned: str = package["dependencies"][_JS_PACKAGE]
    js = toolchain_dir() / "js"
    js.mkdir(parents=True, exist_ok=True)
    with (js / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version(js) != pinned:
            npm = _which("npm")
            shutil.copyfile(_HERE / "_js" / "package.json", js / "package.json")
            progress(f"installing {_JS_PACKAGE}@{pinned} into {js} (once; takes a minute)")
            _run(
                [str(npm), "install", "--prefix", str(js), "--no-audit", "--no-fund"],
                cwd=js,
                what="npm install",
                hint=(
                    f"that the npm registry is reachable (proxy, registry settings in "
                    f"~/.npmrc) and that {js} is writable; set KAMI_TOOLCHAIN to use "
                    "another folder"
                ),
                progress=progress,
            )
            if _installed_version(js) != pinned:
                raise BuildError(
                    f"npm install finished but {_JS_PACKAGE}@{pinned} is not in "
                    f"{js / 'node_modules'}; delete {js} and build again",
                )
        # The driver is copied next to node_modules because ES modules resolve bare
        # imports from their own location and ignore NODE_PATH.
        driver = (_HERE / "_js" / "componentize.mjs").read_bytes()
        target = js / "componentize.mjs"
        if not target.exists() or target.read_bytes() != driver:
            target.write_bytes(driver)
    return js


def _installed_version(js: Path) -> str | None:
    manifest = js / "node_modules" / _JS_PACKAGE / "package.json"
    try:
        version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def _which(program: str) -> Path:
    found = shutil.which(program)
    if found is None:
        raise BuildError(
            f"{program} is not on PATH, and kamictl needs Node.js (with npm) to build "
            "JavaScript tools; install Node.js 18 or newer from https://nodejs.org or your "
            "package manager",
        )
    return Path(found)


# --- Running toolchains ------------------------------------------------------------------


def _run(
    argv: list[str],
    *,
    cwd: Path,
    what: str,
    hint: str,
    progress: Callable[[str], None],
) -> None:
    """Runs a toolchain, streaming its output to ``progress``; raises BuildError on failure."""
    env = dict(os.environ)
    # componentize-py's errors come from Rust's anyhow, which appends a page of Rust stack
    # frames when RUST_BACKTRACE is set; they would push the author's error out of the tail.
    env["RUST_LIB_BACKTRACE"] = "0"
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        # One merged stream keeps the toolchain's messages in the order it wrote them.
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise BuildError(f"cannot run {what} ({argv[0]}): {exc}") from exc
    with proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                tail.append(line)
                progress(line)
    if proc.returncode != 0:
        output = "\n".join(f"  {line}" for line in tail) or "  (no output)"
        raise BuildError(
            f"{what} failed (exit status {proc.returncode}) in {cwd}; its last output:\n"
            f"{output}\nCheck {hint}.",
            data={"cwd": str(cwd), "toolchain": what, "output": list(tail)},
        )
