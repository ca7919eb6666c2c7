"""Content-addressed blobs: ``blobs/<first two hex digits>/<sha256>``.

A blob reaches its final name only whole and synced: it is written to a temp file in the
blobs directory, fsynced, renamed into place and the directories fsynced. A crash therefore
leaves either no blob or a complete one, plus at worst a temp file that :meth:`sweep`
removes at the next open.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from kamid.protocol import IntegrityError, InternalError, InvalidParams

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["BlobRef", "BlobStore"]

logger = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TEMP_PREFIX = ".tmp-"


@attrs.frozen
class BlobRef:
    """A blob written to the store."""

    sha256: str
    size: int
    path: Path


def check_sha256(sha256: str) -> str:
    """Returns ``sha256`` if it is 64 lower-case hex digits.

    Raises:
        InvalidParams: otherwise; it would not name a blob, and might escape the directory.
    """
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise InvalidParams(f"not a sha256 digest (64 lower-case hex digits): {sha256!r}")
    return sha256


class BlobStore:
    """The blob files under ``root``.

    Blobs written by :meth:`put` are *pinned* until :meth:`unpin`: :meth:`collect` keeps a
    pinned blob even when no row refers to it, because an install is about to. Callers that
    decide what is garbage hold the database lock while calling :meth:`collect`, so the
    decision and the deletion see the same rows.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        # Guards the pins and every create/delete of a final blob file.
        self._lock = threading.Lock()
        self._pins: collections.Counter[str] = collections.Counter()

    def path(self, sha256: str) -> Path:
        """Where the blob with this digest lives (whether or not it exists)."""
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> BlobRef:
        """Stores ``data`` durably and pins it; reuses a valid copy, replaces a corrupt one.

        Raises:
            InternalError: the blob could not be written (disk full, permissions).
        """
        sha256 = hashlib.sha256(data).hexdigest()
        final = self.path(sha256)
        with self._lock:
            self._pins[sha256] += 1
            try:
                if _digest(final)[0] != sha256:
                    self._write(final, data)
                # Also for a reused blob: its rename may not have reached the disk yet.
                _fsync_dir(final.parent)
                _fsync_dir(self.root)
            except OSError as exc:
                self._drop_pin(sha256)
                raise InternalError(
                    f"cannot write blob {sha256} under {self.root}: {exc.strerror or exc}; "
                    "check free space and that kamid's user owns the directory",
                    data={"file": str(final)},
                ) from exc
        return BlobRef(sha256, len(data), final)

    def unpin(self, sha256: str) -> None:
        """Drops one pin taken by :meth:`put`; a no-op when there is none."""
        with self._lock:
            self._drop_pin(sha256)

    def verify(self, sha256: str) -> int:
        """Re-hashes the blob; returns its size.

        Raises:
            IntegrityError: the blob is missing or its content no longer matches its name.
        """
        path = self.path(sha256)
        try:
            digest, size = _digest(path)
        except OSError as exc:
            raise IntegrityError(
                f"blob {sha256} cannot be read ({exc.strerror}); reinstall the tool with "
                "`kamictl install`",
                data={"sha256": sha256, "file": str(path)},
            ) from exc
        if digest is None:
            raise IntegrityError(
                f"blob {sha256} is missing from disk; reinstall the tool with `kamictl install`",
                data={"sha256": sha256, "file": str(path)},
            )
        if digest != sha256:
            raise IntegrityError(
                f"blob {sha256} was modified on disk; reinstall the tool with `kamictl install`",
                data={"sha256": sha256, "file": str(path), "actual_sha256": digest},
            )
        return size

    def size_on_disk(self, sha256: str) -> int | None:
        """The blob file's size without hashing it, or None when it does not exist."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def collect(self, garbage: Iterable[str]) -> None:
        """Deletes the files of blobs no row refers to any more, unless pinned.

        Failures are logged, not raised: the rows are already gone, and :meth:`sweep`
        retries at the next open.
        """
        with self._lock:
            for sha256 in garbage:
                if self._pins[sha256] > 0:
                    continue
                try:
                    self.path(sha256).unlink(missing_ok=True)
                except OSError as exc:
                    logger.warning("cannot delete unused blob %s: %s", sha256, exc)

    def sweep(self, keep: set[str]) -> None:
        """Removes temp files and every blob not in ``keep``: leftovers of a crash.

        Only call this before the store is used: a blob written since would go too.
        Files whose name is not a digest are someone else's and left alone.
        """
        with self._lock:
            for entry in _scandir(self.root):
                if entry.name.startswith(_TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                    _remove(Path(entry.path))
                elif len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
                    for blob in _scandir(Path(entry.path)):
                        name = blob.name
                        if _SHA256_RE.match(name) and name[:2] == entry.name and name not in keep:
                            _remove(Path(blob.path))

    def _drop_pin(self, sha256: str) -> None:
        # Caller holds self._lock.
        self._pins[sha256] -= 1
        if self._pins[sha256] <= 0:
            del self._pins[sha256]

    def _write(self, final: Path, data: bytes) -> None:
        final.parent.mkdir(mode=0o700, exist_ok=True)
        # The temp file sits in the same filesystem as its final name, so the rename is atomic.
        fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                # Read-only: a blob never changes under its name.
                os.fchmod(f.fileno(), 0o400)
                os.fsync(f.fileno())
            # Replaces a corrupt blob of the same name in one step.
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _digest(path: Path) -> tuple[str | None, int]:
    """The file's sha256 and size, or ``(None, 0)`` when it does not exist."""
    try:
        with path.open("rb") as f:
            # Size of the very file hashed, even if the name is replaced meanwhile.
            return hashlib.file_digest(f, "sha256").hexdigest(), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return None, 0


def _fsync_dir(path: Path) -> None:
    # A rename or create is durable only once the directory holding the entry is synced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _remove(path: Path) -> None:
    logger.info("removing leftover %s", path)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot remove leftover %s: %s", path, exc)
