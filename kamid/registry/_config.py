"""``[supply_chain]`` in kamid.toml."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["SupplyChainConfig"]


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attr.name} must be a positive number (got {value!r})")


@attrs.frozen(kw_only=True)
class SupplyChainConfig:
    """Where tools come from and what vouches for them::

    [supply_chain]
    require_signatures = true
    default_registry = "https://tools.example.org/index.json"
    """

    #: Refuse tools that are unsigned or signed by a key the trust store does not hold,
    #: at install and at every exec (tools installed earlier included).
    require_signatures: bool = False
    #: The index of the registry named ``default`` (https://, http:// or file:///);
    #: empty: no default, only registries added with ``kamictl registry add``.
    default_registry: str = ""
    #: The largest package kamid downloads or reads, and the most it may unpack to.
    max_package_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=_positive)
    #: Connect/read timeout of each registry or artifact request.
    download_timeout_s: float = attrs.field(default=60.0, validator=_positive)
