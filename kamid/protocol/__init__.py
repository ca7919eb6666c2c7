"""The wire contract between kamid and its clients.

Importable without trio, wasmtime, apsw or rich: ``kamictl`` imports only this package.
"""

from . import _mcp as mcp
from ._convert import (
    converter,
    make_error,
    make_notification,
    make_request,
    make_result,
    structure_params,
)
from ._errors import *  # noqa: F403
from ._errors import __all__ as _errors_all
from ._framing import DEFAULT_MAX_FRAME, FrameTooLarge, LineBuffer, decode_frame, encode_frame
from ._grants import FsGrant, Grants, NetGrant, grants_from_requests
from ._manifest import (
    MANIFEST_NAME,
    Argument,
    BuildSpec,
    Manifest,
    NetRequest,
    SecurityRequests,
    ToolSection,
    load_manifest,
    parse_manifest,
)
from ._mcp import AttachMcpParams, AttachMcpResult, ListenSpec
from ._messages import *  # noqa: F403
from ._messages import __all__ as _messages_all
from ._methods import METHODS, NOTIFICATIONS, MethodSpec
from ._metrics import *  # noqa: F403
from ._metrics import __all__ as _metrics_all
from ._netrules import *  # noqa: F403
from ._netrules import __all__ as _netrules_all
from ._package import *  # noqa: F403
from ._package import __all__ as _package_all
from ._paths import MAX_SOCKET_PATH, Paths
from ._profiles import *  # noqa: F403
from ._profiles import __all__ as _profiles_all
from ._prompts import PromptArgument, PromptSpec, render_prompt
from ._registry import *  # noqa: F403
from ._registry import __all__ as _registry_all
from ._secrets import *  # noqa: F403
from ._secrets import __all__ as _secrets_all
from ._security import *  # noqa: F403
from ._security import __all__ as _security_all
from ._semver import Version, VersionRange, parse_ref
from ._signing import *  # noqa: F403
from ._signing import __all__ as _signing_all

PROTOCOL_VERSION = "0.1"

__all__ = [
    "DEFAULT_MAX_FRAME",
    "MANIFEST_NAME",
    "MAX_SOCKET_PATH",
    "METHODS",
    "NOTIFICATIONS",
    "PROTOCOL_VERSION",
    "Argument",
    "AttachMcpParams",
    "AttachMcpResult",
    "BuildSpec",
    "FrameTooLarge",
    "FsGrant",
    "Grants",
    "LineBuffer",
    "ListenSpec",
    "Manifest",
    "MethodSpec",
    "NetGrant",
    "NetRequest",
    "Paths",
    "PromptArgument",
    "PromptSpec",
    "SecurityRequests",
    "ToolSection",
    "converter",
    "decode_frame",
    "encode_frame",
    "grants_from_requests",
    "load_manifest",
    "make_error",
    "make_notification",
    "make_request",
    "make_result",
    "mcp",
    "parse_manifest",
    "render_prompt",
    "structure_params",
    *_errors_all,
    *_messages_all,
    *_netrules_all,
    *_secrets_all,
    *_security_all,
    *_metrics_all,
    *_package_all,
    *_registry_all,
    *_signing_all,
    "Version",
    "VersionRange",
    "parse_ref",
    *_profiles_all,
]
