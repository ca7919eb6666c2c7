"""Per-tool log files (``logs/tools/<id>.log``): appended by every call that logs.

Opening and closing a file per call cost ~50 µs here, on the path of the answer; the
files stay open instead (at most :data:`MAX_OPEN`), appended with one ``write`` each.
A file that was rotated or deleted behind the daemon's back (its path no longer names
the open file) is reopened, so ``logrotate`` without ``copytruncate`` works too. That is
checked at most every :data:`RECHECK_S` per file: a ``stat`` on every call was ~10 µs
of the answer's path, so lines written in the second after a rotation may still go to the
old file.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MAX_OPEN", "ToolLogs"]

#: Log files kept open; the least recently written one is closed beyond.
MAX_OPEN = 64
#: Seconds between two checks that an open file's path still names it.
RECHECK_S = 1.0


class _Open:
    __slots__ = ("checked", "fd", "inode")

    def __init__(self, fd: int, inode: int) -> None:
        self.fd = fd
        self.inode = inode
        self.checked = time.monotonic()


class ToolLogs:
    """Appends text to a tool's log file; thread-safe.

    Args:
        directory: where the files are (created 0700 on first use).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        # tool id -> its open file
        self._open: collections.OrderedDict[str, _Open] = collections.OrderedDict()

    def path(self, tool_id: str) -> Path:
        return self.directory / f"{tool_id}.log"

    def append(self, tool_id: str, text: str) -> None:
        """Appends ``text`` (whole lines) to the tool's log.

        Raises:
            OSError: the file cannot be opened or written.
        """
        data = text.encode("utf-8", "replace")
        with self._lock:
            entry = self._open.get(tool_id)
            now = time.monotonic()
            if entry is not None and now - entry.checked >= RECHECK_S:
                try:
                    current = os.stat(self.path(tool_id)).st_ino
                except FileNotFoundError:
                    current = -1
                if current != entry.inode:
                    self._close(tool_id)
                    entry = None
                else:
                    entry.checked = now
            if entry is None:
                entry = self._open_file(tool_id)
            self._open.move_to_end(tool_id)
            os.write(entry.fd, data)

    def close(self) -> None:
        """Closes every open file (the next append reopens)."""
        with self._lock:
            for tool_id in list(self._open):
                self._close(tool_id)

    def _open_file(self, tool_id: str) -> _Open:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(
            self.path(tool_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        entry = _Open(fd, os.fstat(fd).st_ino)
        self._open[tool_id] = entry
        while len(self._open) > MAX_OPEN:
            self._close(next(iter(self._open)))
        return entry

    def _close(self, tool_id: str) -> None:
        entry = self._open.pop(tool_id)
        with contextlib.suppress(OSError):
            os.close(entry.fd)
