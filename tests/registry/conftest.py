"""Fixtures for the supply chain: a real HTTP server on 127.0.0.1, publisher keys, and
helpers that publish WAT-based tools into registry directories."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest

from kamictl import _keys, package
from tests.conftest import Daemon, make_tool, short_tempdir, wat_component

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from kamictl._keys import KeyPair


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RegistryServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        server = self.server
        server.requests.append(path)
        file = (server.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(server.root) or not file.is_file():
            self.send_error(404)
            return
        data = server.overrides.get(path, file.read_bytes())
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            server.not_modified.append(path)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.end_headers()
        if path in server.truncate:
            # Promise the whole file, send half, hang up: a connection that drops.
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


class RegistryServer(http.server.ThreadingHTTPServer):
    """Serves ``root`` over HTTP with ETags; records requests; can cut downloads short."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.requests: list[str] = []
        self.not_modified: list[str] = []
        self.truncate: set[str] = set()
        self.overrides: dict[str, bytes] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/{path.lstrip('/')}"


@pytest.fixture(scope="module")
def http_root() -> Iterator[Path]:
    root = short_tempdir("kreg")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(http_root: Path) -> Iterator[RegistryServer]:
    srv = RegistryServer(http_root)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def publisher(http_root: Path) -> KeyPair:
    pair, _ = _keys.generate("publisher", directory=http_root / "_keys")
    return pair


@pytest.fixture(scope="module")
def stranger(http_root: Path) -> KeyPair:
    """A key nobody trusts."""
    pair, _ = _keys.generate("stranger", directory=http_root / "_keys")
    return pair


def publish(
    registry_dir: Path,
    key: KeyPair | None,
    version: str,
    *,
    tool_id: str = "dev.test.echo",
    extra: str = "",
    categories: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    wat: str = "echo.wat",
) -> package.PublishResult:
    """Builds a WAT tool directory, packages it (signed by ``key`` if given), publishes it."""
    src = registry_dir.parent / "_src" / registry_dir.name
    tool_dir = make_tool(src, wat_component(wat), tool_id=tool_id, version=version, extra=extra)
    pkg, data = package.pack(tool_dir, key=key)
    return package.add_to_index(
        registry_dir, pkg, data, categories=list(categories), tags=list(tags)
    )


def snapshot(daemon: Daemon) -> tuple[Any, ...]:
    """What a refused install must leave untouched: tools, grants, origins, blobs."""
    tools = daemon.call("tools.list")["tools"]
    inspected = [daemon.call("tools.inspect", {"tool": t["id"]}) for t in tools]
    blobs = sorted(p.name for p in (daemon.home / "data" / "blobs").rglob("*") if p.is_file())
    return (
        tools,
        [(i["grants"], i["tool"]["sha256"]) for i in inspected],
        daemon.call("tools.outdated")["tools"],
        blobs,
    )
