"""The supply chain inside the daemon: where a tool's bytes come from and what vouches
for them.

:class:`SupplyChain` turns a package (file or URL) or a registry reference into the same
thing a tool directory gives (a manifest and component bytes, plus a
:class:`Provenance`), and hands it to the service's one install path. That path calls
back :meth:`SupplyChain.vouch` before anything is stored (signature and policy) and
:meth:`SupplyChain.recorded` after the tool row commits (origin and signer); every exec
calls :meth:`SupplyChain.check_exec`, which is a dictionary lookup.

Order of checks for a registry install, each refusing with nothing installed: the entry's
manifest names the listed tool and version; the index's signature matches the index's
claims and satisfies the policy (before any download); the version does not downgrade
and fits the pin; the download is the promised size and sha256; the package is safe to
read; its tool.toml, component and signature are the ones the index listed; the
signature matches the actual bytes (again, in :meth:`vouch`).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from kamid.protocol import (
    MANIFEST_NAME,
    SIGNATURE_FILE,
    IntegrityError,
    InvalidParams,
    KamiError,
    NotFound,
    PolicyDenied,
    RegistryInfo,
    SignedContent,
    ToolSignature,
    Version,
    VersionRange,
    assets_digest,
    parse_manifest,
    parse_ref,
    read_package,
)
from kamid.server import ProgressFn
from kamid.signing import TrustStore, manifest_digest
from kamid.store import OriginRow

from ._fetch import Fetcher, check_url
from ._index import Index, ToolEntry, VersionEntry, parse_index

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from kamid.config import DaemonConfig
    from kamid.protocol import (
        Grants,
        InstallToolParams,
        InstallToolResult,
        Manifest,
        Package,
        Paths,
        SignerInfo,
    )
    from kamid.store import Store, ToolRecord

    from ._config import SupplyChainConfig

__all__ = ["Progress", "Provenance", "SupplyChain", "directory_provenance"]

log = logging.getLogger("kamid.registry")

DEFAULT_REGISTRY = "default"


#: Sends a ``progress`` notification (a no-op when the request gave no token); made by
#: :meth:`kamid.server.RequestContext.progress`.
Progress = ProgressFn


@attrs.frozen(kw_only=True)
class Provenance:
    """Where an install's bytes came from, and what vouches for them."""

    kind: Literal["directory", "package", "registry"]
    #: The directory, the package path, or the artifact URL.
    source: str
    #: tool.toml exactly as read (what a signature covers).
    manifest_text: bytes
    signature: ToolSignature | None = None
    assets_sha256: str | None = None
    #: For registry installs: which registry, and the range asked for.
    registry: str | None = None
    wanted: str = "*"


def directory_provenance(tool_dir: Path) -> Provenance:
    """Reads what vouches for a tool directory: its tool.toml bytes and its tool.sig.

    Blocks (file reads; the assets are hashed only when there is a signature to check).

    Raises:
        InvalidTool: tool.sig is present but malformed, or the assets hold a symlink.
    """
    text = (tool_dir / MANIFEST_NAME).read_bytes()
    sig_path = tool_dir / SIGNATURE_FILE
    signature = None
    if sig_path.is_file():
        signature = ToolSignature.loads(sig_path.read_bytes(), source=str(sig_path))
    return Provenance(
        kind="directory",
        source=str(tool_dir),
        manifest_text=text,
        signature=signature,
        assets_sha256=assets_digest(tool_dir) if signature is not None else None,
    )


class SupplyChain:
    """Registries, packages, signatures and trust, for one daemon.

    Args:
        paths: the daemon's layout (indexes are cached under ``paths.cache``).
        config: returns the daemon's config in force (``[supply_chain]``, default limits).
        store: the tool store.
        io: runs a blocking store call off the trio loop (the service's limiter).
        install: the service's install path, taking (manifest, component bytes) and
            keyword arguments ``provenance``, ``approve``, ``progress``, ``tool_dir``,
            ``grants``.
    """

    def __init__(
        self,
        *,
        paths: Paths,
        config: Callable[[], DaemonConfig],
        store: Store,
        io: Callable[..., Awaitable[Any]],
        install: Callable[..., Awaitable[InstallToolResult]],
    ) -> None:
        self._config = config
        self.store = store
        self.io = io
        self.install_component = install
        self.fetcher = Fetcher(
            paths.cache / "registries", timeout_s=self.settings.download_timeout_s
        )
        self.staging = paths.cache / "staging"
        # Left over from a crash mid-install; nothing in it is trusted.
        shutil.rmtree(self.staging, ignore_errors=True)
        self._trust: TrustStore | None = None
        self._origins: dict[str, OriginRow | None] = {}
        #: Tool id -> (sha256, installed_at) of the row whose manifest digest matched its
        #: origin: later execs of the same install skip the digest.
        self._matched: dict[str, tuple[str, float]] = {}

    @property
    def settings(self) -> SupplyChainConfig:
        """``[supply_chain]`` as in force now (the config may be replaced by a reload)."""
        return self._config().supply_chain

    @property
    def defaults(self) -> dict[str, int]:
        """The daemon's default limits, by name."""
        return attrs.asdict(self._config().limits)

    # Trust and origins.

    async def trust(self) -> TrustStore:
        if self._trust is None:
            self._trust = TrustStore(await self.io(self.store.supply.keys))
        return self._trust

    async def origin(self, tool_id: str) -> OriginRow | None:
        if tool_id not in self._origins:
            self._origins[tool_id] = await self.io(self.store.supply.origin, tool_id)
        return self._origins[tool_id]

    async def vouch(
        self, manifest: Manifest, sha256: str, provenance: Provenance
    ) -> SignerInfo | None:
        """Checks signature and policy for what is about to be installed.

        Raises:
            IntegrityError: the signature does not match the bytes, or tool.toml changed
                while it was being read.
            PolicyDenied: ``require_signatures`` is on and the tool is unsigned or its
                signer is not trusted.
        """
        try:
            signed = parse_manifest(provenance.manifest_text.decode("utf-8"), source="tool.toml")
        except (UnicodeDecodeError, KamiError) as exc:
            raise IntegrityError(
                f"{provenance.source}: tool.toml changed while it was being installed; "
                "install again"
            ) from exc
        if signed != manifest:
            raise IntegrityError(
                f"{provenance.source}: tool.toml changed while it was being installed; "
                "install again"
            )
        actual = SignedContent(
            tool=manifest.id,
            version=manifest.version,
            manifest_sha256=hashlib.sha256(provenance.manifest_text).hexdigest(),
            component_sha256=sha256,
            assets_sha256=provenance.assets_sha256,
        )
        trust = await self.trust()
        return trust.judge(
            provenance.signature,
            actual,
            source=provenance.source,
            require=self.settings.require_signatures,
        )

    async def recorded(
        self,
        record: ToolRecord,
        provenance: Provenance,
        signer: SignerInfo | None,
        *,
        manifest: dict[str, Any],
    ) -> None:
        """Records where the installed ``record`` came from and who signed it.

        ``manifest`` is the one :meth:`vouch` checked; when the store kept another (the same
        version and component were installed already, with another manifest), the record
        stays as it was.
        """
        if manifest_digest(manifest) != manifest_digest(record.manifest):
            return
        signature = provenance.signature if signer is not None else None
        origin = OriginRow(
            tool_id=record.id,
            sha256=record.sha256,
            manifest_digest=manifest_digest(record.manifest),
            kind=provenance.kind,
            source=provenance.source,
            registry=provenance.registry,
            wanted=provenance.wanted,
            signature=json.dumps(signature.to_json()) if signature is not None else None,
            signer=signer.key_id if signer is not None else None,
        )
        written = await self.io(self.store.supply.record_origin, origin)
        self._matched.pop(record.id, None)
        if written:
            self._origins[record.id] = origin
        else:
            self._origins.pop(record.id, None)

    async def check_exec(self, record: ToolRecord) -> None:
        """Under ``require_signatures``: refuses a tool without a trusted signer on record.

        Cheap: dictionary lookups, and a digest of the (small) manifest the first time a
        given install runs; no blob hashing (the blob was verified against the signature at
        install, and is re-hashed whenever it is compiled).

        Raises:
            PolicyDenied: it has no verified signature on record, or its signer is no
                longer trusted.
        """
        if not self.settings.require_signatures:
            return
        origin = await self.origin(record.id)
        row = (record.sha256, record.installed_at)
        if (
            origin is not None
            and self._matched.get(record.id) != row
            and origin.manifest_digest == manifest_digest(record.manifest)
        ):
            self._matched[record.id] = row
        if (
            origin is None
            or origin.signer is None
            or origin.sha256 != record.sha256
            or self._matched.get(record.id) != row
        ):
            raise PolicyDenied(
                f"{record.id} {record.version} has no verified signature on record, and this "
                "kamid requires signatures ([supply_chain].require_signatures); reinstall it "
                "from a package signed by a key you trust",
                data={"tool": record.id, "reason": "unsigned"},
            )
        trust = await self.trust()
        if trust.get(origin.signer) is None:
            raise PolicyDenied(
                f"{record.id} is signed by key {origin.signer}, which is not trusted any more; "
                "trust it again with `kamictl trust add`, or uninstall the tool",
                data={"tool": record.id, "key_id": origin.signer, "reason": "untrusted"},
            )

    # Registries and indexes.

    async def registries(self) -> list[RegistryInfo]:
        out = []
        if self.settings.default_registry:
            out.append(
                RegistryInfo(
                    name=DEFAULT_REGISTRY, url=self.settings.default_registry, source="config"
                )
            )
        rows = await self.io(self.store.supply.registries)
        out += [RegistryInfo(name=r.name, url=r.url, added_at=r.added_at) for r in rows]
        return out

    async def registry(self, name: str) -> RegistryInfo:
        for info in await self.registries():
            if info.name == name:
                return info
        raise NotFound(
            f'no registry is named "{name}"; `kamictl registry list` shows them',
            data={"registry": name},
        )

    async def index(self, registry: RegistryInfo) -> Index:
        """Fetches (or revalidates) and parses a registry's index.

        Raises:
            NotFound: it cannot be fetched.
            IntegrityError: it is not a valid index.
        """
        data = await self.fetcher.fetch_index(registry.url, registry=registry.name)
        return await trio.to_thread.run_sync(
            functools.partial(parse_index, data, url=registry.url, registry=registry.name)
        )

    async def resolve(
        self, tool_id: str, wanted: VersionRange, *, registry: str | None
    ) -> tuple[str, VersionEntry]:
        """The registry and entry of the newest version of ``tool_id`` in ``wanted``.

        Raises:
            NotFound: no registry lists it, or no version matches.
            InvalidParams: several registries list it; the caller must choose.
        """
        found = await self._listing(tool_id, registry=registry)
        if len(found) > 1:
            origin = await self.origin(tool_id)
            preferred = [f for f in found if origin is not None and f[0] == origin.registry]
            if not preferred:
                names = ", ".join(name for name, _ in found)
                raise InvalidParams(
                    f"{tool_id} is listed by several registries ({names}); choose one with "
                    "`kamictl install --registry NAME`",
                    data={"tool": tool_id, "registries": [name for name, _ in found]},
                )
            found = preferred
        name, tool = found[0]
        entry = tool.best(wanted)
        if entry is None:
            have = ", ".join(str(v) for v in sorted(tool.candidates())) or "none"
            raise NotFound(
                f"registry {name} has no version of {tool_id} matching {wanted} (it has: "
                f"{have}); ask for one of those",
                data={"tool": tool_id, "registry": name, "versions": have.split(", ")},
            )
        return name, entry

    async def _listing(self, tool_id: str, *, registry: str | None) -> list[tuple[str, ToolEntry]]:
        regs = [await self.registry(registry)] if registry else await self.registries()
        if not regs:
            raise NotFound(
                "no registry is configured; add one with `kamictl registry add NAME URL` or set "
                "[supply_chain].default_registry in kamid.toml"
            )
        found: list[tuple[str, ToolEntry]] = []
        problems: list[str] = []
        known: list[str] = []
        for info in regs:
            try:
                index = await self.index(info)
            except KamiError:
                if len(regs) == 1:
                    raise
                problems.append(info.name)
                continue
            if tool_id in index.tools:
                found.append((info.name, index.tools[tool_id]))
            known += list(index.tools)
        if not found:
            close = difflib.get_close_matches(tool_id, known, n=3)
            hint = "; did you mean " + " or ".join(close) + "?" if close else ""
            unread = f" ({', '.join(problems)} could not be read)" if problems else ""
            raise NotFound(
                f"no registry lists {tool_id}{unread}{hint}; `kamictl search` shows what is there",
                data={"tool": tool_id, "suggestions": close, "unreadable": problems},
            )
        return found

    # Installing.

    async def install(
        self, p: InstallToolParams, progress: Progress, *, peer: Any
    ) -> InstallToolResult:
        """``tools.install`` from a package (``p.package``) or a registry (``p.ref``)."""
        if p.registry is not None and p.ref is None:
            raise InvalidParams("tools.install: registry goes with ref (a tool id), not a package")
        if p.ref is not None:
            try:
                tool_id, wanted = parse_ref(p.ref)
            except ValueError as exc:
                raise InvalidParams(f"tools.install: {exc}") from exc
            await progress("resolving", f"looking up {p.ref}")
            registry, entry = await self.resolve(tool_id, wanted, registry=p.registry)
            return await self.install_entry(
                entry,
                registry=registry,
                wanted=str(wanted),
                approve=p.approve,
                allow_downgrade=p.allow_downgrade,
                progress=progress,
                peer=peer,
            )
        assert p.package is not None
        data, source = await self.obtain(p.package, progress)
        package = await self.read(data, source)
        await self.check_replace(package.manifest, allow_downgrade=p.allow_downgrade)
        provenance = Provenance(
            kind="package",
            source=source,
            manifest_text=package.manifest_text,
            signature=package.signature,
            assets_sha256=package.content().assets_sha256,
        )
        return await self.install_package(
            package, provenance, approve=p.approve, progress=progress, peer=peer
        )

    async def obtain(self, package: str, progress: Progress) -> tuple[bytes, str]:
        """The bytes of a package given as an absolute path or an http(s)/file URL."""
        limit = self.settings.max_package_bytes
        if "://" in package:
            url = check_url(package, what="package")

            async def report(done: int, total: int | None) -> None:
                await progress("downloading", f"downloading {url}", done=done, total=total)

            return await self.fetcher.download(url, max_bytes=limit, progress=report), url
        path = Path(package)
        if not path.is_absolute():
            raise InvalidParams(
                f"tools.install: package must be an absolute path (got {package!r})"
            )
        url = path.as_uri()
        await progress("reading", f"reading {path}")
        return await self.fetcher.download(url, max_bytes=limit), str(path)

    async def read(self, data: bytes, source: str) -> Package:
        return await trio.to_thread.run_sync(
            functools.partial(
                read_package, data, source=source, max_bytes=self.settings.max_package_bytes
            )
        )

    async def check_replace(self, manifest: Manifest, *, allow_downgrade: bool) -> None:
        """Refuses a version outside the tool's pin, or below the installed one.

        Raises:
            PolicyDenied: saying how to go ahead if that is what the operator wants.
        """
        version = Version.parse(manifest.version)
        pin = (await self.io(self.store.supply.pins)).get(manifest.id)
        if pin is not None and not VersionRange.parse(pin).matches(version):
            raise PolicyDenied(
                f"{manifest.id} is pinned to {pin}, and {version} is outside it. Nothing was "
                f"installed; change the pin with `kamictl pin {manifest.id} VERSION` or drop it "
                f"with `kamictl pin {manifest.id} --remove`",
                data={"tool": manifest.id, "pin": pin, "reason": "pinned"},
            )
        existing = await self.io(self.store.get, manifest.id)
        if (
            existing is not None
            and version < Version.parse(existing.version)
            and not allow_downgrade
        ):
            raise PolicyDenied(
                f"{manifest.id}: installing {version} would downgrade it from "
                f"{existing.version}. Nothing was installed; pass --allow-downgrade if that is "
                "what you want",
                data={"tool": manifest.id, "installed": existing.version, "reason": "downgrade"},
            )

    async def install_entry(
        self,
        entry: VersionEntry,
        *,
        registry: str,
        wanted: str,
        approve: bool,
        allow_downgrade: bool,
        progress: Progress,
        peer: Any,
        grants: Grants | None = None,
    ) -> InstallToolResult:
        """Downloads, checks and installs one registry entry (see the module docstring)."""
        manifest = entry.checked_manifest()
        where = f"registry {registry}: {entry.tool_id} {entry.version}"
        claimed = SignedContent(
            tool=entry.tool_id,
            version=manifest.version,
            manifest_sha256=hashlib.sha256(entry.manifest_text.encode("utf-8")).hexdigest(),
            component_sha256=entry.component_sha256,
            assets_sha256=entry.assets_sha256,
        )
        # Refuse a bad or untrusted signature before downloading anything.
        (await self.trust()).judge(
            entry.signature, claimed, source=where, require=self.settings.require_signatures
        )
        await self.check_replace(manifest, allow_downgrade=allow_downgrade)

        async def report(done: int, total: int | None) -> None:
            await progress("downloading", f"downloading {entry.artifact}", done=done, total=total)

        data = await self.fetcher.download(
            entry.artifact,
            max_bytes=self.settings.max_package_bytes,
            size=entry.size,
            sha256=entry.sha256,
            progress=report,
        )
        package = await self.read(data, entry.artifact)
        mismatch = []
        if package.manifest_text != entry.manifest_text.encode("utf-8"):
            mismatch.append("its tool.toml is not the manifest the index lists")
        if package.component_sha256 != entry.component_sha256:
            mismatch.append(
                f"its component is {package.component_sha256}, not {entry.component_sha256}"
            )
        sig = package.signature.to_json() if package.signature else None
        if sig != (entry.signature.to_json() if entry.signature else None):
            mismatch.append("its tool.sig is not the signature the index lists")
        if mismatch:
            raise IntegrityError(
                f"{where}: the artifact does not match its index entry: {'; '.join(mismatch)}. "
                "Nothing was installed; tell the registry's maintainer",
                data={"tool": entry.tool_id, "problems": mismatch},
            )
        provenance = Provenance(
            kind="registry",
            source=entry.artifact,
            manifest_text=package.manifest_text,
            signature=package.signature,
            assets_sha256=package.content().assets_sha256,
            registry=registry,
            wanted=wanted,
        )
        return await self.install_package(
            package, provenance, approve=approve, progress=progress, peer=peer, grants=grants
        )

    async def install_package(
        self,
        package: Package,
        provenance: Provenance,
        *,
        approve: bool,
        progress: Progress,
        peer: Any,
        grants: Grants | None = None,
    ) -> InstallToolResult:
        """Unpacks into a private staging directory and runs the common install path."""
        staging = await trio.to_thread.run_sync(_stage, self.staging, package)
        try:
            return await self.install_component(
                package.manifest,
                package.component,
                provenance=provenance,
                approve=approve,
                progress=progress,
                tool_dir=staging,
                peer=peer,
                grants=grants,
            )
        finally:
            await trio.to_thread.run_sync(
                functools.partial(shutil.rmtree, staging, ignore_errors=True)
            )


def _stage(root: Path, package: Package) -> Path:
    """Writes tool.toml and the assets of ``package`` into a fresh private directory."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix="pkg-", dir=root))
    (staging / MANIFEST_NAME).write_bytes(package.manifest_text)
    base = (staging / "assets").resolve()
    for rel, data in package.assets:
        target = (base / rel).resolve()
        # Names were checked when the package was read; this is the belt to those braces.
        if not target.is_relative_to(base):
            raise IntegrityError(f"refusing asset path {rel!r}: it leaves the assets directory")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with target.open("xb") as f:
            f.write(data)
    return staging
