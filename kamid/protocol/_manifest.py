"""``tool.toml``: the manifest that is the source of truth for a tool.

Parsed with tomlkit into attrs classes by cattrs. Every error names the file, the key and
what was expected, so an author can fix it without reading this module.

Layout::

    [tool]
    id = "dev.kami.echo"          # reverse-DNS, lower case
    name = "echo"
    version = "0.1.0"             # semantic version
    description = "Echoes its input."
    wasm = "build/echo.wasm"      # relative to the manifest's directory

    [arguments.text]              # MCP arguments; or an inline [input_schema]
    type = "string"
    description = "What to echo"
    required = true

    [security]                    # capability *requests*; the operator grants them
    fs = "none"                   # "none" | "sandbox" | "read-only"
    env = []
    net = [{ host = "api.example.com", methods = ["GET"] }]
    max_memory_mb = 64
    max_fuel = 2_000_000_000
    timeout_ms = 5_000

    [[security.secrets]]          # injected by the daemon; the tool never sees the value
    name = "API_TOKEN"
    hosts = ["api.example.com"]
    header = "Authorization"
    format = "Bearer {secret:API_TOKEN}"

    [build]
    language = "python"           # "python" (componentize-py) | "javascript" (componentize-js)
    source = "app.py"
"""

from __future__ import annotations

import json
import re
import typing
from typing import TYPE_CHECKING, Any, Literal

import attrs
import cattrs
import tomlkit
import tomlkit.exceptions

from ._errors import InvalidTool
from ._netrules import parse_host_rule
from ._prompts import PromptSpec, check_prompt_names

# Imported at run time: cattrs resolves this annotation when it builds the classes.
from ._secrets import SecretRequest  # noqa: TC001

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "MANIFEST_NAME",
    "Argument",
    "BuildSpec",
    "Manifest",
    "NetRequest",
    "SecurityRequests",
    "ToolSection",
    "load_manifest",
    "parse_manifest",
]

MANIFEST_NAME = "tool.toml"

_ID_RE = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
_SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

JsonType = Literal["string", "number", "integer", "boolean", "object", "array"]


def _invalid(attr: attrs.Attribute[Any], message: str) -> ValueError:
    # "@key message": _describe() moves the key into the path the author sees.
    exc = ValueError(f"@{attr.name} {message}")
    exc.kami_validator = True  # type: ignore[attr-defined]
    return exc


def _matches(regex: re.Pattern[str], expected: str) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
        if not regex.match(value):
            raise _invalid(attr, f"must be {expected}")

    return check


def _positive(_inst: object, attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value <= 0:
        raise _invalid(attr, "must be a positive integer")


def _nonempty(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise _invalid(attr, "must not be empty")


@attrs.frozen(kw_only=True)
class ToolSection:
    id: str = attrs.field(validator=_matches(_ID_RE, 'a reverse-DNS id like "dev.example.tool"'))
    name: str = attrs.field(validator=_nonempty)
    version: str = attrs.field(validator=_matches(_SEMVER_RE, 'a semantic version like "1.2.3"'))
    description: str = attrs.field(validator=_nonempty)
    wasm: str = attrs.field(validator=_nonempty)


@attrs.frozen(kw_only=True)
class Argument:
    type: JsonType = "string"
    description: str = ""
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None


@attrs.frozen(kw_only=True)
class NetRequest:
    host: str = attrs.field(validator=_nonempty)

    @host.validator
    def _check_host(self, attr: attrs.Attribute[Any], value: str) -> None:
        try:
            parse_host_rule(value)
        except ValueError as exc:
            raise _invalid(attr, str(exc)) from None

    methods: tuple[str, ...] = attrs.field(default=("GET", "HEAD"))

    @methods.validator
    def _check_methods(self, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        bad = [m for m in value if m not in _METHODS]
        if bad:
            raise _invalid(attr, f"has unknown HTTP method(s) {bad}; use {sorted(_METHODS)}")


@attrs.frozen(kw_only=True)
class SecurityRequests:
    net: tuple[NetRequest, ...] = ()
    fs: Literal["none", "sandbox", "read-only"] = "none"
    env: tuple[str, ...] = ()
    max_memory_mb: int | None = attrs.field(default=None, validator=_positive)
    max_fuel: int | None = attrs.field(default=None, validator=_positive)
    timeout_ms: int | None = attrs.field(default=None, validator=_positive)
    #: ``[[security.secrets]]``: secrets the daemon injects into requests (docs/network.md).
    secrets: tuple[SecretRequest, ...] = attrs.field(default=())

    @secrets.validator
    def _check_secrets(self, attr: attrs.Attribute[Any], value: tuple[SecretRequest, ...]) -> None:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise _invalid(attr, f"declares a secret name twice ({sorted(names)})")

    def summary(self) -> list[str]:
        """Human-readable lines, one per requested capability (empty: asks for nothing)."""
        lines = [f"network: {r.host} ({', '.join(r.methods)})" for r in self.net]
        if self.fs != "none":
            lines.append(f"filesystem: {self.fs}")
        lines.extend(f"environment: {name}" for name in self.env)
        lines.extend(
            f"secret: {s.name} sent as {s.header} to {', '.join(s.hosts)}" for s in self.secrets
        )
        return lines


@attrs.frozen(kw_only=True)
class BuildSpec:
    language: Literal["python", "javascript"]
    source: str = attrs.field(validator=_nonempty)
    #: A WIT directory relative to the manifest; default: the bundled kami:tool package.
    wit: str | None = None
    world: str = "kami-tool"


@attrs.frozen(kw_only=True)
class Manifest:
    tool: ToolSection
    arguments: dict[str, Argument] = attrs.Factory(dict)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    security: SecurityRequests = attrs.Factory(SecurityRequests)
    build: BuildSpec | None = None
    #: ``[prompts.<name>]``: prompts served to MCP agents (kamid/protocol/_prompts.py).
    prompts: dict[str, PromptSpec] | None = attrs.field(default=None, validator=check_prompt_names)

    @property
    def id(self) -> str:
        return self.tool.id

    @property
    def version(self) -> str:
        return self.tool.version

    def mcp_input_schema(self) -> dict[str, Any]:
        """The JSON Schema (2020-12) of the tool's input; never empty or null."""
        if self.input_schema is not None:
            return self.input_schema
        properties: dict[str, Any] = {}
        for name, arg in self.arguments.items():
            prop: dict[str, Any] = {"type": arg.type}
            if arg.description:
                prop["description"] = arg.description
            if arg.default is not None:
                prop["default"] = arg.default
            if arg.enum is not None:
                prop["enum"] = arg.enum
            properties[name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        required = [n for n, a in self.arguments.items() if a.required]
        if required:
            schema["required"] = required
        return schema

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Rebuilds a manifest stored with :meth:`to_dict` (already validated once)."""
        return _converter.structure(data, cls)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the same shape as the TOML file."""
        out: dict[str, Any] = _converter.unstructure(self)
        return {k: v for k, v in out.items() if v is not None}


_converter = cattrs.Converter(forbid_extra_keys=True)


def _schema_hook(value: Any, _type: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is a string but not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError("must be a table (or a JSON object in a string)")
    if value.get("type", "object") != "object":
        raise ValueError('must describe an object: MCP tool input is always {"type": "object"}')
    return value


_converter.register_structure_hook(dict[str, Any] | None, _schema_hook)


_TYPE_WORDS = {int: "an integer", str: "a string", bool: "true or false", float: "a number"}


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "is required"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"has unknown key(s) {sorted(exc.extra_fields)}"
    args = typing.get_args(type_)
    if typing.get_origin(type_) is Literal:
        return "must be one of " + ", ".join(repr(a) for a in args)
    words = [_TYPE_WORDS[a] for a in (args or (type_,)) if a in _TYPE_WORDS]
    if words and isinstance(exc, (TypeError, ValueError)) and not _is_validator_error(exc):
        return "must be " + " or ".join(words)
    return str(exc)


def _is_validator_error(exc: BaseException) -> bool:
    return bool(getattr(exc, "kami_validator", False))


def _lookup(raw: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return _MISSING
    return raw


_MISSING = object()


def _describe(raw: dict[str, Any], line: str) -> str:
    """Turns cattrs' ``"msg @ $.security.max_memory_mb"`` into an author-facing sentence."""
    message, _, where = line.rpartition(" @ ")
    parts = [p.strip("'\"") for p in re.split(r"\.|\[|\]", where.removeprefix("$")) if p]
    # A validator on an attrs class reports at the class; its message starts with the key.
    if message.startswith("@") and " " in message:
        key, message = message[1:].split(" ", 1)
        parts.append(key)
    if not parts:
        return message
    head, rest = parts[0], parts[1:]
    key = f"[{head}]" + "".join(f".{p}" for p in rest) if rest else f"[{head}]"
    if head not in _TABLES:
        key = ".".join(parts)
    value = _lookup(raw, parts)
    quiet = value is _MISSING or message == "is required" or message.startswith("has unknown")
    got = "" if quiet else f" (got {value!r})"
    return f"{key} {message}{got}"


_TABLES = frozenset(
    {"tool", "arguments", "security", "build", "input_schema", "output_schema", "prompts"}
)


def parse_manifest(text: str, *, source: str = MANIFEST_NAME) -> Manifest:
    """Parses manifest text.

    Raises:
        InvalidTool: the text is not TOML or does not describe a valid tool; the message
            names ``source``, each offending key and what it expects.
    """
    try:
        raw = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.ParseError as exc:
        raise InvalidTool(f"{source}: not valid TOML: {exc}", data={"file": source}) from exc
    if "tool" not in raw:
        raise InvalidTool(
            f"{source}: missing [tool] table; it needs id, name, version, description and wasm",
            data={"file": source, "key": "tool"},
        )
    try:
        manifest = _converter.structure(raw, Manifest)
    except cattrs.BaseValidationError as exc:
        problems = [
            _describe(raw, line)
            for line in cattrs.transform_error(exc, format_exception=_format_exception)
        ]
        raise InvalidTool(
            f"{source}: " + "; ".join(problems), data={"file": source, "errors": problems}
        ) from exc
    if manifest.input_schema is not None and manifest.arguments:
        raise InvalidTool(
            f"{source}: give either [arguments.*] or [input_schema], not both",
            data={"file": source, "key": "input_schema"},
        )
    return manifest


def load_manifest(tool_dir: Path) -> Manifest:
    """Reads ``tool_dir/tool.toml``.

    Raises:
        InvalidTool: the file is missing, unreadable or invalid.
    """
    path = tool_dir / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidTool(
            f"{path}: no {MANIFEST_NAME} here; a tool directory needs one "
            "(see docs/tool-authors.md)",
            data={"file": str(path)},
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidTool(f"{path}: cannot read: {exc}", data={"file": str(path)}) from exc
    return parse_manifest(text, source=str(path))
