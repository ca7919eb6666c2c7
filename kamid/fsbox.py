"""The filesystem a call sees: sandbox directories, installed assets, path grants, env.

Layout under the data directory::

    sandboxes/<tool id>/     fs = "sandbox": the tool's /data, read-write, persistent
    assets/<digest>/         fs = "read-only": a tool's assets/ dir, copied at install,
                             content-addressed (sha256 of the tree), mounted at /assets

WASI (wasmtime's cap-std) confines each mount: ``..`` past its root, absolute paths,
symlinks resolving outside, and links or renames across mounts all fail in the guest,
and a read-only mount refuses every change. What the guest leaves behind (say, a
symlink pointing out of its sandbox) is never followed here: sizes come from ``lstat``
and deletion does not follow links.

The quota: wasmtime-py has no hook on guest writes, so the sandbox is measured after each
call that could write (and before a call when the last measure was over quota, or there
is none). Over quota before a call, /data is mounted read-only; a call that leaves it
over quota fails with ``sandbox_bytes``. One call can therefore overshoot by what it
writes before its deadline; the next call cannot write at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from kamid.grants import ASSETS_GUEST, SANDBOX_GUEST
from kamid.protocol import InternalError, InvalidTool, PolicyDenied
from kamid.sandbox import Preopen, SandboxSpec, exceeded

if TYPE_CHECKING:
    from kamid.protocol import Grants, Paths

__all__ = ["ASSETS_DIR", "AssetsInfo", "CallPlan", "FsBox", "measure"]

log = logging.getLogger("kamid.fsbox")

#: The directory next to tool.toml whose contents become the tool's /assets.
ASSETS_DIR = "assets"
#: Installed assets may not be larger than this, nor hold more files.
MAX_ASSETS_BYTES = 256 * 1024 * 1024
MAX_ASSETS_FILES = 10_000
#: Every file, directory or link counts at least this much towards the quota, so that a
#: flood of empty files is not free (each costs an inode and a directory entry).
MIN_ENTRY_BYTES = 4096


@attrs.frozen(kw_only=True)
class AssetsInfo:
    digest: str
    size: int
    files: int


@attrs.frozen(kw_only=True)
class CallPlan:
    """What one call runs with, and what to check when it ends."""

    sandbox: SandboxSpec
    #: Lines for the call's log (a read-only /data, a variable kamid does not have).
    notes: tuple[str, ...] = ()
    #: The sandbox directory to measure after the call, if it was mounted writable.
    check_dir: str | None = None
    quota: int = 0


def measure(root: Path, *, stop_above: int | None = None) -> int:
    """Bytes the tree under ``root`` occupies, never following symlinks.

    Each entry counts ``max(size, allocated blocks, MIN_ENTRY_BYTES)``; hard links count
    once. Stops early, returning what it has counted, once that exceeds ``stop_above``.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += max(st.st_size, st.st_blocks * 512, MIN_ENTRY_BYTES)
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            if stop_above is not None and total > stop_above:
                return total
    return total


class FsBox:
    """Sandbox directories and installed assets under ``paths.data``. Methods block."""

    def __init__(self, paths: Paths) -> None:
        self.sandboxes = paths.data / "sandboxes"
        self.assets = paths.data / "assets"
        # Tool id -> bytes its sandbox held when last measured (after its last call). Only
        # its own calls write there, so a value under quota is trusted before the next
        # call; one over quota is measured again (the operator may have freed space).
        self._usage: dict[str, int] = {}

    # Sandboxes.

    def sandbox_dir(self, tool_id: str) -> Path:
        # Tool ids are validated reverse-DNS names: one safe path component each.
        if not tool_id or "/" in tool_id or tool_id.startswith("."):
            raise InternalError(f"refusing a sandbox for the malformed tool id {tool_id!r}")
        return self.sandboxes / tool_id

    def purge(self, tool_id: str) -> bool:
        """Deletes the tool's sandbox directory; True if there was one."""
        path = self.sandbox_dir(tool_id)
        if not path.is_dir() or path.is_symlink():
            return False
        # rmtree never follows symlinks the guest left; it removes the links themselves.
        shutil.rmtree(path)
        self._usage.pop(tool_id, None)
        return True

    def usage(self, tool_id: str) -> int:
        return measure(self.sandbox_dir(tool_id))

    # Assets.

    def assets_dir(self, digest: str) -> Path:
        return self.assets / digest

    def import_assets(self, tool_dir: Path) -> AssetsInfo | None:
        """Copies ``tool_dir/assets`` into the content-addressed store; None if absent.

        Raises:
            InvalidTool: the directory holds a symlink, a device or other special file
                (never followed: a symlink could point at the operator's own files), or is
                larger than the limits.
        """
        source = tool_dir / ASSETS_DIR
        if source.is_symlink():
            raise InvalidTool(
                f"{source} is a symlink; assets must be a plain directory inside the tool "
                "(symlinks are never followed: they could expose files outside the tool)"
            )
        if not source.is_dir():
            return None
        files = _asset_files(source)
        digest = hashlib.sha256()
        size = 0
        for rel, path in files:
            size += path.stat().st_size
            if size > MAX_ASSETS_BYTES:
                raise InvalidTool(
                    f"{source} holds more than {MAX_ASSETS_BYTES // (1024 * 1024)} MiB; "
                    "ship less with the tool (or fetch it at run time through a grant)"
                )
            with path.open("rb") as f:
                content = hashlib.file_digest(f, "sha256").hexdigest()
            digest.update(f"{rel}\0{content}\0".encode())
        info = AssetsInfo(digest=digest.hexdigest(), size=size, files=len(files))
        final = self.assets_dir(info.digest)
        if final.is_dir():
            return info
        self.assets.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.assets))
        try:
            for rel, path in files:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.copyfile(path, target, follow_symlinks=False)
                os.chmod(target, 0o400)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return info

    def collect_assets(self, keep: set[str]) -> None:
        """Deletes asset directories no tool uses (and leftovers of interrupted copies)."""
        try:
            entries = list(os.scandir(self.assets))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name in keep or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                shutil.rmtree(entry.path)
            except OSError as exc:
                log.warning("cannot delete unused assets %s: %s", entry.path, exc)

    # Calls.

    def plan(
        self,
        tool_id: str,
        grants: Grants,
        *,
        quota: int,
        assets_digest: str | None,
        environ: dict[str, str] | None = None,
    ) -> CallPlan:
        """The preopens and environment of one call under ``grants``.

        Raises:
            PolicyDenied: a granted host path no longer is the directory that was granted.
        """
        environ = os.environ if environ is None else environ  # type: ignore[assignment]
        assert environ is not None
        notes: list[str] = []
        env: list[tuple[str, str]] = []
        for name, value in sorted(grants.env.items()):
            if value is None:
                own = environ.get(name)
                if own is None:
                    notes.append(f"[kami] {name} is granted but not set in kamid's environment")
                    continue
                value = own
            env.append((name, value))
        preopens: list[Preopen] = []
        check_dir: str | None = None
        if grants.fs == "sandbox":
            box = self.sandbox_dir(tool_id)
            box.mkdir(parents=True, exist_ok=True, mode=0o700)
            used = self._usage.get(tool_id)
            if used is None or used > quota:
                used = self._usage[tool_id] = measure(box, stop_above=quota)
            writable = used <= quota
            if writable:
                check_dir = str(box)
            else:
                notes.append(
                    f"[kami] {SANDBOX_GUEST} is read-only for this call: the sandbox holds "
                    f"more than its quota of {quota} bytes"
                )
            preopens.append(Preopen(host=str(box), guest=SANDBOX_GUEST, writable=writable))
        elif grants.fs == "read-only":
            if assets_digest is not None and self.assets_dir(assets_digest).is_dir():
                preopens.append(
                    Preopen(host=str(self.assets_dir(assets_digest)), guest=ASSETS_GUEST)
                )
            else:
                notes.append(f"[kami] {tool_id} was installed without assets; no {ASSETS_GUEST}")
        for g in grants.paths:
            if os.path.realpath(g.host_path) != g.host_path or not os.path.isdir(g.host_path):
                raise PolicyDenied(
                    f"{tool_id}: the path grant {g.host_path} (at {g.guest_path}) no longer is "
                    "the directory that was granted (it was removed, or a symlink replaced "
                    f"part of it); check it and grant it again with `kamictl grant {tool_id} "
                    f"--fs {g.host_path}:{g.guest_path}:{g.mode}`",
                    data={"path": g.host_path},
                )
            preopens.append(Preopen(host=g.host_path, guest=g.guest_path, writable=g.mode == "rw"))
        return CallPlan(
            sandbox=SandboxSpec(preopens=tuple(preopens), env=tuple(env)),
            notes=tuple(notes),
            check_dir=check_dir,
            quota=quota,
        )

    def check_after(self, tool_id: str, plan: CallPlan, data: dict[str, Any] | None = None) -> None:
        """Fails a call that left its sandbox over quota.

        Args:
            data: the call's details for the error (its usage).

        Raises:
            LimitExceeded: ``sandbox_bytes``.
        """
        if plan.check_dir is None:
            return
        used = self._usage[tool_id] = measure(Path(plan.check_dir), stop_above=plan.quota)
        if used > plan.quota:
            detail = f"it holds more than {used} bytes"
            raise exceeded(tool_id, "sandbox_bytes", plan.quota, detail=detail, data=data)


def _asset_files(source: Path) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(source, followlinks=False):
        for name in sorted(dirs) + sorted(names):
            path = Path(root, name)
            rel = path.relative_to(source).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise InvalidTool(
                    f"{path} is a symlink; assets may hold only files and directories "
                    "(symlinks are never followed: they could expose files outside the tool)"
                )
            if stat.S_ISREG(mode):
                files.append((rel, path))
            elif not stat.S_ISDIR(mode):
                raise InvalidTool(f"{path} is not a regular file; assets hold only files")
            if len(files) > MAX_ASSETS_FILES:
                raise InvalidTool(f"{source} holds more than {MAX_ASSETS_FILES} files")
        dirs.sort()
    files.sort()
    return files
