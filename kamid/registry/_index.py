"""A registry index: parsing, checking, searching and choosing versions.

The format is ``registry/schema.json`` (JSON Schema 2020-12) and docs/supply-chain.md.
Structure is checked when the index is read, so a malformed index is refused as a whole
with the path of the first problem; whether an entry's manifest really describes the tool
and version it is listed under is checked when that entry is used
(:meth:`VersionEntry.checked_manifest`), so one bad entry does not hide the others
from search.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import attrs

from kamid.protocol import (
    IntegrityError,
    KamiError,
    Manifest,
    ToolSignature,
    Version,
    VersionRange,
    parse_manifest,
)

__all__ = ["Index", "ToolEntry", "VersionEntry", "parse_index"]

INDEX_FORMAT = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")


@attrs.frozen(kw_only=True)
class VersionEntry:
    tool_id: str
    version: Version
    #: Absolute URL of the ``.kami`` artifact (relative ones are resolved against the index).
    artifact: str
    sha256: str
    size: int
    component_sha256: str
    assets_sha256: str | None
    #: tool.toml, as signed.
    manifest_text: str
    signature: ToolSignature | None
    yanked: bool = False
    published_at: str | None = None
    registry: str = ""

    def checked_manifest(self) -> Manifest:
        """The entry's manifest, after checking it is the tool and version it is listed as.

        Raises:
            IntegrityError: it names another tool or version, or the signature claims
                another tool, version or component than the entry.
            InvalidTool: it is not a valid manifest.
        """
        where = f"registry {self.registry}: {self.tool_id} {self.version}"
        manifest = parse_manifest(self.manifest_text, source=f"{where}: manifest")
        if manifest.id != self.tool_id:
            raise IntegrityError(
                f"{where}: the entry's manifest is for {manifest.id}, not {self.tool_id}; "
                "the index is wrong or tampered with, so nothing was installed; tell the "
                "registry's maintainer",
                data={"tool": self.tool_id, "manifest_id": manifest.id},
            )
        if Version.parse(manifest.version) != self.version or manifest.version != str(self.version):
            raise IntegrityError(
                f"{where}: the entry's manifest says version {manifest.version}; an index "
                "must list each version under its own number (nothing was installed)",
                data={"tool": self.tool_id, "manifest_version": manifest.version},
            )
        sig = self.signature
        if sig is not None and (
            sig.content.tool != self.tool_id
            or sig.content.version != manifest.version
            or sig.content.component_sha256 != self.component_sha256
            or sig.content.assets_sha256 != self.assets_sha256
        ):
            raise IntegrityError(
                f"{where}: the entry's signature was made for {sig.content.tool} "
                f"{sig.content.version} (component {sig.content.component_sha256[:12]}), not "
                "for this entry; nothing was installed",
                data={"tool": self.tool_id},
            )
        return manifest


@attrs.frozen(kw_only=True)
class ToolEntry:
    id: str
    name: str
    description: str
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    homepage: str | None = None
    versions: dict[str, VersionEntry] = attrs.Factory(dict)

    def candidates(self) -> dict[Version, VersionEntry]:
        """Versions that may be chosen (not yanked)."""
        return {e.version: e for e in self.versions.values() if not e.yanked}

    def newest(self) -> VersionEntry | None:
        """The newest release; a pre-release only when there is no release at all."""
        found = self.candidates()
        releases = [v for v in found if not v.prerelease]
        best = max(releases or found, default=None)
        return None if best is None else found[best]

    def best(self, wanted: VersionRange) -> VersionEntry | None:
        found = self.candidates()
        best = wanted.best(found)
        return None if best is None else found[best]

    def matches(self, words: list[str], category: str | None, tag: str | None) -> bool:
        if category is not None and category.lower() not in {c.lower() for c in self.categories}:
            return False
        if tag is not None and tag.lower() not in {t.lower() for t in self.tags}:
            return False
        hay = " ".join([self.id, self.name, self.description, *self.tags, *self.categories])
        return all(word in hay.lower() for word in words)


@attrs.frozen(kw_only=True)
class Index:
    registry: str
    url: str
    name: str
    tools: dict[str, ToolEntry]


class _Bad(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
    if key not in obj:
        raise _Bad(f"{path}.{key}", "is required")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _Bad(f"{path}.{key}", f"must be {_WORDS.get(names, names)} (got {value!r:.80})")
    return value


_WORDS = {"str": "a string", "int": "an integer", "dict": "an object", "list": "an array"}


def _strings(obj: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{path}.{key}", "must be an array of strings")
    return tuple(value)


def _hex(obj: dict[str, Any], key: str, path: str, *, optional: bool = False) -> str | None:
    if optional and obj.get(key) is None:
        return None
    value = _get(obj, key, str, path)
    if not _HEX64.match(value):
        raise _Bad(f"{path}.{key}", f"must be 64 lower-case hex digits (got {value!r:.80})")
    return str(value)


def _version(
    tool_id: str, text: str, raw: Any, *, base_url: str, registry: str, path: str
) -> VersionEntry:
    if not isinstance(raw, dict):
        raise _Bad(path, "must be an object")
    try:
        version = Version.parse(text)
    except ValueError as exc:
        raise _Bad(path, str(exc)) from exc
    artifact = _get(raw, "artifact", str, path)
    url = urllib.parse.urljoin(base_url, artifact)
    scheme = urllib.parse.urlsplit(url).scheme
    index_scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("http", "https", "file"):
        raise _Bad(f"{path}.artifact", f"must be an http(s) or file URL (got {artifact!r:.80})")
    if scheme == "file" and index_scheme != "file":
        # A remote index must never make the daemon read its own files.
        raise _Bad(f"{path}.artifact", "a remote index may not point at file:// artifacts")
    size = _get(raw, "size", int, path)
    if size <= 0:
        raise _Bad(f"{path}.size", "must be a positive integer")
    signature = None
    if raw.get("signature") is not None:
        try:
            signature = ToolSignature.from_json(raw["signature"], source=f"{path}.signature")
        except KamiError as exc:
            raise _Bad(f"{path}.signature", exc.message) from exc
    yanked = raw.get("yanked", False)
    if not isinstance(yanked, bool):
        raise _Bad(f"{path}.yanked", "must be true or false")
    published = raw.get("published_at")
    return VersionEntry(
        tool_id=tool_id,
        version=version,
        artifact=url,
        sha256=str(_hex(raw, "sha256", path)),
        size=size,
        component_sha256=str(_hex(raw, "component_sha256", path)),
        assets_sha256=_hex(raw, "assets_sha256", path, optional=True),
        manifest_text=_get(raw, "manifest", str, path),
        signature=signature,
        yanked=yanked,
        published_at=published if isinstance(published, str) else None,
        registry=registry,
    )


def _tool(tool_id: str, raw: Any, *, base_url: str, registry: str, path: str) -> ToolEntry:
    if not _ID_RE.match(tool_id):
        raise _Bad(path, "is not a reverse-DNS tool id like dev.kami.echo")
    if not isinstance(raw, dict):
        raise _Bad(path, "must be an object")
    versions = _get(raw, "versions", dict, path)
    homepage = raw.get("homepage")
    return ToolEntry(
        id=tool_id,
        name=_get(raw, "name", str, path),
        description=_get(raw, "description", str, path),
        categories=_strings(raw, "categories", path),
        tags=_strings(raw, "tags", path),
        homepage=homepage if isinstance(homepage, str) else None,
        versions={
            text: _version(
                tool_id,
                text,
                entry,
                base_url=base_url,
                registry=registry,
                path=f"{path}.versions[{text!r}]",
            )
            for text, entry in versions.items()
        },
    )


def parse_index(data: bytes, *, url: str, registry: str) -> Index:
    """Parses and checks an index.

    Raises:
        IntegrityError: it is not JSON, not a KAMI index, or malformed; the message names
            the registry, the URL and the path of the first problem.
    """
    where = f"registry {registry} ({url})"
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(
            f"{where}: the index is not JSON ({exc}); check that the URL points at the "
            "registry's index.json",
            data={"registry": registry, "url": url},
        ) from exc
    try:
        if not isinstance(raw, dict) or raw.get("kami_registry") != INDEX_FORMAT:
            raise _Bad(
                "$", f'is not a KAMI registry index (expected "kami_registry": {INDEX_FORMAT})'
            )
        tools = _get(raw, "tools", dict, "$")
        name = raw.get("name")
        index = Index(
            registry=registry,
            url=url,
            name=name if isinstance(name, str) else registry,
            tools={
                tool_id: _tool(
                    tool_id, entry, base_url=url, registry=registry, path=f"$.tools[{tool_id!r}]"
                )
                for tool_id, entry in tools.items()
            },
        )
    except _Bad as exc:
        raise IntegrityError(
            f"{where}: malformed index: {exc}; tell the registry's maintainer (nothing was "
            "installed)",
            data={"registry": registry, "url": url},
        ) from exc
    return index
