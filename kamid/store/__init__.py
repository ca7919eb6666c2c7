"""The tool store: installed tools, content-addressed blobs and the AOT cache index.

Backed by SQLite through apsw; :mod:`kamid.store._db` is the only module in KAMI that
imports apsw.
"""

from ._blobs import BlobRef
from ._records import InstallOutcome, ToolRecord, ToolVersion
from ._store import Store

__all__ = ["BlobRef", "InstallOutcome", "Store", "ToolRecord", "ToolVersion"]
