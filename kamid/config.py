"""The daemon's own settings, read from ``kamid.toml`` in the config location.

Everything has a default; the file only needs what an operator wants to change::

    [server]
    max_connections = 256
    max_frame_bytes = 16777216
    idle_timeout_s = 300
    grace_s = 10

    [engine]
    lru_capacity = 32
    workers = 2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import cattrs
import tomlkit
import tomlkit.exceptions

from kamid.protocol import DEFAULT_MAX_FRAME, InvalidParams
from kamid.sandbox import Limits

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DaemonConfig", "EngineConfig", "ServerConfig", "load_config"]


@attrs.frozen(kw_only=True)
class ServerConfig:
    max_connections: int = 256
    max_frame_bytes: int = DEFAULT_MAX_FRAME
    #: A connection with no request in flight and none arriving is closed after this.
    idle_timeout_s: float = 300.0
    #: Once a frame has started, the rest of it must arrive within this (slow clients).
    frame_timeout_s: float = 30.0
    #: How long ``daemon.stop`` and SIGTERM let in-flight calls finish.
    grace_s: float = 10.0
    #: Peers other than the daemon's own uid that may connect.
    allowed_uids: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class EngineConfig:
    lru_capacity: int = 32
    #: Worker threads running wasm; measured: more than the core count does not help.
    workers: int = 2
    tick_ms: int = 10


@attrs.frozen(kw_only=True)
class DaemonConfig:
    server: ServerConfig = attrs.Factory(ServerConfig)
    engine: EngineConfig = attrs.Factory(EngineConfig)
    limits: Limits = attrs.Factory(Limits)


_converter = cattrs.Converter(forbid_extra_keys=True)


def load_config(path: Path) -> DaemonConfig:
    """Reads the config file; a missing file means all defaults.

    Raises:
        InvalidParams: the file is not TOML or has unknown keys or wrong types; the message
            names the file and the keys.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DaemonConfig()
    try:
        raw: dict[str, Any] = tomlkit.parse(text).unwrap()
        return _converter.structure(raw, DaemonConfig)
    except tomlkit.exceptions.ParseError as exc:
        raise InvalidParams(f"{path}: not valid TOML: {exc}") from exc
    except cattrs.BaseValidationError as exc:
        errors = cattrs.transform_error(exc, path=path.name)
        raise InvalidParams(f"{path}: " + "; ".join(errors), data={"errors": errors}) from exc
