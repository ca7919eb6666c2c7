"""Authoring side of the supply chain: package, sign and publish tools.

Everything here runs in ``kamictl`` on the publisher's machine, without the daemon: it
reads a tool directory, writes ``.kami`` packages (the format is
:mod:`kamid.protocol._package`), signs with a key from :mod:`kamictl._keys`, and adds
versions to a static registry directory (``index.json`` plus ``artifacts/``) that any
file server can serve.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import (
    ASSETS_DIR,
    MANIFEST_NAME,
    PACKAGE_SUFFIX,
    SIGNATURE_FILE,
    InvalidParams,
    InvalidTool,
    Package,
    ToolSignature,
    Version,
    check_component,
    component_path,
    parse_manifest,
    read_package,
    write_package,
)

if TYPE_CHECKING:
    from kamictl._keys import KeyPair

__all__ = [
    "PublishResult",
    "add_to_index",
    "pack",
    "publish",
    "read_tool_dir",
    "sign_path",
    "write_atomic",
]

INDEX_NAME = "index.json"


def read_tool_dir(tool_dir: Path) -> Package:
    """A tool directory's manifest (as bytes), component, signature and assets.

    Raises:
        InvalidTool: no tool.toml, an invalid one, a missing component, a malformed
            tool.sig, or a symlink among the assets.
    """
    manifest_path = tool_dir / MANIFEST_NAME
    try:
        text = manifest_path.read_bytes()
    except OSError as exc:
        raise InvalidTool(f"{manifest_path}: cannot read: {exc.strerror}") from exc
    manifest = parse_manifest(text.decode("utf-8", "replace"), source=str(manifest_path))
    wasm = tool_dir / component_path(manifest, source=str(manifest_path))
    try:
        component = wasm.read_bytes()
    except OSError as exc:
        hint = f"; build it first with `kamictl build {tool_dir}`" if manifest.build else ""
        raise InvalidTool(f"{wasm}: cannot read: {exc.strerror}{hint}") from exc
    check_component(component, str(wasm))
    sig_path = tool_dir / SIGNATURE_FILE
    signature = None
    if sig_path.is_file():
        signature = ToolSignature.loads(sig_path.read_bytes(), source=str(sig_path))
    return Package(
        manifest_text=text,
        manifest=manifest,
        component=component,
        signature=signature,
        assets=_read_assets(tool_dir / ASSETS_DIR),
    )


def _read_assets(root: Path) -> tuple[tuple[str, bytes], ...]:
    if not root.is_dir():
        return ()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            if not (stat.S_ISREG(path.lstat().st_mode) or stat.S_ISDIR(path.lstat().st_mode)):
                raise InvalidTool(
                    f"{path}: assets may hold only plain files and directories (this is a "
                    "symlink or a special file); replace it with a copy"
                )
        for name in filenames:
            path = Path(dirpath, name)
            out.append((path.relative_to(root).as_posix(), path.read_bytes()))
    return tuple(sorted(out))


def stale_signature(package: Package) -> list[str]:
    """How the package differs from what its tool.sig says it signed (empty: fresh)."""
    if package.signature is None:
        return []
    return package.signature.content.differences(package.content())


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pack(tool_dir: Path, *, key: KeyPair | None = None) -> tuple[Package, bytes]:
    """Packages a tool directory (signing it with ``key`` when given).

    Raises:
        InvalidTool: the directory is not a complete tool, or its tool.sig is stale.
    """
    package = read_tool_dir(tool_dir)
    if key is not None:
        from kamictl._keys import sign

        package = attrs.evolve(package, signature=sign(key, package.content()))
    elif stale := stale_signature(package):
        raise InvalidTool(
            f"{tool_dir / SIGNATURE_FILE} is stale: {'; '.join(stale)}; re-sign with "
            f"`kamictl sign {tool_dir}` (or delete it to package unsigned)"
        )
    return package, write_package(package)


def default_package_name(package: Package) -> str:
    return f"{package.manifest.id}-{package.manifest.version}{PACKAGE_SUFFIX}"


def sign_path(target: Path, key: KeyPair) -> tuple[Package, Path]:
    """Signs a tool directory (writing its tool.sig) or a ``.kami`` package (rewriting it).

    Returns:
        The signed package and the file written.
    """
    from kamictl._keys import sign

    if target.is_dir():
        package = read_tool_dir(target)
        signature = sign(key, package.content())
        out = target / SIGNATURE_FILE
        write_atomic(out, signature.dumps())
        return attrs.evolve(package, signature=signature), out
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise InvalidParams(f"{target}: cannot read: {exc.strerror}") from exc
    package = read_package(data, source=str(target))
    package = attrs.evolve(package, signature=sign(key, package.content()))
    write_atomic(target, write_package(package))
    return package, target


@attrs.frozen(kw_only=True)
class PublishResult:
    tool: str
    version: str
    artifact: Path
    index: Path
    sha256: str
    size: int
    #: False when this exact artifact was published already.
    changed: bool


def publish(
    tool_dir: Path,
    registry_dir: Path,
    key: KeyPair,
    *,
    categories: list[str] | None = None,
    tags: list[str] | None = None,
) -> PublishResult:
    """Packages and signs ``tool_dir`` and adds that version to ``registry_dir``.

    A version, once published, is immutable: publishing it again with other content is
    refused (bump the version instead).

    Raises:
        InvalidParams: the version exists with other content, or the index is not one.
        InvalidTool: the tool directory is incomplete.
    """
    package, data = pack(tool_dir, key=key)
    return add_to_index(registry_dir, package, data, categories=categories, tags=tags)


def _load_index(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"kami_registry": 1, "name": path.parent.name, "tools": {}}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidParams(f"{path}: not a readable JSON index ({exc})") from exc
    if not isinstance(index, dict) or index.get("kami_registry") != 1:
        raise InvalidParams(f'{path}: not a KAMI registry index (no "kami_registry": 1)')
    index.setdefault("tools", {})
    return index


def add_to_index(
    registry_dir: Path,
    package: Package,
    data: bytes,
    *,
    categories: list[str] | None = None,
    tags: list[str] | None = None,
) -> PublishResult:
    """Writes the artifact under ``artifacts/`` and its entry into ``index.json``."""
    manifest = package.manifest
    index_path = registry_dir / INDEX_NAME
    index = _load_index(index_path)
    rel = f"artifacts/{manifest.id}/{default_package_name(package)}"
    sha256 = hashlib.sha256(data).hexdigest()
    tool = index["tools"].setdefault(manifest.id, {"versions": {}})
    existing = tool.get("versions", {}).get(manifest.version)
    artifact = registry_dir / rel
    result = PublishResult(
        tool=manifest.id,
        version=manifest.version,
        artifact=artifact,
        index=index_path,
        sha256=sha256,
        size=len(data),
        changed=existing is None,
    )
    if existing is not None:
        if existing.get("sha256") == sha256:
            return result
        raise InvalidParams(
            f"{manifest.id} {manifest.version} is already in {index_path} with other content; "
            "published versions never change: bump the version in tool.toml"
        )
    write_atomic(artifact, data)
    content = package.content()
    tool["versions"][manifest.version] = {
        "artifact": rel,
        "sha256": sha256,
        "size": len(data),
        "component_sha256": content.component_sha256,
        "assets_sha256": content.assets_sha256,
        "manifest": package.manifest_text.decode("utf-8"),
        "signature": package.signature.to_json() if package.signature else None,
        "published_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    newest = max(tool["versions"], key=Version.parse)
    if newest == manifest.version:
        tool["name"] = manifest.tool.name
        tool["description"] = manifest.tool.description
    tool.setdefault("name", manifest.tool.name)
    tool.setdefault("description", manifest.tool.description)
    if categories:
        tool["categories"] = sorted(set(categories))
    if tags:
        tool["tags"] = sorted(set(tags))
    tool.setdefault("categories", [])
    tool.setdefault("tags", [])
    tool["versions"] = dict(sorted(tool["versions"].items(), key=lambda kv: Version.parse(kv[0])))
    index["tools"] = dict(sorted(index["tools"].items()))
    write_atomic(index_path, (json.dumps(index, indent=2, ensure_ascii=False) + "\n").encode())
    return result
