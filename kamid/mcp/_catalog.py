"""What agents see of the installed tools: MCP names, schemas, annotations, prompts.

Built from the store's records, whole, whenever something changes; sessions read it and
filter it by their profile. Names are derived from the tool id and are unique across the
daemon, so an agent's view of a tool does not depend on which other tools it sees.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import Grants, Manifest, PromptSpec
from kamid.protocol import mcp as wire

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kamid.store import ToolRecord

__all__ = ["Catalog", "ToolEntry", "build_catalog", "mcp_names"]

log = logging.getLogger("kamid.mcp")

#: Clients such as Claude accept ``[A-Za-z0-9_-]{1,64}`` as tool names; stay inside it.
MAX_NAME = 64


def mcp_names(ids: Iterable[str]) -> dict[str, str]:
    """Tool id -> MCP tool name: the id's last segment when no other tool ends the same,
    else the whole id with dots as underscores (ids cannot contain ``_``, so these never
    collide with each other or with a short name)."""
    ids = sorted(set(ids))
    last = {tool_id: tool_id.rsplit(".", 1)[-1] for tool_id in ids}
    counts: dict[str, int] = {}
    for short in last.values():
        counts[short] = counts.get(short, 0) + 1
    names: dict[str, str] = {}
    for tool_id in ids:
        name = last[tool_id] if counts[last[tool_id]] == 1 else tool_id.replace(".", "_")
        if len(name) > MAX_NAME:
            digest = hashlib.sha256(tool_id.encode()).hexdigest()[:8]
            name = f"{name[: MAX_NAME - 9]}_{digest}"
        names[tool_id] = name
    return names


def tool_annotations(grants: Grants, title: str) -> dict[str, Any]:
    """MCP tool annotations from what the operator granted (hints, never guarantees).

    A tool with no network and nothing writable (no sandbox directory, no read-write
    path, no key-value store) cannot change anything outside its call: read-only, closed
    world. One that writes only to its own private storage is not destructive.
    """
    writable_paths = any(p.mode == "rw" for p in grants.paths)
    writes = grants.fs == "sandbox" or grants.kv or writable_paths
    hints: dict[str, Any] = {
        "title": title,
        "readOnlyHint": not grants.net and not writes,
        "openWorldHint": bool(grants.net),
    }
    if writes and not writable_paths:
        hints["destructiveHint"] = False
    return hints


@attrs.frozen(kw_only=True)
class ToolEntry:
    name: str
    id: str
    version: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any]
    manifest: dict[str, Any]
    prompts: dict[str, PromptSpec]
    has_readme: bool
    #: A compiled jsonschema validator for the input (None if the schema is unusable).
    validator: Any = attrs.field(eq=False, repr=False)
    output_validator: Any = attrs.field(eq=False, repr=False)
    #: Why the input schema cannot be used, if it cannot.
    schema_problem: str | None = None

    def describe(self, version: str) -> dict[str, Any]:
        """The ``tools/list`` entry, with only the fields ``version`` knows."""
        tool: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        }
        if wire.version_at_least(version, "2025-03-26"):
            hints = dict(self.annotations)
            if not wire.version_at_least(version, "2025-06-18"):
                hints.pop("title", None)
            tool["annotations"] = hints
        if wire.version_at_least(version, "2025-06-18"):
            tool["title"] = self.title
            if self.output_schema is not None:
                tool["outputSchema"] = self.output_schema
            tool["_meta"] = {"dev.kami/tool": {"id": self.id, "version": self.version}}
        return tool

    def check_arguments(self, arguments: dict[str, Any]) -> list[str]:
        """What is wrong with ``arguments`` for this tool's input schema (empty: nothing)."""
        if self.validator is None:
            return [f"the tool's input schema cannot be used ({self.schema_problem})"]
        return _problems(self.validator, arguments, "arguments")

    def check_output(self, output: Any) -> list[str]:
        if self.output_validator is None:
            return []
        return _problems(self.output_validator, output, "output")


def _problems(validator: Any, value: Any, root: str) -> list[str]:
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    problems = []
    for error in errors[:5]:
        where = root + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
        )
        problems.append(f"{where}: {error.message}")
    if len(errors) > 5:
        problems.append(f"... and {len(errors) - 5} more")
    return problems


def _compile(schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    if schema is None:
        return None, None
    from jsonschema import exceptions, validators  # type: ignore[import-untyped]
    from referencing import Registry

    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        return None, f"{exc.message} at {'/'.join(map(str, exc.absolute_path)) or 'the root'}"
    # An empty registry: a $ref never fetches anything over the network.
    return cls(schema, registry=Registry()), None


def _entry(record: ToolRecord, name: str, has_readme: bool) -> ToolEntry:
    manifest = Manifest.from_dict(record.manifest)
    input_schema = manifest.mcp_input_schema()
    validator, problem = _compile(input_schema)
    if problem:
        log.warning("tool %s: its input schema is invalid: %s", record.id, problem)
    output_validator, out_problem = _compile(manifest.output_schema)
    if out_problem:
        log.warning("tool %s: its output schema is invalid: %s", record.id, out_problem)
    title = manifest.tool.name
    return ToolEntry(
        name=name,
        id=record.id,
        version=record.version,
        title=title,
        description=record.description,
        input_schema=input_schema,
        output_schema=manifest.output_schema if out_problem is None else None,
        annotations=tool_annotations(Grants.from_dict(record.grants), title),
        manifest=record.manifest,
        prompts=dict(manifest.prompts or {}),
        has_readme=has_readme,
        validator=validator,
        output_validator=output_validator,
        schema_problem=problem,
    )


@attrs.frozen
class Catalog:
    """Every installed tool as agents see it, by MCP name and by id."""

    entries: tuple[ToolEntry, ...] = ()
    by_name: dict[str, ToolEntry] = attrs.Factory(dict)
    by_id: dict[str, ToolEntry] = attrs.Factory(dict)


def build_catalog(records: list[ToolRecord], readme_ids: set[str]) -> Catalog:
    """The catalog of ``records``; a record that cannot be read is left out and logged."""
    names = mcp_names(r.id for r in records)
    entries = []
    for record in records:
        try:
            entries.append(_entry(record, names[record.id], record.id in readme_ids))
        except Exception:
            log.exception("tool %s cannot be offered over MCP", record.id)
    entries.sort(key=lambda e: e.name)
    return Catalog(tuple(entries), {e.name: e for e in entries}, {e.id: e for e in entries})
