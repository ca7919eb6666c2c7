"""Shared fixtures: real daemons on short temp homes, a kamictl runner, tool directories."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kamictl.client import Client
from kamid.protocol import Paths

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

pytest_plugins = ["tests._examples", "tests.net._daemon"]


def short_tempdir(prefix: str = "k") -> Path:
    # Unix socket paths must stay under ~100 bytes; pytest's tmp_path is too deep.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture
def kami_home() -> Iterator[Path]:
    home = short_tempdir()
    yield home
    shutil.rmtree(home, ignore_errors=True)


def daemon_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["KAMI_HOME"] = str(home)
    env.pop("KAMI_NO_AUTOSTART", None)
    return env


def poll_status(
    call: Callable[[str], Any], check: Any, what: str, timeout: float = 60
) -> dict[str, Any]:
    """Calls ``daemon.status`` through ``call`` until ``check(status)`` is true; returns
    that status, or fails the test after ``timeout`` seconds saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = call("daemon.status")
        if check(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout} s: {status}")
        time.sleep(0.02)


class Daemon:
    """A kamid started in the foreground as a child process, on its own KAMI_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.paths = Paths.under(home)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, config: str | None = None, timeout: float = 30.0) -> Daemon:
        if config is not None:
            self.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
            self.paths.config_file.write_text(config)
        self.stderr = open(self.home / "daemon.stderr", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kamid", "--foreground"],
            env=daemon_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamid exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(Exception), self.client(timeout=5) as client:
                client.call("daemon.status")
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"kamid did not start:\n{self.log()}")
            time.sleep(0.05)

    def client(self, *, timeout: float | None = 60.0) -> Client:
        return Client(self.paths, autostart=False, timeout=timeout)

    def call(self, method: str, params: Any = None) -> Any:
        with self.client() as client:
            return client.call(method, params)

    def wait_until(self, check: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        """Polls ``daemon.status`` until ``check(status)`` is true; returns that status."""
        return poll_status(self.call, check, what, timeout)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.home / "daemon.stderr").read_text(errors="replace")
        return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode


@pytest.fixture
def daemon(kami_home: Path) -> Iterator[Daemon]:
    d = Daemon(kami_home).start()
    yield d
    d.stop()


@contextlib.contextmanager
def daemon_with_examples(
    built_examples: dict[str, Path], tool_ids: Sequence[str], *, name: str, prefix: str
) -> Iterator[Daemon]:
    """A daemon on a fresh home copied from a template with ``tool_ids`` installed.

    Installing compiles each example to native code (tens of seconds on two cores), so
    the installed home is kept as a template under ``.toolchain/<name>/`` and copied: a
    session whose examples, schema and wasmtime match an earlier one compiles nothing.
    """
    home = short_tempdir(prefix)
    shutil.copytree(_examples_template(built_examples, tool_ids, name), home, dirs_exist_ok=True)
    daemon = Daemon(home).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


def _examples_template(built_examples: dict[str, Path], tool_ids: Sequence[str], name: str) -> Path:
    from kamid.store._schema import MIGRATIONS
    from tests._examples import publish_once, toolchain

    digest = hashlib.sha256(importlib.metadata.version("wasmtime").encode())
    for tool_id in tool_ids:
        digest.update(str(built_examples[tool_id]).encode())
        digest.update((built_examples[tool_id] / "tool.toml").read_bytes())
    digest.update("\0".join(MIGRATIONS).encode())
    return publish_once(
        toolchain() / name / digest.hexdigest()[:16], _install_into(tool_ids, built_examples)
    )


def _install_into(
    tool_ids: Sequence[str], built_examples: dict[str, Path]
) -> Callable[[Path], None]:
    def make(staging: Path) -> None:
        home = short_tempdir("kt")  # the socket path must stay short: install elsewhere
        try:
            daemon = Daemon(home).start()
            try:
                for tool_id in tool_ids:
                    path = str(built_examples[tool_id])
                    daemon.call("tools.install", {"path": path, "approve": True})
            finally:
                daemon.stop()
            for leftover in ("logs", "run"):
                shutil.rmtree(home / leftover, ignore_errors=True)
            (home / "daemon.stderr").unlink(missing_ok=True)
            shutil.copytree(home, staging)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    return make


_CLIENT = """
import json, socket, sys
out = []
for method, params in json.loads(sys.argv[2]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(sys.argv[1])
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                          "params": params}).encode() + b"\\n")
    data = b""
    while b"\\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    out.append(json.loads(data.split(b"\\n")[0]))
    s.close()
sys.stdout.write(json.dumps(out))
"""


def call_as_nobody(daemon: Daemon, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Runs ``requests`` (one connection each) from a child process that dropped to uid
    nobody (needs root), and returns the answers."""
    nobody = pwd.getpwnam("nobody").pw_uid
    # The socket dir is 0700 for its owner; open it up so that SO_PEERCRED is what decides.
    os.chmod(daemon.home, 0o711)
    os.chmod(daemon.paths.run, 0o711)
    os.chmod(daemon.paths.socket, 0o666)
    proc = subprocess.run(
        ["/usr/bin/env", "python3", "-I", "-c", _CLIENT, str(daemon.paths.socket),
         json.dumps(requests)],
        user=nobody,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    replies: list[dict[str, Any]] = json.loads(proc.stdout)
    return replies


def run_kamictl(
    home: Path, *args: str, input: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kamictl", *args],
        env=daemon_env(home),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_in_threads(fn: Callable[[], object], n: int) -> None:
    """Runs ``fn`` on ``n`` threads at once and waits for every one to end."""
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def modules_loaded(setup: str, candidates: Sequence[str]) -> list[str]:
    """Which of ``candidates`` a fresh interpreter has imported after running ``setup``
    (import-time costs: what a start-up pays)."""
    code = f"import sys\n{setup}\nprint(','.join(m for m in sys.argv[1:] if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code, *candidates], capture_output=True, text=True, check=True
    ).stdout.strip()
    return out.split(",") if out else []


def wat_component(name: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm((FIXTURES / name).read_text()))


def make_tool(
    root: Path,
    wasm: bytes,
    *,
    tool_id: str = "dev.test.echo",
    version: str = "0.1.0",
    extra: str = "",
) -> Path:
    """Writes a tool directory with a minimal tool.toml around ``wasm``."""
    tool_dir = root / f"{tool_id}-{version}"
    tool_dir.mkdir(parents=True, exist_ok=True)
    (tool_dir / "tool.wasm").write_bytes(wasm)
    (tool_dir / "tool.toml").write_text(
        f"""[tool]
id = "{tool_id}"
name = "{tool_id.rsplit(".", 1)[-1]}"
version = "{version}"
description = "A test tool."
wasm = "tool.wasm"
{extra}
"""
    )
    return tool_dir
