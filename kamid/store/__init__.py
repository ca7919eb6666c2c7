"""The tool store: installed tools, content-addressed blobs and the AOT cache index.

Backed by SQLite through apsw; :mod:`kamid.store._db` is the only module in KAMI that
imports apsw.
"""

from ._blobs import BlobRef
from ._mcp import McpTables, ProfileRow
from ._records import InstallOutcome, ToolRecord, ToolVersion
from ._security import AuditRow, SecurityTables
from ._store import Store
from ._supply import KeyRow, OriginRow, RegistryRow, SupplyTables

__all__ = [
    "AuditRow",
    "BlobRef",
    "InstallOutcome",
    "KeyRow",
    "McpTables",
    "OriginRow",
    "ProfileRow",
    "RegistryRow",
    "SecurityTables",
    "Store",
    "SupplyTables",
    "ToolRecord",
    "ToolVersion",
]
