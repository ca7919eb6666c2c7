"""Registries, packages, signatures and trust: how tools get into the daemon safely.

See docs/supply-chain.md. :class:`SupplyService` is what the daemon's service holds;
:mod:`._consent` is the pure grants diff behind consent on update.
"""

from ._config import SupplyChainConfig
from ._consent import Widening, requested_grants, secret_widening, widen, widening
from ._core import Progress, Provenance, directory_provenance
from ._service import SupplyService

__all__ = [
    "Progress",
    "Provenance",
    "SupplyChainConfig",
    "SupplyService",
    "Widening",
    "directory_provenance",
    "requested_grants",
    "secret_widening",
    "widen",
    "widening",
]
