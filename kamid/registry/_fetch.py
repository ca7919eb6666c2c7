"""Fetching indexes and artifacts over HTTPS, HTTP or file://, with limits.

Indexes are cached under the cache directory with their ``ETag`` and ``Last-Modified``;
the next fetch asks with ``If-None-Match`` / ``If-Modified-Since`` and reuses the cached
body on ``304``. Artifacts are downloaded into memory, never past the size the index
promised (or ``max_package_bytes``), and a download that ends short is refused: the
caller then checks the sha256 before anything else looks at the bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from kamid import __version__
from kamid.protocol import IntegrityError, InvalidParams, NotFound

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    # Imported where used: httpx is ~55 ms of kamid's start-up, and most daemons never
    # fetch anything.
    import httpx

__all__ = ["MAX_INDEX_BYTES", "Fetcher", "check_url", "file_url_path"]

log = logging.getLogger("kamid.registry")

#: The largest index the daemon reads.
MAX_INDEX_BYTES = 32 * 1024 * 1024
#: Progress is reported at most this often (bytes between reports).
_REPORT_EVERY = 256 * 1024


def check_url(url: str, *, what: str) -> str:
    """``url`` if it is an http(s) URL or an absolute file:// URL.

    Raises:
        InvalidParams: otherwise, saying which forms are accepted.
    """
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https", "file"):
        raise InvalidParams(
            f"{what} {url!r} is not a URL kamid can fetch; use https://…, http://… or "
            "file:///absolute/path"
        )
    if parts.scheme == "file":
        file_url_path(url, what=what)
    elif not parts.hostname:
        raise InvalidParams(f"{what} {url!r} has no host")
    return url


def file_url_path(url: str, *, what: str = "URL") -> Path:
    """The local path of a ``file://`` URL.

    Raises:
        InvalidParams: it names another host or a relative path.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidParams(f"{what} {url!r}: file URLs must name this host (file:///path)")
    path = Path(urllib.request.url2pathname(parts.path))
    if not path.is_absolute():
        raise InvalidParams(f"{what} {url!r}: file URLs need an absolute path (file:///path)")
    return path


def _read_file(path: Path, limit: int, url: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError as exc:
        raise NotFound(f"{url}: no such file", data={"url": url}) from exc
    except OSError as exc:
        raise NotFound(f"{url}: cannot read: {exc.strerror}", data={"url": url}) from exc
    if len(data) > limit:
        raise IntegrityError(
            f"{url} is larger than the {limit} bytes allowed", data={"url": url, "limit": limit}
        )
    return data


class Fetcher:
    """Gets bytes from URLs for the registry code. Each method may be cancelled at any
    point; nothing it leaves behind is trusted (cache files are written atomically).

    Args:
        cache_dir: where index bodies and their validators are kept.
        timeout_s: connect/read timeout of each request.
    """

    def __init__(self, cache_dir: Path, *, timeout_s: float = 60.0) -> None:
        self.cache_dir = cache_dir
        #: Recently downloaded artifacts, by sha256: an install retried after the
        #: operator's approval (or an update after consent) does not download again.
        self.artifacts = cache_dir / "artifacts"
        self.timeout_s = timeout_s
        self.headers = {"User-Agent": f"kamid/{__version__}"}
        #: Counters for tests and `daemon.status`-style reporting.
        self.not_modified = 0

    def _client(self) -> httpx.AsyncClient:
        import httpx

        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 15.0))
        return httpx.AsyncClient(
            timeout=timeout, headers=self.headers, follow_redirects=True, max_redirects=5
        )

    async def fetch_index(self, url: str, *, registry: str) -> bytes:
        """The index at ``url``: from the cache when the server says it has not changed.

        Raises:
            NotFound: it cannot be fetched (network error, HTTP error status).
            IntegrityError: it is larger than :data:`MAX_INDEX_BYTES`.
        """
        import httpx

        where = f"registry {registry}"
        if urllib.parse.urlsplit(url).scheme == "file":
            return await trio.to_thread.run_sync(
                _read_file, file_url_path(url), MAX_INDEX_BYTES, url
            )
        body_path, meta_path = self._cache_paths(url)
        meta = await trio.to_thread.run_sync(_read_meta, meta_path, url)
        headers = {}
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
        try:
            async with self._client() as client, client.stream("GET", url, headers=headers) as r:
                if r.status_code == 304 and meta:
                    cached = await trio.to_thread.run_sync(_read_optional, body_path)
                    if cached is not None:
                        self.not_modified += 1
                        return cached
                    # The body went missing: ask again without validators.
                    return await self._fetch_fresh(url, registry, body_path, meta_path)
                return await self._store(r, url, where, body_path, meta_path)
        except httpx.HTTPError as exc:
            raise _unreachable(where, url, exc) from exc

    async def _fetch_fresh(self, url: str, registry: str, body: Path, meta: Path) -> bytes:
        import httpx

        where = f"registry {registry}"
        try:
            async with self._client() as client, client.stream("GET", url) as r:
                return await self._store(r, url, where, body, meta)
        except httpx.HTTPError as exc:
            raise _unreachable(where, url, exc) from exc

    async def _store(
        self, r: httpx.Response, url: str, where: str, body_path: Path, meta_path: Path
    ) -> bytes:
        _check_status(r, url, where)
        data = await _read_limited(r, MAX_INDEX_BYTES, url)
        meta = {
            "url": url,
            "etag": r.headers.get("etag"),
            "last_modified": r.headers.get("last-modified"),
            "fetched_at": time.time(),
        }
        await trio.to_thread.run_sync(_write_cache, body_path, meta_path, data, meta)
        return data

    def _cache_paths(self, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
        return self.cache_dir / f"{key}.json", self.cache_dir / f"{key}.meta.json"

    async def download(
        self,
        url: str,
        *,
        max_bytes: int,
        size: int | None = None,
        sha256: str | None = None,
        progress: Callable[[int, int | None], Awaitable[None]] | None = None,
    ) -> bytes:
        """Downloads ``url`` into memory and checks it against ``size`` and ``sha256``.

        Raises:
            NotFound: it cannot be fetched.
            IntegrityError: it is larger than ``size`` (or ``max_bytes``), ended short, or
                its sha256 is not ``sha256``.
        """
        limit = min(size, max_bytes) if size is not None else max_bytes
        if size is not None and size > max_bytes:
            raise IntegrityError(
                f"{url}: the index says it is {size} bytes, more than the {max_bytes} this "
                "kamid accepts ([supply_chain].max_package_bytes)",
                data={"url": url, "size": size, "limit": max_bytes},
            )
        cached = self.artifacts / f"{sha256}.kami" if sha256 is not None else None
        if cached is not None and sha256 is not None:
            data_or_none = await trio.to_thread.run_sync(_read_cached, cached, sha256, size)
            if data_or_none is not None:
                return data_or_none
        if urllib.parse.urlsplit(url).scheme == "file":
            data = await trio.to_thread.run_sync(_read_file, file_url_path(url), limit, url)
            if progress is not None:
                await progress(len(data), len(data))
        else:
            import httpx

            try:
                async with self._client() as client, client.stream("GET", url) as r:
                    _check_status(r, url, "download")
                    total = size if size is not None else _content_length(r)
                    data = await _read_limited(r, limit, url, progress=progress, total=total)
            except httpx.HTTPError as exc:
                if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
                    raise IntegrityError(
                        f"the download of {url} was cut short ({exc}); nothing was installed; "
                        "retry, and if it keeps failing tell the registry's maintainer",
                        data={"url": url},
                    ) from exc
                raise _unreachable("download", url, exc) from exc
        if size is not None and len(data) != size:
            raise IntegrityError(
                f"the download of {url} is {len(data)} bytes but the index says {size}: it "
                "was truncated or replaced; nothing was installed",
                data={"url": url, "got": len(data), "expected": size},
            )
        if sha256 is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha256:
                raise IntegrityError(
                    f"the download of {url} has sha256 {actual}, but the index says {sha256}: "
                    "it was tampered with or replaced; nothing was installed",
                    data={"url": url, "sha256": actual, "expected": sha256},
                )
            if cached is not None:
                await trio.to_thread.run_sync(_keep_artifact, cached, data)
        return data


def _content_length(r: httpx.Response) -> int | None:
    try:
        return int(r.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _check_status(r: httpx.Response, url: str, where: str) -> None:
    if r.status_code >= 400:
        raise NotFound(
            f"{where}: {url} answered HTTP {r.status_code} {r.reason_phrase}; check the URL",
            data={"url": url, "status": r.status_code},
        )
    if r.status_code != 200:
        raise NotFound(
            f"{where}: {url} answered HTTP {r.status_code}, not 200 with the file",
            data={"url": url, "status": r.status_code},
        )


def _unreachable(where: str, url: str, exc: httpx.HTTPError) -> NotFound:
    return NotFound(
        f"{where}: cannot fetch {url}: {type(exc).__name__}: {exc}; check the URL and the network",
        data={"url": url},
    )


async def _read_limited(
    r: httpx.Response,
    limit: int,
    url: str,
    *,
    progress: Callable[[int, int | None], Awaitable[None]] | None = None,
    total: int | None = None,
) -> bytes:
    announced = _content_length(r)
    if announced is not None and announced > limit:
        raise IntegrityError(
            f"{url} is {announced} bytes, more than the {limit} expected; nothing was installed",
            data={"url": url, "size": announced, "limit": limit},
        )
    chunks: list[bytes] = []
    done = 0
    reported = 0
    if progress is not None:
        await progress(0, total)
    async for chunk in r.aiter_bytes():
        done += len(chunk)
        if done > limit:
            raise IntegrityError(
                f"{url} sent more than the {limit} bytes expected; nothing was installed",
                data={"url": url, "limit": limit},
            )
        chunks.append(chunk)
        if progress is not None and done - reported >= _REPORT_EVERY:
            reported = done
            await progress(done, total)
    if progress is not None:
        await progress(done, total)
    return b"".join(chunks)


#: How many recent artifacts the cache keeps.
_KEEP_ARTIFACTS = 8


def _read_cached(path: Path, sha256: str, size: int | None) -> bytes | None:
    data = _read_optional(path)
    if data is None or (size is not None and len(data) != size):
        return None
    # Re-hashed: the cache is a convenience, never a source of trust.
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _keep_artifact(path: Path, data: bytes) -> None:
    _write_cache(path, None, data, {})
    files = sorted(path.parent.glob("*.kami"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[_KEEP_ARTIFACTS:]:
        old.unlink(missing_ok=True)


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _read_meta(path: Path, url: str) -> dict[str, str]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or meta.get("url") != url:
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, str)}


def _write_cache(
    body_path: Path, meta_path: Path | None, data: bytes, meta: dict[str, object]
) -> None:
    body_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = [(body_path, data)]
    if meta_path is not None:
        files.append((meta_path, json.dumps(meta).encode()))
    for path, content in files:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
