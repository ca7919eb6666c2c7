"""The supply chain's wire methods: registries, search, updates, pins, trust, verify."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import TYPE_CHECKING, Any

import attrs

from kamid.protocol import (
    AddRegistryResult,
    Grants,
    IntegrityError,
    InvalidParams,
    KamiError,
    ListRegistriesResult,
    ListTrustResult,
    Manifest,
    NotFound,
    OutdatedTool,
    OutdatedToolsResult,
    PinToolResult,
    PolicyDenied,
    RegistryInfo,
    RegistryProblem,
    RemoveRegistryResult,
    SearchHit,
    SearchRegistryResult,
    SignedContent,
    SignerInfo,
    ToolSignature,
    ToolUpdate,
    TrustedKey,
    TrustKeyResult,
    UpdateToolsResult,
    VerifyToolResult,
    Version,
    VersionRange,
    decode_public_key,
    encode_public_key,
    key_id_of,
)
from kamid.signing import check_signature, manifest_digest

from ._consent import requested_grants, secret_widening, widen, widening
from ._core import DEFAULT_REGISTRY, SupplyChain
from ._fetch import check_url

if TYPE_CHECKING:
    from kamid.dispatch import Handler
    from kamid.protocol import (
        AddRegistryParams,
        AddTrustParams,
        ListRegistriesParams,
        ListTrustParams,
        OutdatedToolsParams,
        PinToolParams,
        RemoveRegistryParams,
        RemoveTrustParams,
        SearchRegistryParams,
        UpdateToolsParams,
        VerifyToolParams,
    )
    from kamid.server import RequestContext
    from kamid.store import KeyRow, ToolRecord

    from ._core import Progress
    from ._index import Index

__all__ = ["SupplyService"]

_REGISTRY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _operator(ctx: RequestContext, method: str) -> None:
    """Refuses peers other than the daemon's own uid (``REGISTRY_OPERATOR_METHODS``).

    Raises:
        PolicyDenied: another (allowed) user: they may run tools, not choose their sources.
    """
    if ctx.peer.uid != os.getuid():
        raise PolicyDenied(
            f"{method} is reserved to the operator (uid {os.getuid()}, who runs kamid); "
            f"uid {ctx.peer.uid} may run tools but not change where they come from",
            data={"uid": ctx.peer.uid},
        )


def _key(row: KeyRow) -> TrustedKey:
    return TrustedKey(
        key_id=row.key_id, public_key=row.public_key, name=row.name, added_at=row.added_at
    )


class SupplyService(SupplyChain):
    """:class:`SupplyChain` plus its wire methods (registered by the daemon's service)."""

    def handlers(self) -> dict[str, Handler]:
        return {
            "registry.list": self.registry_list,
            "registry.add": self.registry_add,
            "registry.remove": self.registry_remove,
            "registry.search": self.registry_search,
            "tools.update": self.tools_update,
            "tools.pin": self.tools_pin,
            "tools.outdated": self.tools_outdated,
            "tools.verify": self.tools_verify,
            "trust.add": self.trust_add,
            "trust.list": self.trust_list,
            "trust.remove": self.trust_remove,
        }

    # registry.*

    async def registry_list(self, _p: ListRegistriesParams, _ctx: RequestContext) -> Any:
        return ListRegistriesResult(registries=await self.registries())

    async def registry_add(self, p: AddRegistryParams, ctx: RequestContext) -> Any:
        _operator(ctx, "registry.add")
        if not _REGISTRY_NAME.match(p.name):
            raise InvalidParams(
                f"registry name {p.name!r}: use lower case letters, digits, '.', '_' and '-' "
                "(up to 64), like examples"
            )
        url = check_url(p.url, what="registry URL")
        if any(r.name == p.name for r in await self.registries()):
            raise InvalidParams(
                f'a registry named "{p.name}" exists already; remove it first or pick another name'
            )
        info = RegistryInfo(name=p.name, url=url)
        index = await self.index(info)  # refuse what cannot be read before remembering it
        row = await self.io(self.store.supply.add_registry, p.name, url)
        if row is None:
            raise InvalidParams(f'a registry named "{p.name}" exists already')
        return AddRegistryResult(
            registry=RegistryInfo(name=row.name, url=row.url, added_at=row.added_at),
            tools=len(index.tools),
        )

    async def registry_remove(self, p: RemoveRegistryParams, ctx: RequestContext) -> Any:
        _operator(ctx, "registry.remove")
        if p.name == DEFAULT_REGISTRY and self.settings.default_registry:
            raise InvalidParams(
                'the "default" registry comes from [supply_chain].default_registry in '
                "kamid.toml; remove it there and restart kamid"
            )
        row = await self.io(self.store.supply.remove_registry, p.name)
        if row is None:
            raise NotFound(f'no registry is named "{p.name}"; `kamictl registry list` shows them')
        return RemoveRegistryResult(name=row.name, url=row.url)

    async def registry_search(self, p: SearchRegistryParams, _ctx: RequestContext) -> Any:
        regs = [await self.registry(p.registry)] if p.registry else await self.registries()
        if not regs:
            raise NotFound(
                "no registry is configured; add one with `kamictl registry add NAME URL`"
            )
        installed = {r.id: r.version for r in await self.io(self.store.list)}
        trust = await self.trust()
        words = p.query.lower().split()
        hits: list[SearchHit] = []
        problems: list[RegistryProblem] = []
        for info in regs:
            try:
                index = await self.index(info)
            except KamiError as exc:
                problems.append(RegistryProblem(registry=info.name, message=exc.message))
                continue
            for tool in index.tools.values():
                newest = tool.newest()
                if newest is None or not tool.matches(words, p.category, p.tag):
                    continue
                sig = newest.signature
                hits.append(
                    SearchHit(
                        registry=info.name,
                        id=tool.id,
                        name=tool.name,
                        description=tool.description,
                        version=str(newest.version),
                        versions=len(tool.candidates()),
                        categories=list(tool.categories),
                        tags=list(tool.tags),
                        signer=sig.key_id if sig else None,
                        trusted=bool(sig and trust.get(sig.key_id)),
                        installed=installed.get(tool.id),
                    )
                )
        if problems and not hits and len(problems) == len(regs):
            raise NotFound(
                "no registry could be read: "
                + "; ".join(f"{x.registry}: {x.message}" for x in problems),
                data={"problems": [x.message for x in problems]},
            )
        hits.sort(key=lambda h: (h.id, h.registry))
        return SearchRegistryResult(hits=hits, problems=problems)

    # tools.update / tools.outdated / tools.pin

    async def tools_update(self, p: UpdateToolsParams, ctx: RequestContext) -> Any:
        _operator(ctx, "tools.update")
        if p.all == (p.tool is not None):
            raise InvalidParams("tools.update: give a tool, or all: true (not both)")
        if p.all and (p.version or p.expect_sha256):
            raise InvalidParams("tools.update: version and expect_sha256 go with one tool")

        progress = ctx.progress(p.progress_token)

        if p.tool is not None:
            records = [await self.io(self.store.resolve, p.tool)]
        else:
            records = await self.io(self.store.list)
        updates = []
        indexes: dict[str, Index] = {}  # each registry read once per request
        for record in records:
            try:
                updates.append(await self._update_one(record, p, progress, ctx.peer, indexes))
            except KamiError as exc:
                if not p.all:
                    raise
                updates.append(
                    ToolUpdate(
                        id=record.id, status="failed", installed=record.version, message=exc.message
                    )
                )
        return UpdateToolsResult(updates=updates)

    async def _update_one(
        self,
        record: ToolRecord,
        p: UpdateToolsParams,
        progress: Progress,
        peer: Any,
        indexes: dict[str, Index],
    ) -> ToolUpdate:
        origin = await self.origin(record.id)
        if origin is None or origin.registry is None or origin.sha256 != record.sha256:
            message = (
                f"{record.id} was not installed from a registry; install it from one with "
                f"`kamictl install {record.id}`, or reinstall it from its source"
            )
            if not p.all:
                raise InvalidParams(message, data={"tool": record.id})
            return ToolUpdate(
                id=record.id, status="skipped", installed=record.version, message=message
            )
        pin = (await self.io(self.store.supply.pins)).get(record.id)
        constraint = VersionRange.parse(pin or origin.wanted)
        info = await self.registry(origin.registry)
        await progress("resolving", f"checking {info.name} for {record.id}")
        if info.name not in indexes:
            indexes[info.name] = await self.index(info)
        tool = indexes[info.name].tools.get(record.id)
        if tool is None:
            raise NotFound(
                f"registry {info.name} no longer lists {record.id}", data={"tool": record.id}
            )
        installed = Version.parse(record.version)
        if p.version is not None:
            try:
                target = Version.parse(p.version)
            except ValueError as exc:
                raise InvalidParams(f"tools.update: {exc}") from exc
            entry = tool.candidates().get(target)
            if entry is None:
                raise NotFound(f"registry {info.name} has no version {target} of {record.id}")
            if not constraint.matches(target):
                raise PolicyDenied(
                    f"{record.id} {target} is outside its constraint {constraint}; change the "
                    f"pin with `kamictl pin {record.id} VERSION`",
                    data={"tool": record.id, "reason": "pinned"},
                )
            if target < installed:
                raise PolicyDenied(
                    f"an update never downgrades ({record.id} {installed} -> {target}); use "
                    f"`kamictl install {record.id}@{target} --allow-downgrade`",
                    data={"tool": record.id, "reason": "downgrade"},
                )
            if target == installed:
                return ToolUpdate(id=record.id, status="current", installed=record.version)
        else:
            best = tool.best(constraint)
            newest = tool.newest()
            if best is None or best.version <= installed:
                held = newest is not None and newest.version > installed
                return ToolUpdate(
                    id=record.id,
                    status="held" if held else "current",
                    installed=record.version,
                    available=str(newest.version) if held and newest else None,
                    message=f"{newest.version if newest else ''} is outside {constraint}"
                    if held
                    else "",
                )
            entry = best
        if p.expect_sha256 is not None and entry.component_sha256 != p.expect_sha256:
            raise IntegrityError(
                f"{record.id} {entry.version} in registry {info.name} changed since it was "
                "shown to you (another component); nothing was installed; run the update again",
                data={"tool": record.id},
            )
        manifest = entry.checked_manifest()
        current = Grants.from_dict(record.grants)
        requested = requested_grants(manifest, self.defaults)
        more = widening(current, requested, defaults=self.defaults)
        more += secret_widening(Manifest.from_dict(record.manifest).security, manifest.security)
        lines = [w.line() for w in more]
        common: dict[str, Any] = {
            "id": record.id,
            "installed": record.version,
            "available": str(entry.version),
            "sha256": entry.component_sha256,
            "widening": lines,
        }
        if more and not p.approve:
            return ToolUpdate(
                status="needs_consent",
                message=f"{record.id} {entry.version} asks for more than it is granted; "
                "nothing was installed; review and approve with --yes",
                **common,
            )
        grants = widen(current, requested, defaults=self.defaults) if more else current
        await self.install_entry(
            entry,
            registry=info.name,
            wanted=origin.wanted,
            approve=True,
            allow_downgrade=False,
            progress=progress,
            peer=peer,
            grants=grants,
        )
        return ToolUpdate(status="updated", **common)

    async def tools_outdated(self, _p: OutdatedToolsParams, _ctx: RequestContext) -> Any:
        records = await self.io(self.store.list)
        pins = await self.io(self.store.supply.pins)
        indexes: dict[str, Any] = {}
        rows = []
        for record in records:
            origin = await self.origin(record.id)
            pin = pins.get(record.id)
            base = {"id": record.id, "installed": record.version, "pinned": pin is not None}
            if origin is None or origin.registry is None or origin.sha256 != record.sha256:
                rows.append(OutdatedTool(status="local", constraint=pin or "*", **base))
                continue
            constraint = pin or origin.wanted
            base.update(registry=origin.registry, constraint=constraint)
            if origin.registry not in indexes:
                try:
                    indexes[origin.registry] = await self.index(
                        await self.registry(origin.registry)
                    )
                except KamiError as exc:
                    indexes[origin.registry] = exc
            index = indexes[origin.registry]
            if isinstance(index, KamiError):
                rows.append(OutdatedTool(status="unknown", message=index.message, **base))
                continue
            tool = index.tools.get(record.id)
            if tool is None:
                rows.append(
                    OutdatedTool(status="unknown", message="no longer in the registry", **base)
                )
                continue
            installed = Version.parse(record.version)
            best = tool.best(VersionRange.parse(constraint))
            newest = tool.newest()
            if best is not None and best.version > installed:
                status = "outdated"
            elif newest is not None and newest.version > installed:
                status = "held"
            else:
                status = "current"
            rows.append(
                OutdatedTool(
                    newest_matching=str(best.version) if best else None,
                    newest=str(newest.version) if newest else None,
                    status=status,
                    **base,
                )
            )
        return OutdatedToolsResult(tools=rows)

    async def tools_pin(self, p: PinToolParams, ctx: RequestContext) -> Any:
        _operator(ctx, "tools.pin")
        record = await self.io(self.store.resolve, p.tool)
        pin: str | None = None
        if not p.remove:
            pin = p.version.strip() if p.version else record.version
            try:
                VersionRange.parse(pin)
            except ValueError as exc:
                raise InvalidParams(f"tools.pin: {exc}") from exc
        elif p.version:
            raise InvalidParams("tools.pin: give a version or remove, not both")
        if not await self.io(self.store.supply.set_pin, record.id, pin):
            raise NotFound(f"{record.id} was uninstalled meanwhile")
        return PinToolResult(tool=record.id, installed=record.version, pin=pin)

    async def tools_verify(self, p: VerifyToolParams, _ctx: RequestContext) -> Any:
        if (p.tool is None) == (p.package is None):
            raise InvalidParams("tools.verify: give a tool or a package (one of them)")
        trust = await self.trust()
        if p.package is not None:

            async def quiet(*_a: Any, **_k: Any) -> None:
                return None

            data, source = await self.obtain(p.package, quiet)
            package = await self.read(data, source)
            return self._verdict(
                package.signature,
                package.content(),
                source=source,
                trust_get=trust.get,
                details={"package_sha256": hashlib.sha256(data).hexdigest()},
            )
        record = await self.io(self.store.resolve, p.tool)
        await self.io(self.store.verify_blob, record.sha256)  # the component as installed
        origin = await self.origin(record.id)
        on_record = (
            origin is not None
            and origin.sha256 == record.sha256
            and origin.manifest_digest == manifest_digest(record.manifest)
        )
        signature = None
        if on_record and origin is not None and origin.signature is not None:
            signature = ToolSignature.from_json(json.loads(origin.signature), source=record.id)
        source = origin.source if origin is not None else ""
        if signature is None:
            return VerifyToolResult(
                id=record.id,
                version=record.version,
                component_sha256=record.sha256,
                signed=False,
                valid=False,
                trusted=False,
                message=f"{record.id} {record.version} was installed without a signature "
                "(its component matches what was installed)",
                source=source,
            )
        # tool.toml and the assets were checked against it at install; the component is
        # re-hashed above, so this re-checks the signature over the bytes that run.
        actual = SignedContent(
            tool=record.id,
            version=record.version,
            manifest_sha256=signature.content.manifest_sha256,
            component_sha256=record.sha256,
            assets_sha256=signature.content.assets_sha256,
        )
        result = self._verdict(signature, actual, source=record.id, trust_get=trust.get)
        return attrs.evolve(result, source=source)

    def _verdict(
        self,
        signature: ToolSignature | None,
        actual: SignedContent,
        *,
        source: str,
        trust_get: Any,
        details: dict[str, Any] | None = None,
    ) -> VerifyToolResult:
        base: dict[str, Any] = {
            "id": actual.tool,
            "version": actual.version,
            "component_sha256": actual.component_sha256,
            "details": details or {},
        }
        if signature is None:
            return VerifyToolResult(
                signed=False,
                valid=False,
                trusted=False,
                message=f"{actual.tool} {actual.version} is not signed",
                **base,
            )
        try:
            check_signature(signature, actual, source=source)
        except IntegrityError as exc:
            return VerifyToolResult(
                signed=True, valid=False, trusted=False, message=exc.message, **base
            )
        row = trust_get(signature.key_id)
        trusted = row is not None and row.public_key == signature.public_key
        signer = SignerInfo(
            key_id=signature.key_id, name=row.name if row else None, trusted=trusted
        )
        who = f"key {signature.key_id}" + (f" ({row.name})" if row and row.name else "")
        message = f"{actual.tool} {actual.version}: valid signature by {who}, " + (
            "which is trusted" if trusted else "which is NOT in the trust store"
        )
        return VerifyToolResult(
            signed=True, valid=True, trusted=trusted, signer=signer, message=message, **base
        )

    # trust.*

    async def trust_add(self, p: AddTrustParams, ctx: RequestContext) -> Any:
        _operator(ctx, "trust.add")
        try:
            raw = decode_public_key(p.public_key)
        except ValueError as exc:
            raise InvalidParams(f"trust.add: {exc}") from exc
        key_id = key_id_of(raw)
        row, changed = await self.io(
            self.store.supply.add_key, key_id, encode_public_key(raw), p.name.strip()
        )
        (await self.trust()).add(row)
        return TrustKeyResult(key=_key(row), changed=changed, tools=await self._signed_by(key_id))

    async def trust_list(self, _p: ListTrustParams, _ctx: RequestContext) -> Any:
        rows = await self.io(self.store.supply.keys)
        return ListTrustResult(
            keys=[_key(r) for r in rows], require_signatures=self.settings.require_signatures
        )

    async def trust_remove(self, p: RemoveTrustParams, ctx: RequestContext) -> Any:
        _operator(ctx, "trust.remove")
        wanted = p.key.strip()
        if len(wanted) != 16:
            try:
                wanted = key_id_of(decode_public_key(wanted))
            except ValueError as exc:
                raise InvalidParams(
                    f"trust.remove: {p.key!r} is neither a key id (16 hex digits) nor a public "
                    "key; `kamictl trust list` shows the trusted keys"
                ) from exc
        row = await self.io(self.store.supply.remove_key, wanted)
        if row is None:
            raise NotFound(
                f"key {wanted} is not trusted; `kamictl trust list` shows the trusted keys"
            )
        (await self.trust()).remove(row.key_id)
        return TrustKeyResult(key=_key(row), changed=True, tools=await self._signed_by(row.key_id))

    async def _signed_by(self, key_id: str) -> list[str]:
        origins = await self.io(self.store.supply.origins)
        return sorted(o.tool_id for o in origins.values() if o.signer == key_id)
