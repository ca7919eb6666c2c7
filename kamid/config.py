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
    pooling = true
    keep_resident_mb = 16
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import cattrs
import tomlkit
import tomlkit.exceptions

from kamid.netpolicy import NetLimits
from kamid.protocol import DEFAULT_MAX_FRAME, InvalidParams
from kamid.registry import SupplyChainConfig
from kamid.sandbox import CEILINGS, Limits, check_ceilings
from kamid.scheduler import SchedulerConfig

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DaemonConfig", "EngineConfig", "MetricsConfig", "ServerConfig", "load_config"]


def _linger(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1000:
        raise ValueError(f"{attribute.name} must be a number of ms from 0 to 1000 (got {value})")


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
    #: Peers whose (primary) gid is one of these may connect too. Operator methods
    #: (grant, revoke, audit) stay reserved to the daemon's own uid.
    allowed_gids: tuple[int, ...] = ()
    #: How long a call thread keeps a connection after answering, for its next call of
    #: the same tool (``kamid.server.ConnectionLease``); 0 turns leases off.
    lease_linger_ms: float = attrs.field(default=2.0, validator=_linger)


def _mebibytes(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 4096:
        raise ValueError(f"{attribute.name} must be a number of MiB from 0 to 4096 (got {value})")


@attrs.frozen(kw_only=True)
class EngineConfig:
    lru_capacity: int = 32
    #: Worker threads running wasm; measured: more than the core count does not help.
    workers: int = 2
    tick_ms: int = 10
    #: Run calls in this many worker processes instead of threads (0: threads).
    process_workers: int = 0
    #: wasmtime's pooling allocator: memory slots reserved once and kept mapped between
    #: calls (docs/operators.md, "Engine memory"). Off: fresh mappings for every call.
    pooling: bool = True
    #: With pooling: MiB at the start of each linear memory kept mapped between calls
    #: and reset by copying; a tool whose memory fits takes no page faults.
    keep_resident_mb: int = attrs.field(default=16, validator=_mebibytes)


@attrs.frozen(kw_only=True)
class MetricsConfig:
    #: ``host:port`` to serve /metrics, /health and /ready on ("": off); the
    #: ``--metrics-listen`` option overrides it.
    listen: str = ""


@attrs.frozen(kw_only=True)
class DaemonConfig:
    server: ServerConfig = attrs.Factory(ServerConfig)
    engine: EngineConfig = attrs.Factory(EngineConfig)
    limits: Limits = attrs.Factory(Limits)
    #: The most any tool may get, whatever its manifest, approval or grants say.
    ceilings: Limits = attrs.Factory(lambda: CEILINGS)
    scheduler: SchedulerConfig = attrs.Factory(SchedulerConfig)
    metrics: MetricsConfig = attrs.Factory(MetricsConfig)
    #: Per-call limits of kami:tool/http (docs/network.md).
    net: NetLimits = attrs.Factory(NetLimits)
    #: Registries, packages and signatures (docs/supply-chain.md).
    supply_chain: SupplyChainConfig = attrs.Factory(SupplyChainConfig)


_converter = cattrs.Converter(forbid_extra_keys=True)


def _describe(exc: BaseException, type_: type | None) -> str:
    # A validator's ValueError says what is wrong ("max_queue must be a number >= 0");
    # cattrs' default words it as a bare "invalid value".
    if type(exc) is ValueError and str(exc):
        return f"invalid value ({exc})"
    return cattrs.v.format_exception(exc, type_)


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
        if isinstance(raw.get("ceilings"), dict):
            # Keys left out keep the built-in ceilings, not the (lower) default limits.
            raw["ceilings"] = {**attrs.asdict(CEILINGS), **raw["ceilings"]}
        config = _converter.structure(raw, DaemonConfig)
    except tomlkit.exceptions.ParseError as exc:
        raise InvalidParams(f"{path}: not valid TOML: {exc}") from exc
    except cattrs.BaseValidationError as exc:
        errors = cattrs.transform_error(exc, path=path.name, format_exception=_describe)
        raise InvalidParams(f"{path}: " + "; ".join(errors), data={"errors": errors}) from exc
    if problems := check_ceilings(config.limits, config.ceilings):
        raise InvalidParams(f"{path}: " + "; ".join(problems), data={"errors": problems})
    return config
