"""``kamictl build`` on the real examples: components come out, skip logic, errors, running.

The examples are built once (see ``tests/_examples.py``). Tests that need another build
either break the source so the toolchain fails early, or replace the toolchain with a fake
that writes a component preamble: the skip logic is about timestamps, not compilers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from wasmtime import component as wc

from kamictl import build
from kamid.protocol import COMPONENT_PREAMBLE, InvalidTool, load_manifest
from tests import _examples

pytestmark = pytest.mark.examples

TOOL_IDS = ["dev.kami.echo", "dev.kami.hello"]


def _copy_tool(src: Path, dst: Path) -> Path:
    """A private copy of a built tool: sources older than the bundled WIT, the component
    just newer than it.

    Times are anchored to the WIT (an input the test cannot backdate, since it lives in the
    checkout) rather than to the clock, so the outcome does not depend on how long ago the
    repository was cloned; a fresh clone's WIT can be seconds old.
    """
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.tmp"))
    for path in dst.rglob("*"):
        _set_age(path, 200)
    _set_age(_wasm(dst), _WIT_OFFSET_S)
    return dst


#: The component sits this far after the WIT's mtime; a touched input goes after that.
_WIT_OFFSET_S = -0.01


def _wasm(tool_dir: Path) -> Path:
    return tool_dir / load_manifest(tool_dir).tool.wasm


def _wit_mtime() -> float:
    return max(p.stat().st_mtime for p in build.bundled_wit_dir().rglob("*.wit"))


def _set_age(path: Path, seconds: float) -> None:
    """Dates ``path`` ``seconds`` before the bundled WIT's mtime (negative: after it).

    Everything stays in the past, so a rebuild "now" is newest.
    """
    mtime = _wit_mtime() - seconds
    assert mtime < time.time(), "the WIT was modified a moment ago; rerun"
    os.utime(path, (mtime, mtime))


@pytest.fixture
def fake_toolchain(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replaces both toolchains with one that writes a bare component preamble."""
    calls: list[Path] = []

    def fake(tool_dir: Path, source: Path, wit: Path, spec: Any, out: Path, progress: Any) -> None:
        calls.append(tool_dir)
        out.write_bytes(COMPONENT_PREAMBLE)

    monkeypatch.setattr(build, "_componentize_py", fake)
    monkeypatch.setattr(build, "_componentize_js", fake)
    return calls


# --- Outputs ---------------------------------------------------------------------------


def test_bundled_wit_is_the_repo_wit() -> None:
    wit = build.bundled_wit_dir()
    assert (wit / "kami-tool.wit").is_file()
    assert wit.resolve() == (_examples.REPO / "wit").resolve()


def test_build_module_stays_thin() -> None:
    code = (
        "import sys, kamictl.build; "
        "print(sorted({'wasmtime', 'apsw', 'trio', 'httpx', 'rich'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("tool_id", TOOL_IDS)
def test_examples_build_to_components(built_examples: dict[str, Path], tool_id: str) -> None:
    wasm = _wasm(built_examples[tool_id])
    with wasm.open("rb") as f:
        # \0asm, version 0x0d 0x00, layer 0x01 0x00: a component, not a core module.
        assert f.read(8) == b"\0asm\x0d\x00\x01\x00"
    assert wasm.stat().st_size > 1_000_000
    assert wasm.stat().st_mode & 0o777 == 0o644
    assert not list(wasm.parent.glob("*.tmp")), "a temporary output was left behind"


@pytest.mark.parametrize("tool_id", TOOL_IDS)
def test_second_build_is_skipped(built_examples: dict[str, Path], tool_id: str) -> None:
    before = _wasm(built_examples[tool_id]).stat().st_mtime_ns
    result = build.build_tool(built_examples[tool_id])
    assert result.skipped
    assert result.wasm == _wasm(built_examples[tool_id])
    assert result.size == result.wasm.stat().st_size
    assert result.wasm.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("tool_id", "touched"),
    [
        ("dev.kami.echo", "app.py"),
        ("dev.kami.echo", "tool.toml"),
        ("dev.kami.hello", "app.js"),
        ("dev.kami.hello", "lib/helper.js"),
    ],
)
def test_a_newer_input_rebuilds(
    built_examples: dict[str, Path],
    tmp_path: Path,
    fake_toolchain: list[Path],
    tool_id: str,
    touched: str,
) -> None:
    tool = _copy_tool(built_examples[tool_id], tmp_path / "tool")
    assert build.build_tool(tool).skipped
    (tool / touched).parent.mkdir(exist_ok=True)
    (tool / touched).touch()
    _set_age(tool / touched, 2 * _WIT_OFFSET_S)

    result = build.build_tool(tool)

    assert not result.skipped
    assert fake_toolchain == [tool]
    assert result.size == len(COMPONENT_PREAMBLE)
    assert build.build_tool(tool).skipped, "the rebuilt output is newer than every input"


def test_caches_and_outputs_do_not_count_as_inputs(
    built_examples: dict[str, Path], tmp_path: Path, fake_toolchain: list[Path]
) -> None:
    tool = _copy_tool(built_examples["dev.kami.echo"], tmp_path / "tool")
    for name in ["__pycache__/app.cpython-314.pyc", "node_modules/x/index.js", ".git/HEAD"]:
        (tool / name).parent.mkdir(parents=True, exist_ok=True)
        (tool / name).write_text("x")
        _set_age(tool / name, 2 * _WIT_OFFSET_S)
    assert build.build_tool(tool).skipped
    assert fake_toolchain == []


def test_force_rebuilds(
    built_examples: dict[str, Path], tmp_path: Path, fake_toolchain: list[Path]
) -> None:
    tool = _copy_tool(built_examples["dev.kami.hello"], tmp_path / "tool")
    assert not build.build_tool(tool, force=True).skipped
    assert fake_toolchain == [tool]


def test_a_newer_custom_wit_rebuilds(
    built_examples: dict[str, Path], tmp_path: Path, fake_toolchain: list[Path]
) -> None:
    tool = _copy_tool(built_examples["dev.kami.echo"], tmp_path / "tool")
    shutil.copytree(build.bundled_wit_dir(), tmp_path / "wit")
    manifest = tool / "tool.toml"
    manifest.write_text(manifest.read_text() + 'wit = "../wit"\n')
    assert not build.build_tool(tool).skipped  # tool.toml changed
    assert build.build_tool(tool).skipped
    _set_age(manifest, 200)
    _set_age(_wasm(tool), 100)
    _set_age(tmp_path / "wit" / "kami-tool.wit", 50)
    assert not build.build_tool(tool).skipped
    assert fake_toolchain == [tool, tool]


# --- Errors ----------------------------------------------------------------------------


def test_no_build_table_says_what_to_add(tmp_path: Path) -> None:
    manifest = (_examples.EXAMPLES / "echo" / "tool.toml").read_text()
    (tmp_path / "tool.toml").write_text(manifest.split("[build]")[0])
    with pytest.raises(InvalidTool) as info:
        build.build_tool(tmp_path)
    assert "no [build] table" in info.value.message
    assert '[build]\nlanguage = "python"' in info.value.message
    assert info.value.data["key"] == "build"


def test_missing_source_is_named(tmp_path: Path) -> None:
    shutil.copy(_examples.EXAMPLES / "echo" / "tool.toml", tmp_path)
    with pytest.raises(InvalidTool, match=r"\[build\]\.source names .*app\.py"):
        build.build_tool(tmp_path)


def test_python_syntax_error_shows_componentize_py_complaint(
    built_examples: dict[str, Path], tmp_path: Path
) -> None:
    tool = _copy_tool(built_examples["dev.kami.echo"], tmp_path / "tool")
    old = _wasm(tool).read_bytes()
    app = tool / "app.py"
    app.write_text(app.read_text().replace("class Tool(exports.Tool):", "class Tool(exports.Tool)"))

    with pytest.raises(InvalidTool) as info:
        build.build_tool(tool)

    assert isinstance(info.value, build.BuildError)
    message = info.value.message
    assert "componentize-py failed" in message
    assert "SyntaxError" in message
    assert "app.py" in message
    assert "Stack backtrace" not in message, "Rust frames crowd out the author's error"
    assert _wasm(tool).read_bytes() == old, "a failed build must keep the previous output"
    assert not list(_wasm(tool).parent.glob("*.tmp"))


def test_missing_componentize_py_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "tool"
    shutil.copytree(_examples.EXAMPLES / "echo", tool, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setattr("sys.executable", str(tmp_path / "nowhere" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(build.BuildError, match="pip install componentize-py"):
        build.build_tool(tool)


def test_missing_npm_says_to_install_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAMI_TOOLCHAIN", str(tmp_path / "toolchain"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(build.BuildError, match=r"npm is not on PATH.*install Node\.js"):
        build.ensure_js_toolchain()


def test_failed_npm_install_shows_npm_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toolchain = tmp_path / "toolchain"
    monkeypatch.setenv("KAMI_TOOLCHAIN", str(toolchain))
    # A registry nobody listens on fails in milliseconds, without retries or a real cache.
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    lines: list[str] = []
    with pytest.raises(build.BuildError) as info:
        build.ensure_js_toolchain(lines.append)
    assert "npm install failed" in info.value.message
    assert "ECONNREFUSED" in info.value.message
    assert "npm registry is reachable" in info.value.message
    assert lines[0].startswith("installing @bytecodealliance/componentize-js@")


def test_npm_toolchain_is_reused(
    built_examples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAMI_TOOLCHAIN", str(_examples.toolchain()))

    def no_npm(argv: list[str], **kwargs: Any) -> None:
        raise AssertionError(f"the installed toolchain should be reused, but ran {argv}")

    monkeypatch.setattr(build, "_run", no_npm)
    lines: list[str] = []
    js = build.ensure_js_toolchain(lines.append)
    assert js == _examples.toolchain() / "js"
    assert (js / "componentize.mjs").read_bytes() == (
        Path(build.__file__).parent / "_js" / "componentize.mjs"
    ).read_bytes()
    installed = js / "node_modules" / "@bytecodealliance" / "componentize-js" / "package.json"
    pinned = json.loads((Path(build.__file__).parent / "_js" / "package.json").read_text())
    assert (
        json.loads(installed.read_text())["version"]
        == (pinned["dependencies"]["@bytecodealliance/componentize-js"])
    )
    assert lines == []


# --- Running the components ------------------------------------------------------------

# The kami:tool imports besides host, with their functions; none is called by the examples.
_UNUSED_HOST_API = {
    "kami:tool/http@0.1.0": ["fetch"],
    "kami:tool/kv@0.1.0": ["get", "set", "delete", "list-keys"],
    "kami:tool/invoke@0.1.0": ["call"],
}

_CASES: dict[str, list[tuple[Any, str, Any]]] = {
    "dev.kami.echo": [
        ({"text": "ab", "repeat": 3}, "ok", {"echo": "ababab", "length": 6}),
        ({"text": "hi"}, "ok", {"echo": "hi", "length": 2}),
        ({}, "err", 'missing "text"'),
        ({"text": "hi", "repeat": 0}, "err", '"repeat" must be an integer from 1 to 100'),
        ("not json", "err", "input is not valid JSON"),
    ],
    "dev.kami.hello": [
        ({"name": "Ada"}, "ok", {"greeting": "Hello, Ada!"}),
        ({}, "err", 'missing "name"'),
        ([1], "err", "input must be a JSON object"),
        ("not json", "err", "input is not valid JSON"),
    ],
}


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


@pytest.fixture(scope="module")
def logs() -> list[tuple[str, str]]:
    return []


@pytest.fixture(scope="module")
def linker(engine: wasmtime.Engine, logs: list[tuple[str, str]]) -> wc.Linker:
    linker = wc.Linker(engine)
    linker.add_wasip2()

    def log(_store: Any, level: Any, message: str) -> None:
        logs.append((str(level), message))

    def unused(_store: Any, *args: Any) -> Any:
        raise AssertionError("the examples do not call http, kv or invoke")

    with linker.root() as root:
        with root.add_instance("kami:tool/host@0.1.0") as host:
            host.add_func("log", log)
        for name, funcs in _UNUSED_HOST_API.items():
            with root.add_instance(name) as iface:
                for func in funcs:
                    iface.add_func(func, unused)
    return linker


@pytest.mark.parametrize("tool_id", TOOL_IDS)
def test_component_runs(
    built_examples: dict[str, Path],
    engine: wasmtime.Engine,
    linker: wc.Linker,
    logs: list[tuple[str, str]],
    tool_id: str,
) -> None:
    component = wc.Component.from_file(engine, str(_wasm(built_examples[tool_id])))
    imports = set(component.type.imports(engine))
    assert {"kami:tool/host@0.1.0", *_UNUSED_HOST_API} <= imports
    others = {i for i in imports if not i.startswith("kami:tool/")}
    assert all(i.startswith("wasi:") for i in others), others
    # wasi:http would bypass the daemon's network policy; kamid does not link it.
    assert not any(i.startswith("wasi:http/") for i in others), others
    assert set(component.type.exports(engine)) >= {"kami:tool/tool@0.1.0"}

    for value, tag, expected in _CASES[tool_id]:
        logs.clear()
        store = wasmtime.Store(engine)
        store.set_wasi(wasmtime.WasiConfig())
        instance = linker.instantiate(store, component)
        tool = instance.get_export_index(store, "kami:tool/tool@0.1.0")
        run_index = instance.get_export_index(store, "run", tool)
        assert run_index is not None
        run = instance.get_func(store, run_index)
        assert run is not None
        text = value if isinstance(value, str) else json.dumps(value)
        result = run(store, text)
        run.post_return(store)
        assert result.tag == tag, (text, result)
        if tag == "ok":
            assert json.loads(result.payload) == expected
            assert [level for level, _ in logs] == ["info"]
        else:
            assert expected in result.payload
