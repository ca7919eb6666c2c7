"""The real example tools through the repo's registry builder (registry/build.py), served
over HTTP and installed by id: what an operator does with the default registry."""

from __future__ import annotations

import importlib.util
import json
from typing import TYPE_CHECKING

from kamictl import _keys
from tests.conftest import REPO, Daemon, run_kamictl

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

    from tests.registry.conftest import RegistryServer


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("registry_build", REPO / "registry" / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_registry_round_trip(
    daemon: Daemon, server: RegistryServer, http_root: Path, built_examples: dict[str, Path]
) -> None:
    key, _ = _keys.generate("examples", directory=http_root / "_keys")
    out = http_root / "examples"
    results = _builder().build_registry(built_examples.values(), out, key, build=False)
    assert {r.tool for r in results} >= {"dev.kami.echo", "dev.kami.hello"}
    assert (out / "publisher.pub").read_text().strip() == key.public_text

    home = daemon.home
    r = run_kamictl(home, "registry", "add", "examples", server.url("examples/index.json"))
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "trust", "add", str(out / "publisher.pub"), "--name", "examples")
    assert r.returncode == 0, r.stderr
    hits = json.loads(run_kamictl(home, "search", "--tag", "echo", "--json").stdout)["hits"]
    assert [(h["id"], h["trusted"]) for h in hits] == [("dev.kami.echo", True)]

    r = run_kamictl(home, "install", "dev.kami.echo@^0.1")
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "exec", "echo", "--input", '{"text": "ok", "repeat": 2}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"echo": "okok", "length": 4}
    r = run_kamictl(home, "verify", "dev.kami.echo")
    assert r.returncode == 0, r.stderr
