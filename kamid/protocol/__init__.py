"""The wire contract between kamid and its clients.

Importable without trio, wasmtime, apsw or rich: ``kamictl`` imports only this package.

Each name is imported from its module on first use (PEP 562), so ``kamictl exec``, which
needs the framing, the errors and :class:`Paths`, does not pay for every message type, the
manifest parser, cattrs and tomlkit on each start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import _mcp as mcp
    from ._convert import *  # noqa: F403
    from ._envelope import *  # noqa: F403
    from ._errors import *  # noqa: F403
    from ._framing import *  # noqa: F403
    from ._grants import *  # noqa: F403
    from ._manifest import *  # noqa: F403
    from ._mcp import AttachMcpParams as AttachMcpParams
    from ._mcp import AttachMcpResult as AttachMcpResult
    from ._mcp import ListenSpec as ListenSpec
    from ._messages import *  # noqa: F403
    from ._methods import *  # noqa: F403
    from ._metrics import *  # noqa: F403
    from ._netrules import *  # noqa: F403
    from ._package import *  # noqa: F403
    from ._paths import *  # noqa: F403
    from ._profiles import *  # noqa: F403
    from ._prompts import PromptArgument as PromptArgument
    from ._prompts import PromptSpec as PromptSpec
    from ._prompts import render_prompt as render_prompt
    from ._registry import *  # noqa: F403
    from ._secrets import *  # noqa: F403
    from ._security import *  # noqa: F403
    from ._semver import *  # noqa: F403
    from ._signing import *  # noqa: F403

PROTOCOL_VERSION = "0.1"

#: The module that defines each public name, so that a name imports only its own module.
#: For every module imported with ``*`` above it repeats the module's ``__all__`` (the
#: source); for _mcp and _prompts it names the few exported here. tests/protocol checks
#: that the three agree.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "_convert": (
        "converter",
        "structure_params",
    ),
    "_envelope": (
        "make_error",
        "make_notification",
        "make_request",
        "make_result",
    ),
    "_errors": (
        "Busy",
        "Cancelled",
        "DaemonUnreachable",
        "IntegrityError",
        "InternalError",
        "InvalidParams",
        "InvalidRequest",
        "InvalidTool",
        "KamiError",
        "LimitExceeded",
        "MethodNotFound",
        "NotFound",
        "ParseError",
        "PolicyDenied",
        "RequestTimeout",
        "ShuttingDown",
        "ToolFailed",
        "error_from_wire",
        "error_to_wire",
    ),
    "_framing": (
        "DEFAULT_MAX_FRAME",
        "FrameTooLarge",
        "LineBuffer",
        "decode_frame",
        "encode_frame",
    ),
    "_grants": (
        "FsGrant",
        "Grants",
        "NetGrant",
        "grants_from_requests",
    ),
    "_manifest": (
        "MANIFEST_NAME",
        "Argument",
        "BuildSpec",
        "Manifest",
        "NetRequest",
        "SecurityRequests",
        "ToolSection",
        "load_manifest",
        "parse_manifest",
    ),
    "_mcp": (
        "AttachMcpParams",
        "AttachMcpResult",
        "ListenSpec",
    ),
    "_messages": (
        "CacheStatistics",
        "CallerInfo",
        "DaemonStatusParams",
        "DaemonStatusResult",
        "DaemonStopParams",
        "DaemonStopResult",
        "ExecToolParams",
        "ExecToolResult",
        "InspectToolParams",
        "InspectToolResult",
        "InstallToolParams",
        "InstallToolResult",
        "ListToolsParams",
        "ListToolsResult",
        "LogLine",
        "ProgressParams",
        "RunWasmParams",
        "ToolSummary",
        "UninstallToolParams",
        "UninstallToolResult",
        "Usage",
    ),
    "_methods": (
        "METHODS",
        "NOTIFICATIONS",
        "MethodSpec",
    ),
    "_metrics": (
        "PRIORITIES",
        "ActivityStatistics",
        "GetMetricsParams",
        "GetMetricsResult",
        "Priority",
        "SchedulerStatistics",
        "ToolActivity",
    ),
    "_netrules": (
        "DEFAULT_PORTS",
        "HEADER_NAME",
        "RESERVED_REQUEST_HEADERS",
        "HostRule",
        "IPAddress",
        "IPNetwork",
        "normalize_host",
        "normalize_ip",
        "parse_host_rule",
        "reserved_header",
    ),
    "_package": (
        "COMPONENT_PREAMBLE",
        "MAX_ENTRIES",
        "MAX_PACKAGE_BYTES",
        "PACKAGE_SUFFIX",
        "Package",
        "check_component",
        "component_path",
        "read_package",
        "write_package",
    ),
    "_paths": (
        "MAX_SOCKET_PATH",
        "Paths",
    ),
    "_profiles": (
        "PROFILE_NAME_RE",
        "CreateProfileParams",
        "DeleteProfileParams",
        "DeleteProfileResult",
        "ListProfilesParams",
        "ListProfilesResult",
        "Profile",
    ),
    "_prompts": (
        "PromptArgument",
        "PromptSpec",
        "render_prompt",
    ),
    "_registry": (
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
    ),
    "_secrets": (
        "MAX_SECRET_BYTES",
        "SECRET_NAME",
        "DeleteSecretParams",
        "DeleteSecretResult",
        "ListSecretsParams",
        "ListSecretsResult",
        "SecretInfo",
        "SecretRequest",
        "SetSecretParams",
        "SetSecretResult",
        "placeholder",
    ),
    "_security": (
        "OPERATOR_METHODS",
        "AuditEntry",
        "AuditListParams",
        "AuditListResult",
        "Capability",
        "GetLimitsParams",
        "GrantToolParams",
        "GrantToolResult",
        "LimitsResult",
        "RevokeToolParams",
        "SetLimitsParams",
    ),
    "_semver": (
        "Version",
        "VersionRange",
        "parse_ref",
    ),
    "_signing": (
        "ASSETS_DIR",
        "PAYLOAD_HEADER",
        "SIGNATURE_FILE",
        "SignedContent",
        "ToolSignature",
        "assets_digest",
        "decode_public_key",
        "digest_assets",
        "encode_public_key",
        "key_id_of",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["PROTOCOL_VERSION", "mcp", *_MODULE_OF]


# Hidden from type checkers, which read the imports at the top instead: a module
# __getattr__ would make them take any misspelt name for an Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        # __import__ rather than importlib.import_module: only the former shows in -X importtime.
        if name == "mcp":
            value: Any = __import__(f"{__name__}._mcp", fromlist=["_"])
        elif name in _MODULE_OF:
            value = getattr(__import__(f"{__name__}.{_MODULE_OF[name]}", fromlist=[name]), name)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
