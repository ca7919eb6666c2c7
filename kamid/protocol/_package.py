"""The ``.kami`` package: one file holding a tool, its signature and its assets.

A package is a zip archive laid out like a tool directory, with nothing else in it::

    tool.toml              the manifest, byte for byte as signed
    <[tool].wasm>          the component, at the path the manifest names (build/echo.wasm)
    tool.sig               optional: the signature (see :mod:`._signing`)
    assets/...             optional: files the tool gets at /assets

Entries are stored or deflated. Reading refuses, before anything is written anywhere:
absolute paths, ``..``, backslashes, symlinks and other special files, encrypted entries,
duplicate names, entries outside the layout above, more than :data:`MAX_ENTRIES`
entries, and more than ``max_bytes`` uncompressed. :func:`write_package` is deterministic:
the same inputs give the same bytes (fixed timestamps, sorted entries), so a package's
sha256 is reproducible.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import stat
import zipfile
from typing import TYPE_CHECKING

import attrs

from ._errors import InvalidTool
from ._manifest import MANIFEST_NAME, parse_manifest
from ._signing import ASSETS_DIR, SIGNATURE_FILE, SignedContent, ToolSignature, digest_assets

if TYPE_CHECKING:
    from ._manifest import Manifest

__all__ = [
    "COMPONENT_PREAMBLE",
    "MAX_ENTRIES",
    "MAX_PACKAGE_BYTES",
    "PACKAGE_SUFFIX",
    "Package",
    "check_component",
    "component_path",
    "read_package",
    "write_package",
]

PACKAGE_SUFFIX = ".kami"
#: Uncompressed bytes a package may hold unless the daemon's config says otherwise.
MAX_PACKAGE_BYTES = 256 * 1024 * 1024
MAX_ENTRIES = 10_000
#: A component's preamble: magic, version 0x0d, layer 1 (a core module has layer 0).
COMPONENT_PREAMBLE = b"\0asm\x0d\x00\x01\x00"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MAX_NAME = 512


@attrs.frozen(kw_only=True)
class Package:
    """A tool's files, read from a package or a tool directory."""

    #: tool.toml, exactly as it is in the package (what the signature covers).
    manifest_text: bytes
    manifest: Manifest
    component: bytes
    signature: ToolSignature | None = None
    #: ``(path under assets/, content)``, sorted by path.
    assets: tuple[tuple[str, bytes], ...] = ()

    @property
    def component_sha256(self) -> str:
        return hashlib.sha256(self.component).hexdigest()

    def content(self) -> SignedContent:
        """What a signature of this package must cover."""
        return SignedContent(
            tool=self.manifest.id,
            version=self.manifest.version,
            manifest_sha256=hashlib.sha256(self.manifest_text).hexdigest(),
            component_sha256=self.component_sha256,
            assets_sha256=digest_assets(
                (path, hashlib.sha256(data).hexdigest()) for path, data in self.assets
            ),
        )


def component_path(manifest: Manifest, *, source: str) -> str:
    """The normalized relative path of the component a manifest names.

    Raises:
        InvalidTool: the path is absolute or leaves the tool directory.
    """
    raw = manifest.tool.wasm.replace("\\", "/")
    norm = posixpath.normpath(raw)
    if raw.startswith("/") or norm == ".." or norm.startswith("../") or norm in (".", ""):
        raise InvalidTool(
            f"{source}: [tool].wasm = {manifest.tool.wasm!r} must be a path inside the tool "
            "directory, like build/tool.wasm",
            data={"file": source, "key": "tool.wasm"},
        )
    return norm


def _check_name(name: str, source: str) -> str:
    def bad(why: str) -> InvalidTool:
        return InvalidTool(
            f"{source}: refusing entry {name[:200]!r}: {why}; a package holds tool.toml, "
            f"{SIGNATURE_FILE}, the component and {ASSETS_DIR}/ with plain relative paths",
            data={"file": source, "entry": name[:200]},
        )

    if not name or len(name) > _MAX_NAME or "\0" in name:
        raise bad("empty, too long or containing NUL")
    if "\\" in name:
        raise bad("backslashes are not allowed in names")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise bad("absolute paths are not allowed")
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad("'..', '.' and empty path segments are not allowed")
    return name


def read_package(data: bytes, *, source: str, max_bytes: int = MAX_PACKAGE_BYTES) -> Package:
    """Reads a package held in memory, refusing anything unsafe or unexpected.

    Args:
        data: the package file's bytes.
        source: where it came from, named in every error.
        max_bytes: the most its entries may hold, uncompressed, in total.

    Raises:
        InvalidTool: it is not a zip, breaks a rule of the format, holds an invalid manifest
            or signature, or its component is not a WebAssembly component.
    """

    def bad(message: str, **data: object) -> InvalidTool:
        return InvalidTool(f"{source}: {message}", data={"file": source, **data})

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise bad(
            f"not a {PACKAGE_SUFFIX} package (not a zip archive: {exc}); build one with "
            "`kamictl package DIR`"
        ) from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise bad(f"holds {len(infos)} entries; a package may hold at most {MAX_ENTRIES}")
        files: dict[str, zipfile.ZipInfo] = {}
        seen: set[str] = set()
        total = 0
        for info in infos:
            name = _check_name(info.filename, source)
            if name.rstrip("/") in seen:
                raise bad(f"entry {name!r} appears twice", entry=name)
            seen.add(name.rstrip("/"))
            mode = (info.external_attr >> 16) & 0xFFFF
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise bad(
                    f"entry {name!r} is a symlink; packages hold plain files only", entry=name
                )
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise bad(f"entry {name!r} is a special file; packages hold plain files only")
            if info.flag_bits & 0x1:
                raise bad(f"entry {name!r} is encrypted", entry=name)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise bad(f"entry {name!r} uses an unsupported compression (stored or deflate)")
            if info.is_dir():
                continue
            total += info.file_size
            if total > max_bytes:
                raise bad(
                    f"unpacks to more than {max_bytes} bytes; packages are limited to "
                    "that ([supply_chain].max_package_bytes in kamid.toml)",
                    limit=max_bytes,
                )
            files[name] = info

        def read(name: str) -> bytes:
            info = files[name]
            try:
                with archive.open(info) as f:
                    content = f.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise bad(f"entry {name!r} is damaged ({exc})", entry=name) from exc
            if len(content) != info.file_size:
                raise bad(f"entry {name!r} is not the size its header says", entry=name)
            return content

        if MANIFEST_NAME not in files:
            raise bad(f"no {MANIFEST_NAME} at the top of the package")
        manifest_text = read(MANIFEST_NAME)
        try:
            text = manifest_text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad(f"{MANIFEST_NAME} is not UTF-8 ({exc})") from exc
        manifest = parse_manifest(text, source=f"{source}!{MANIFEST_NAME}")
        wasm_name = component_path(manifest, source=f"{source}!{MANIFEST_NAME}")
        if wasm_name not in files:
            raise bad(f"the component {wasm_name} that tool.toml names is not in the package")
        allowed = {MANIFEST_NAME, SIGNATURE_FILE, wasm_name}
        for name in files:
            if name not in allowed and not name.startswith(ASSETS_DIR + "/"):
                raise bad(
                    f"unexpected entry {name!r}; a package holds tool.toml, {SIGNATURE_FILE}, "
                    f"{wasm_name} and {ASSETS_DIR}/ only",
                    entry=name,
                )
        component = read(wasm_name)
        check_component(component, f"{source}!{wasm_name}")
        signature = None
        if SIGNATURE_FILE in files:
            signature = ToolSignature.loads(
                read(SIGNATURE_FILE), source=f"{source}!{SIGNATURE_FILE}"
            )
        assets = tuple(
            (name[len(ASSETS_DIR) + 1 :], read(name))
            for name in sorted(files)
            if name.startswith(ASSETS_DIR + "/")
        )
    return Package(
        manifest_text=manifest_text,
        manifest=manifest,
        component=component,
        signature=signature,
        assets=assets,
    )


def check_component(data: bytes, source: str) -> None:
    """Refuses what plainly is not a WebAssembly component.

    Raises:
        InvalidTool: no ``\\0asm`` header, or a core module rather than a component.
    """
    if not data.startswith(b"\0asm"):
        raise InvalidTool(
            f"{source} is not WebAssembly (no \\0asm header); point [tool].wasm at a built "
            "component",
            data={"file": source},
        )
    if not data.startswith(COMPONENT_PREAMBLE):
        raise InvalidTool(
            f"{source} is a core WebAssembly module, not a component; build it with "
            "componentize-py or componentize-js (`kamictl build`), or wrap it with "
            "`wasm-tools component new`",
            data={"file": source},
        )


def write_package(package: Package) -> bytes:
    """The bytes of a package holding ``package`` (deterministic for the same inputs)."""
    wasm_name = component_path(package.manifest, source=MANIFEST_NAME)
    entries: list[tuple[str, bytes]] = [(MANIFEST_NAME, package.manifest_text)]
    if package.signature is not None:
        entries.append((SIGNATURE_FILE, package.signature.dumps()))
    entries.append((wasm_name, package.component))
    entries += [(f"{ASSETS_DIR}/{path}", data) for path, data in sorted(package.assets)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3  # Unix, so that the mode bits above are meaningful
            archive.writestr(info, data)
    return buffer.getvalue()
