"""The wire contract between kamid and its clients.

Importable without trio, wasmtime, apsw or rich: ``kamictl`` imports only this package.
"""

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
from ._messages import *  # noqa: F403
from ._messages import __all__ as _messages_all
from ._methods import METHODS, NOTIFICATIONS, MethodSpec
from ._paths import MAX_SOCKET_PATH, Paths

PROTOCOL_VERSION = "0.1"

__all__ = [
    "DEFAULT_MAX_FRAME",
    "MANIFEST_NAME",
    "MAX_SOCKET_PATH",
    "METHODS",
    "NOTIFICATIONS",
    "PROTOCOL_VERSION",
    "Argument",
    "BuildSpec",
    "FrameTooLarge",
    "FsGrant",
    "Grants",
    "LineBuffer",
    "Manifest",
    "MethodSpec",
    "NetGrant",
    "NetRequest",
    "Paths",
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
    "parse_manifest",
    "structure_params",
    *_errors_all,
    *_messages_all,
]
