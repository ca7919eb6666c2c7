"""The wire contract: import purity, framing, errors, the method table and its docs."""

from __future__ import annotations

import ast
import importlib

import pytest

import kamid.protocol as p
from tests.conftest import REPO, modules_loaded


def test_protocol_imports_no_heavy_modules() -> None:
    setup = "import kamid.protocol, kamictl.client, kamictl.cli"
    assert modules_loaded(setup, ["trio", "wasmtime", "apsw", "rich", "httpx"]) == []


def test_the_client_path_imports_only_the_modules_it_uses() -> None:
    # kamictl exec is a short-lived process: attrs, every message type, the manifest parser,
    # cattrs and tomlkit would more than double its start-up time.
    unused = ["attrs", "cattrs", "tomlkit", "kamid.protocol._messages", "kamid.protocol._manifest"]
    assert modules_loaded("import kamictl.cli, kamictl.client", unused) == []


def test_lazy_exports_match_the_modules_and_the_type_checking_imports() -> None:
    tree = ast.parse((REPO / "kamid" / "protocol" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If))  # if TYPE_CHECKING:
    seen: dict[str, set[str]] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        if node.module is None:  # from . import _mcp as mcp
            continue
        names = {alias.name for alias in node.names}
        if names == {"*"}:
            names = set(importlib.import_module(f"kamid.protocol.{node.module}").__all__)
        seen.setdefault(node.module, set()).update(names)
    assert {module: set(names) for module, names in p._EXPORTS.items()} == seen
    assert sorted(p.__all__) == sorted({"PROTOCOL_VERSION", "mcp", *p._MODULE_OF})
    assert len(p.__all__) == len(set(p.__all__))
    for name in p.__all__:
        assert getattr(p, name) is not None
    assert p.mcp is importlib.import_module("kamid.protocol._mcp")
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr(p, "Nope")  # noqa: B009


def test_line_buffer_splits_and_joins() -> None:
    buf = p.LineBuffer(max_frame=100)
    assert buf.feed(b'{"a":') == []
    assert buf.feed(b'1}\n\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert buf.pending == 4
    assert buf.feed(b":3}\n") == [b'{"c":3}']


def test_line_buffer_refuses_oversized_frames_early() -> None:
    buf = p.LineBuffer(max_frame=10)
    with pytest.raises(p.FrameTooLarge) as info:
        buf.feed(b"x" * 11)  # no newline yet: refused before the line ends
    assert info.value.data == {"limit": "max_frame_bytes", "value": 10}
    with pytest.raises(p.FrameTooLarge):
        p.LineBuffer(max_frame=10).feed(b"y" * 20 + b"\n")


def test_encode_decode_roundtrip() -> None:
    message = p.make_request(1, "tools.exec", {"tool": "x", "input": "línea\nnueva"})
    frame = p.encode_frame(message)
    assert frame.count(b"\n") == 1
    assert p.decode_frame(frame.strip()) == message
    with pytest.raises(p.ParseError, match="not valid JSON"):
        p.decode_frame(b"{nope")


@pytest.mark.parametrize(
    "cls", [p.NotFound, p.LimitExceeded, p.ToolFailed, p.InvalidTool, p.PolicyDenied, p.Busy]
)
def test_errors_roundtrip_to_the_same_class(cls: type[p.KamiError]) -> None:
    exc = cls("what went wrong; what to do", data={"limit": "fuel", "value": 3})
    back = p.error_from_wire(p.error_to_wire(exc))
    assert type(back) is cls
    assert back.message == exc.message
    assert back.data == exc.data


def test_unknown_error_code_keeps_code_and_message() -> None:
    back = p.error_from_wire({"code": -31999, "message": "from the future"})
    assert type(back) is p.KamiError
    assert back.code == -31999
    assert back.message == "from the future"


def test_every_method_and_error_code_is_documented() -> None:
    doc = (REPO / "docs" / "protocol.md").read_text()
    for name in p.METHODS:
        assert f"`{name}`" in doc, f"{name} missing from docs/protocol.md"
    for cls in p.KamiError.__subclasses__():
        assert f"| {cls.code} | {cls.kind} |" in doc, f"{cls.__name__} missing from the docs"


def test_params_are_validated_with_paths() -> None:
    with pytest.raises(p.InvalidParams) as info:
        p.structure_params({"tool": "x"}, p.ExecToolParams, method="tools.exec")
    assert "tools.exec.input" in info.value.message
    with pytest.raises(p.InvalidParams, match="extra fields"):
        p.structure_params({"tool": "x", "input": 1, "bogus": 2}, p.ExecToolParams, method="m")


MANIFEST = """[tool]
id = "dev.kami.echo"
name = "echo"
version = "1.2.3-rc.1+build.5"
description = "Echoes."
wasm = "build/echo.wasm"

[arguments.text]
type = "string"
description = "What to echo"
required = true

[arguments.times]
type = "integer"
default = 1

[security]
env = ["TZ"]
net = [{ host = "api.example.com", methods = ["GET", "POST"] }]
max_memory_mb = 32
"""


def test_manifest_to_mcp_schema() -> None:
    m = p.parse_manifest(MANIFEST)
    assert m.id == "dev.kami.echo"
    assert m.mcp_input_schema() == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "What to echo"},
            "times": {"type": "integer", "default": 1},
        },
        "required": ["text"],
    }
    assert m.security.summary() == [
        "network: api.example.com (GET, POST)",
        "environment: TZ",
    ]
    assert p.Manifest.from_dict(m.to_dict()) == m


def test_manifest_inline_schema_as_table_or_json() -> None:
    head = MANIFEST.split("[arguments.text]")[0]
    as_table = head + '[input_schema]\ntype = "object"\nproperties.q.type = "string"\n'
    as_json = 'input_schema = \'{"type": "object", "properties": {"q": {"type": "string"}}}\'\n'
    expected = {"type": "object", "properties": {"q": {"type": "string"}}}
    assert p.parse_manifest(as_table).mcp_input_schema() == expected
    assert p.parse_manifest(as_json + head).mcp_input_schema() == expected
    with pytest.raises(p.InvalidTool, match="must describe an object"):
        p.parse_manifest('input_schema = \'{"type": "string"}\'\n' + head)
    with pytest.raises(p.InvalidTool, match="not both"):
        p.parse_manifest(as_json + MANIFEST)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("max_memory_mb = 32", "max_memory_mb = 0"),
            "[security].max_memory_mb must be a positive",
        ),
        (('methods = ["GET", "POST"]', 'methods = ["YEET"]'), "unknown HTTP method"),
        (("[security]", "[security]\nfs = 'everything'"), "[security].fs must be one of"),
        (('type = "integer"', 'type = "int"'), "[arguments].times.type must be one of"),
        (("[security]", "[surprise]\nx = 1\n[security]"), "unknown key(s) ['surprise']"),
        (('name = "echo"\n', ""), "[tool].name is required"),
    ],
)
def test_manifest_errors_name_key_and_expectation(change: tuple[str, str], message: str) -> None:
    with pytest.raises(p.InvalidTool) as info:
        p.parse_manifest(MANIFEST.replace(*change), source="x/tool.toml")
    assert info.value.message.startswith("x/tool.toml: ")
    assert message in info.value.message


def test_paths_respect_kami_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAMI_HOME", "/tmp/kh")
    paths = p.Paths.from_env()
    assert str(paths.socket) == "/tmp/kh/run/kamid.sock"
    assert str(paths.database).startswith("/tmp/kh/")
    monkeypatch.delenv("KAMI_HOME")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert str(p.Paths.from_env().socket) == "/run/user/1000/kami/kamid.sock"
