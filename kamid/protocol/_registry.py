"""Wire types of the supply chain: registries, search, updates, pins, trust, verification.

``tools.install`` itself takes a package or a registry reference through
:class:`~kamid.protocol.InstallToolParams`; everything else is here. See
docs/supply-chain.md for what each method checks.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = [
    "REGISTRY_OPERATOR_METHODS",
    "AddRegistryParams",
    "AddRegistryResult",
    "AddTrustParams",
    "ListRegistriesParams",
    "ListRegistriesResult",
    "ListTrustParams",
    "ListTrustResult",
    "OutdatedTool",
    "OutdatedToolsParams",
    "OutdatedToolsResult",
    "PinToolParams",
    "PinToolResult",
    "RegistryInfo",
    "RegistryProblem",
    "RemoveRegistryParams",
    "RemoveRegistryResult",
    "RemoveTrustParams",
    "SearchHit",
    "SearchRegistryParams",
    "SearchRegistryResult",
    "SignerInfo",
    "ToolUpdate",
    "TrustKeyResult",
    "TrustedKey",
    "UpdateStatus",
    "UpdateToolsParams",
    "UpdateToolsResult",
    "VerifyToolParams",
    "VerifyToolResult",
]

#: Methods that change where tools come from or whom they are trusted from: only the
#: daemon's own uid should reach them (like grant and revoke), never an MCP session.
REGISTRY_OPERATOR_METHODS = frozenset(
    {"registry.add", "registry.remove", "trust.add", "trust.remove", "tools.update", "tools.pin"}
)


@attrs.frozen(kw_only=True)
class SignerInfo:
    """Who signed an installed tool (the signature was verified at install)."""

    key_id: str
    #: The name the operator gave the key in the trust store, if it is there.
    name: str | None = None
    #: Whether the key is in the trust store now.
    trusted: bool = False


# registry.*
@attrs.frozen(kw_only=True)
class RegistryInfo:
    name: str
    #: The index: ``https://…/index.json``, ``http://…`` or ``file:///…``.
    url: str
    #: ``config``: ``[supply_chain].default_registry`` in kamid.toml; ``operator``: added
    #: with ``registry.add``.
    source: Literal["config", "operator"] = "operator"
    added_at: float | None = None


@attrs.frozen(kw_only=True)
class ListRegistriesParams:
    pass


@attrs.frozen(kw_only=True)
class ListRegistriesResult:
    registries: list[RegistryInfo]


@attrs.frozen(kw_only=True)
class AddRegistryParams:
    #: Lower case letters, digits, ``.``, ``_`` and ``-``.
    name: str
    url: str


@attrs.frozen(kw_only=True)
class AddRegistryResult:
    registry: RegistryInfo
    #: Tools the index lists (it is fetched and checked before it is added).
    tools: int


@attrs.frozen(kw_only=True)
class RemoveRegistryParams:
    name: str


@attrs.frozen(kw_only=True)
class RemoveRegistryResult:
    name: str
    url: str


@attrs.frozen(kw_only=True)
class SearchRegistryParams:
    #: Words matched (case-insensitively) against id, name, description and tags; all
    #: must match. Empty: every tool.
    query: str = ""
    category: str | None = None
    tag: str | None = None
    #: Only this registry (default: all of them).
    registry: str | None = None


@attrs.frozen(kw_only=True)
class SearchHit:
    registry: str
    id: str
    name: str
    description: str
    #: The newest version (pre-releases only when there is nothing else).
    version: str
    versions: int
    categories: list[str] = attrs.Factory(list)
    tags: list[str] = attrs.Factory(list)
    #: Key id that signed the newest version, and whether the trust store holds it.
    signer: str | None = None
    trusted: bool = False
    #: The installed version, if this tool is installed.
    installed: str | None = None


@attrs.frozen(kw_only=True)
class RegistryProblem:
    registry: str
    message: str


@attrs.frozen(kw_only=True)
class SearchRegistryResult:
    hits: list[SearchHit]
    #: Registries that could not be read (the others were still searched).
    problems: list[RegistryProblem] = attrs.Factory(list)


# tools.update / tools.pin / tools.outdated
UpdateStatus = Literal["updated", "current", "held", "needs_consent", "skipped", "failed"]


@attrs.frozen(kw_only=True)
class UpdateToolsParams:
    #: Tool id or unique name; or set ``all``.
    tool: str | None = None
    all: bool = False
    #: Accept updates whose manifest asks for more than the installed grants (``--yes``).
    approve: bool = False
    #: Update to exactly this version (it must satisfy the pin); default: the newest match.
    version: str | None = None
    #: Refuse unless the chosen version's component has this sha256 (what was approved).
    expect_sha256: str | None = None
    progress_token: str | None = None


@attrs.frozen(kw_only=True)
class ToolUpdate:
    id: str
    #: ``updated``; ``current`` (nothing newer matches); ``held`` (newer exists outside
    #: the pin or range); ``needs_consent`` (it asks for more: see ``widening``, nothing was
    #: installed); ``skipped`` (not installed from a registry); ``failed`` (see message).
    status: UpdateStatus
    installed: str
    #: The version it was updated to, or would be.
    available: str | None = None
    message: str = ""
    #: What the new version asks for beyond the installed grants, one line each.
    widening: list[str] = attrs.Factory(list)
    #: sha256 of the new version's component (pass it back as ``expect_sha256``).
    sha256: str | None = None


@attrs.frozen(kw_only=True)
class UpdateToolsResult:
    updates: list[ToolUpdate]


@attrs.frozen(kw_only=True)
class PinToolParams:
    tool: str
    #: A version or range (``1.2.3``, ``^1.2``); default: the installed version.
    version: str | None = None
    #: Remove the pin instead.
    remove: bool = False


@attrs.frozen(kw_only=True)
class PinToolResult:
    tool: str
    installed: str
    #: The pin now in force (None: not pinned).
    pin: str | None


@attrs.frozen(kw_only=True)
class OutdatedToolsParams:
    pass


@attrs.frozen(kw_only=True)
class OutdatedTool:
    id: str
    installed: str
    #: Where it updates from (None: installed from a directory or a package).
    registry: str | None = None
    #: The range updates stay within: the pin, else the range it was installed with.
    constraint: str = "*"
    pinned: bool = False
    newest_matching: str | None = None
    newest: str | None = None
    #: ``outdated``, ``current``, ``held`` (newer only outside the constraint), ``local``
    #: (not from a registry) or ``unknown`` (see message).
    status: str = "current"
    message: str = ""


@attrs.frozen(kw_only=True)
class OutdatedToolsResult:
    tools: list[OutdatedTool]


# trust.*
@attrs.frozen(kw_only=True)
class TrustedKey:
    key_id: str
    #: ``ed25519:BASE64``.
    public_key: str
    name: str = ""
    added_at: float = 0.0


@attrs.frozen(kw_only=True)
class AddTrustParams:
    #: ``ed25519:BASE64`` as ``kamictl keygen`` prints it.
    public_key: str
    name: str = ""


@attrs.frozen(kw_only=True)
class RemoveTrustParams:
    #: The key id or the public key.
    key: str


@attrs.frozen(kw_only=True)
class TrustKeyResult:
    key: TrustedKey
    #: False when adding a key already trusted.
    changed: bool = True
    #: Installed tools signed by this key.
    tools: list[str] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class ListTrustParams:
    pass


@attrs.frozen(kw_only=True)
class ListTrustResult:
    keys: list[TrustedKey]
    #: Whether ``[supply_chain].require_signatures`` is on.
    require_signatures: bool = False


# tools.verify
@attrs.frozen(kw_only=True)
class VerifyToolParams:
    #: An installed tool (id or unique name); or ``package``.
    tool: str | None = None
    #: A ``.kami`` file (absolute path) or an http(s)/file URL.
    package: str | None = None


@attrs.frozen(kw_only=True)
class VerifyToolResult:
    id: str
    version: str
    component_sha256: str
    signed: bool
    #: The signature matches the bytes (always False when unsigned).
    valid: bool
    trusted: bool
    signer: SignerInfo | None = None
    #: One sentence: what was checked and what it means.
    message: str = ""
    #: For an installed tool: where it came from.
    source: str = ""
    details: dict[str, Any] = attrs.Factory(dict)
