"""Real HTTP(S) servers on loopback addresses, run in threads of the test process.

One handler serves every test; the path picks the behaviour:

- ``/echo``: 200 with a JSON body of what arrived: method, path, headers, body (text).
- ``/redirect?to=URL&status=302``: a redirect to ``to``.
- ``/loop``: a redirect to itself.
- ``/encoded?e=br``: the Authorization it got, labelled with that Content-Encoding.
- ``/cookie``: a response with Set-Cookie and hop-by-hop headers.
- ``/reflect-location``: a redirect whose Location carries the Authorization header it got.
- ``/headers-echo``: the Authorization header it got, back as a response header and in
  several encodings in the body (raw, base64, percent-encoded, JSON).
- ``/big?n=N``: N bytes (``x``); ``/gzip?n=N``: N zero bytes, gzip-compressed.
- ``/slow?s=S``: waits S seconds (or until the server stops) before answering.
- ``/drip``: sends headers, then one byte every 50 ms for as long as the client reads.
- ``/status?code=N``: that status, empty body.
- ``/repos/OWNER/NAME``: a GitHub-like repository record whose description carries the
  Authorization header it got.

Every request is recorded in :attr:`Server.hits` (method, path, headers) so a test can
show what did, and did not, reach a server.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import shutil
import socket
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterator
    from pathlib import Path


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.owner.hits.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers.items())}
        )
        name = url.path.strip("/").split("/")[0].replace("-", "_")
        route = getattr(self, "_r_" + name, None)
        if route is None:
            self._send(404, b"no such route")
            return
        route(query, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _r_echo(self, _query: dict[str, str], body: bytes) -> None:
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": body.decode("utf-8", "replace"),
        }
        self._send(200, json.dumps(seen).encode(), {"Content-Type": "application/json"})

    def _r_redirect(self, query: dict[str, str], _body: bytes) -> None:
        self._send(int(query.get("status", "302")), b"", {"Location": query["to"]})

    def _r_encoded(self, query: dict[str, str], _body: bytes) -> None:
        token = self.headers.get("Authorization", "")
        self._send(200, token.encode(), {"Content-Encoding": query.get("e", "br")})

    def _r_cookie(self, _query: dict[str, str], _body: bytes) -> None:
        self._send(
            200, b"ok", {"Set-Cookie": "a=1", "Connection": "keep-alive", "Keep-Alive": "timeout=5"}
        )

    def _r_loop(self, _query: dict[str, str], _body: bytes) -> None:
        self._send(302, b"", {"Location": "/loop"})

    def _r_reflect_location(self, _query: dict[str, str], _body: bytes) -> None:
        token = self.headers.get("Authorization", "")
        location = "http://127.0.0.9:9/steal?t=" + urllib.parse.quote(token)
        self._send(302, b"", {"Location": location})

    def _r_headers_echo(self, _query: dict[str, str], _body: bytes) -> None:
        token = self.headers.get("Authorization", "")
        raw = token.encode()
        value = token.split(" ", 1)[-1]
        body = json.dumps(
            {
                "authorization": token,
                "value": value,
                "b64": base64.b64encode(raw).decode(),
                "b64_value": base64.b64encode(value.encode()).decode(),
                "quoted": urllib.parse.quote(token, safe=""),
            }
        ).encode()
        self._send(200, body, {"X-Echo-Authorization": token, "X-Token-" + value: "1"})

    def _r_big(self, query: dict[str, str], _body: bytes) -> None:
        self._send(200, b"x" * int(query["n"]))

    def _r_gzip(self, query: dict[str, str], _body: bytes) -> None:
        self._send(200, gzip.compress(b"\0" * int(query["n"])), {"Content-Encoding": "gzip"})

    def _r_slow(self, query: dict[str, str], _body: bytes) -> None:
        self.server.owner.stopping.wait(float(query.get("s", "30")))
        with contextlib.suppress(OSError):
            self._send(200, b"late")

    def _r_drip(self, _query: dict[str, str], _body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(1_000_000):
                if self.server.owner.stopping.wait(0.05):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()

    def _r_repos(self, _query: dict[str, str], _body: bytes) -> None:
        # A GitHub-like API that (carelessly) puts the Authorization it got in the answer.
        repo = self.path.split("/", 2)[2]
        data = {
            "full_name": repo,
            "description": "token seen: " + self.headers.get("Authorization", "none"),
            "stargazers_count": 42,
            "forks_count": 7,
            "open_issues_count": 3,
            "language": "Rust",
            "license": {"spdx_id": "Apache-2.0"},
            "html_url": f"https://github.example/{repo}",
        }
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _r_status(self, query: dict[str, str], _body: bytes) -> None:
        self._send(int(query["code"]), b"")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Server

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-answer is what several tests do on purpose


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class Server:
    """One server on ``host``; ``url(path)`` builds its URLs. Use it as a context manager."""

    def __init__(
        self, host: str = "127.0.0.1", *, port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.host = host
        self.hits: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        if ":" in host:
            self._httpd: _HTTPServer = _HTTPServer6((host, port), _Handler)
        else:
            self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.owner = self
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port: int = self._httpd.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def rule(self) -> str:
        """The grant naming exactly this server: scheme, address and port."""
        return self.origin

    def url(self, path: str) -> str:
        return self.origin + path


@contextlib.contextmanager
def serving(*hosts: str) -> Iterator[list[Server]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Server(host)) for host in hosts]


def make_certificate(directory: Path, name: str) -> tuple[Path, Path] | None:
    """A self-signed certificate for ``name`` (cert, key) made with openssl; None without it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
