"""Where a daemon keeps its state: one place for the daemon and every client to agree on.

``KAMI_HOME`` puts everything under one directory (tests, side-by-side daemons). Without it,
KAMI follows the XDG base directories.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

__all__ = ["MAX_SOCKET_PATH", "Paths"]

#: sun_path is 108 bytes on Linux and 104 on macOS; stay under both.
MAX_SOCKET_PATH = 100


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value and os.path.isabs(value) else Path.home() / default


class Paths(NamedTuple):
    """Where one daemon's files are; built with :meth:`under` or :meth:`from_env`.

    A NamedTuple rather than an attrs class: it is what ``kamictl exec`` needs from this
    package, and importing attrs would add a third to that command's start-up time.
    """

    #: Database, blobs, per-tool data.
    data: Path
    #: The AOT cache: native code, safe to delete.
    cache: Path
    #: Socket, lock and pid file.
    run: Path
    logs: Path
    config_file: Path

    @classmethod
    def under(cls, home: Path) -> Paths:
        home = home.absolute()
        return cls(
            data=home / "data",
            cache=home / "cache",
            run=home / "run",
            logs=home / "logs",
            config_file=home / "kamid.toml",
        )

    @classmethod
    def from_env(cls) -> Paths:
        """``KAMI_HOME`` if set, else the XDG directories."""
        home = os.environ.get("KAMI_HOME")
        if home:
            return cls.under(Path(home).expanduser())
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        state = _xdg("XDG_STATE_HOME", ".local/state") / "kami"
        return cls(
            data=_xdg("XDG_DATA_HOME", ".local/share") / "kami",
            cache=_xdg("XDG_CACHE_HOME", ".cache") / "kami",
            run=Path(runtime) / "kami" if runtime else state / "run",
            logs=state / "logs",
            config_file=_xdg("XDG_CONFIG_HOME", ".config") / "kami" / "kamid.toml",
        )

    @property
    def socket(self) -> Path:
        return self.run / "kamid.sock"

    @property
    def lock_file(self) -> Path:
        return self.run / "kamid.lock"

    @property
    def pid_file(self) -> Path:
        return self.run / "kamid.pid"

    @property
    def database(self) -> Path:
        return self.data / "kami.db"

    @property
    def blobs(self) -> Path:
        return self.data / "blobs"

    @property
    def aot(self) -> Path:
        return self.cache / "aot"

    @property
    def daemon_log(self) -> Path:
        return self.logs / "kamid.log"

    @property
    def tool_logs(self) -> Path:
        return self.logs / "tools"
