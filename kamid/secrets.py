"""Secrets the operator stores for tools, and the ``secrets.*`` wire methods.

Values live in one file per tool, ``<data>/secrets/<tool id>.json``, mode 0600 in a 0700
directory, written atomically (temporary file, fsync, rename). Files rather than a store
table: a deleted value is gone with its file instead of lingering in SQLite's free pages
and write-ahead log. The daemon is their only reader and writer; it loads them at start
and keeps them in memory.

A value is never logged, never put in an error message or the audit log, and never sent
back: ``secrets.list`` answers names only. It leaves the daemon only as the header a
manifest's ``[[security.secrets]]`` binds it to, on requests to the hosts named there
(see :mod:`kamid.hostapi._http`). Uninstalling a tool deletes its secrets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from kamid.protocol import (
    MAX_SECRET_BYTES,
    SECRET_NAME,
    DeleteSecretParams,
    DeleteSecretResult,
    InternalError,
    InvalidParams,
    ListSecretsParams,
    ListSecretsResult,
    Manifest,
    NotFound,
    PolicyDenied,
    SecretInfo,
    SetSecretParams,
    SetSecretResult,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from kamid.dispatch import Handler
    from kamid.server import RequestContext
    from kamid.store import Store, ToolRecord

__all__ = ["SecretStore", "Secrets", "check_value"]

log = logging.getLogger("kamid.secrets")

_TOOL_ID = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")


def check_value(name: str, value: str) -> None:
    """Refuses a value that cannot go into a header, without ever quoting it.

    Raises:
        InvalidParams: empty, too long, or not printable ASCII.
    """
    if not value:
        raise InvalidParams(f"secret {name}: the value is empty; nothing was stored")
    if len(value) > MAX_SECRET_BYTES:
        raise InvalidParams(
            f"secret {name}: the value is {len(value)} characters, more than "
            f"{MAX_SECRET_BYTES}; nothing was stored"
        )
    if not _PRINTABLE.match(value):
        raise InvalidParams(
            f"secret {name}: the value has characters other than printable ASCII (a line "
            "break, a tab, a control or non-ASCII character); it is sent in an HTTP header, "
            "so it cannot contain them. Nothing was stored (a trailing newline from stdin "
            "is removed by kamictl; check for others)"
        )
    if value != value.strip():
        raise InvalidParams(
            f"secret {name}: the value starts or ends with a space, which HTTP would drop; "
            "nothing was stored"
        )


class SecretStore:
    """Secret values by tool and name, in private files. Thread-safe; methods block.

    Args:
        directory: created 0700 when missing.

    Raises:
        InternalError: the directory cannot be created.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        #: tool id -> name -> (value, set_at)
        self._data: dict[str, dict[str, tuple[str, float]]] = {}
        #: tool id -> why its file could not be read (it is then left alone).
        self._broken: dict[str, str] = {}
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        except OSError as exc:
            raise InternalError(
                f"cannot create {directory}: {exc.strerror}; check that kamid's user can write "
                f"{directory.parent}",
                data={"file": str(directory)},
            ) from exc
        for path in sorted(directory.glob("*.json")):
            self._load(path)

    def _load(self, path: Path) -> None:
        tool_id = path.stem
        try:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                os.chmod(path, 0o600)
                log.warning("%s was readable by others (mode %o); made it 0600", path, mode)
            raw = json.loads(path.read_text(encoding="utf-8"))
            secrets = raw["secrets"]
            self._data[tool_id] = {
                str(name): (str(entry["value"]), float(entry["set_at"]))
                for name, entry in secrets.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # The message names the problem, never the content.
            reason = type(exc).__name__ if not isinstance(exc, OSError) else exc.strerror
            self._broken[tool_id] = f"{path} cannot be read ({reason})"
            log.error(
                "%s cannot be read (%s); the secrets of %s are not used until it is fixed "
                "or deleted",
                path,
                reason,
                tool_id,
            )

    def values(self, tool_id: str) -> dict[str, str]:
        """Name -> value for the tool (a copy; empty when it has none)."""
        with self._lock:
            return {name: value for name, (value, _) in self._data.get(tool_id, {}).items()}

    def entries(self, tool_id: str) -> dict[str, float]:
        """Name -> the time it was set, for the tool."""
        with self._lock:
            return {name: at for name, (_, at) in self._data.get(tool_id, {}).items()}

    def tools(self) -> list[str]:
        """Tools with at least one stored secret."""
        with self._lock:
            return sorted(t for t, entries in self._data.items() if entries)

    def set(self, tool_id: str, name: str, value: str) -> bool:
        """Stores a value durably; True when it replaced one.

        Raises:
            InternalError: the file cannot be written, or is damaged (it is left alone).
        """
        with self._lock:
            self._check_writable(tool_id)
            entries = dict(self._data.get(tool_id, {}))
            replaced = name in entries
            entries[name] = (value, time.time())
            self._write(tool_id, entries)
            self._data[tool_id] = entries
        return replaced

    def delete(self, tool_id: str, name: str) -> bool:
        """Removes a value; False when there was none."""
        with self._lock:
            entries = dict(self._data.get(tool_id, {}))
            if name not in entries:
                return False
            self._check_writable(tool_id)
            del entries[name]
            self._write(tool_id, entries)
            self._data[tool_id] = entries
        return True

    def forget(self, tool_id: str) -> int:
        """Deletes every secret of a tool (it was uninstalled); returns how many."""
        with self._lock:
            count = len(self._data.pop(tool_id, {}))
            self._broken.pop(tool_id, None)
            with contextlib.suppress(FileNotFoundError):
                self._path(tool_id).unlink()
        return count

    def _check_writable(self, tool_id: str) -> None:
        if tool_id in self._broken:
            raise InternalError(
                f"{self._broken[tool_id]}; move it aside (its secrets are then lost) and set "
                "them again",
            )

    def _path(self, tool_id: str) -> Path:
        if not _TOOL_ID.match(tool_id):
            raise InvalidParams(f"{tool_id!r} is not a tool id")
        return self.directory / f"{tool_id}.json"

    def _write(self, tool_id: str, entries: dict[str, tuple[str, float]]) -> None:
        path = self._path(tool_id)
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            _fsync_dir(self.directory)
            return
        text = json.dumps(
            {
                "version": 1,
                "secrets": {n: {"value": v, "set_at": at} for n, (v, at) in entries.items()},
            }
        )
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{tool_id}.", suffix=".tmp")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(self.directory)
        except OSError as exc:
            raise InternalError(
                f"cannot write {path}: {exc.strerror}; check free space and that kamid's "
                f"user owns {self.directory}",
                data={"file": str(path)},
            ) from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Secrets:
    """The ``secrets.*`` methods. Only a peer running as kamid's own uid may use them.

    Args:
        directory: where the secret files go.
        store: the tool store (to resolve tool names and read manifests).
        io: runs a blocking function off the trio loop.
    """

    def __init__(
        self,
        *,
        directory: Path,
        store: Store,
        io: Callable[..., Awaitable[Any]],
    ) -> None:
        self.files = SecretStore(directory)
        self._store = store
        self._io = io

    def handlers(self) -> dict[str, Handler]:
        return {
            "secrets.set": self.set,
            "secrets.list": self.list,
            "secrets.delete": self.delete,
        }

    def values(self, tool_id: str) -> dict[str, str]:
        """The tool's values, for its calls (in memory: no I/O)."""
        return self.files.values(tool_id)

    async def forget(self, tool_id: str) -> None:
        """Deletes a tool's secrets (it was uninstalled)."""
        count = await self._io(self.files.forget, tool_id)
        if count:
            log.info("deleted %d secret(s) of uninstalled tool %s", count, tool_id)

    async def set(self, p: SetSecretParams, ctx: RequestContext) -> Any:
        _operator_only(ctx, "secrets.set")
        record = await self._io(self._store.resolve, p.tool)
        declared = _declared(record)
        if p.name not in declared:
            raise InvalidParams(_undeclared(record.id, p.name, declared), data={"name": p.name})
        check_value(p.name, p.value)
        replaced = await self._io(self.files.set, record.id, p.name, p.value)
        log.info("secret %s of %s %s", p.name, record.id, "replaced" if replaced else "set")
        return SetSecretResult(tool=record.id, name=p.name, replaced=replaced)

    async def list(self, p: ListSecretsParams, ctx: RequestContext) -> Any:
        _operator_only(ctx, "secrets.list")
        if p.tool is not None:
            records = [await self._io(self._store.resolve, p.tool)]
        else:
            records = await self._io(self._store.list)
        infos: list[SecretInfo] = []
        for record in records:
            stored = self.files.entries(record.id)
            declared = _declared(record)
            for name, secret in declared.items():
                infos.append(
                    SecretInfo(
                        tool=record.id,
                        name=name,
                        set=name in stored,
                        declared=True,
                        header=secret.header,
                        hosts=list(secret.hosts),
                        set_at=stored.get(name),
                    )
                )
            infos.extend(
                SecretInfo(tool=record.id, name=name, set=True, declared=False, set_at=at)
                for name, at in sorted(stored.items())
                if name not in declared
            )
        return ListSecretsResult(secrets=infos)

    async def delete(self, p: DeleteSecretParams, ctx: RequestContext) -> Any:
        _operator_only(ctx, "secrets.delete")
        record = await self._io(self._store.resolve, p.tool)
        if not await self._io(self.files.delete, record.id, p.name):
            stored = sorted(self.files.entries(record.id))
            raise NotFound(
                f"{record.id} has no secret {p.name} stored"
                + (f" (it has: {', '.join(stored)})" if stored else " (it has none)"),
                data={"tool": record.id, "name": p.name},
            )
        log.info("secret %s of %s deleted", p.name, record.id)
        return DeleteSecretResult(tool=record.id, name=p.name)


def _operator_only(ctx: RequestContext, method: str) -> None:
    if ctx.peer.uid != os.getuid():
        raise PolicyDenied(
            f"{method} is reserved to kamid's own user (uid {os.getuid()}); peers allowed by "
            "[server].allowed_uids or allowed_gids may run tools but not manage secrets"
        )


def _declared(record: ToolRecord) -> dict[str, Any]:
    manifest = Manifest.from_dict(record.manifest)
    return {s.name: s for s in manifest.security.secrets}


def _undeclared(tool_id: str, name: str, declared: dict[str, Any]) -> str:
    if not SECRET_NAME.match(name):
        return (
            f"{name!r} is not a secret name: use upper case letters, digits and _, starting "
            "with a letter (GITHUB_TOKEN); nothing was stored"
        )
    if declared:
        return (
            f"{tool_id} does not declare a secret {name} (it declares "
            f"{', '.join(sorted(declared))}); nothing was stored"
        )
    return (
        f"{tool_id} declares no secrets, so {name} would never be used; a tool declares where "
        "a secret goes under [[security.secrets]] in its tool.toml. Nothing was stored"
    )
