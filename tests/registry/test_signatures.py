"""``[supply_chain].require_signatures``: unsigned and untrusted tools are refused at
install (before any download) and at exec, including tools installed before the policy."""

from __future__ import annotations

import json
import os
import pwd
from typing import TYPE_CHECKING

import pytest

from kamid.protocol import IntegrityError, PolicyDenied, decode_public_key, key_id_of
from tests.conftest import Daemon, call_as_nobody, make_tool, run_kamictl, wat_component
from tests.registry.conftest import RegistryServer, publish, snapshot

if TYPE_CHECKING:
    from pathlib import Path

    from kamictl._keys import KeyPair

REQUIRE = "[supply_chain]\nrequire_signatures = true\n"


def flat(text: str) -> str:
    return " ".join(text.split())


def test_install_and_exec_need_a_trusted_signature(
    kami_home: Path,
    server: RegistryServer,
    http_root: Path,
    publisher: KeyPair,
    stranger: KeyPair,
    tmp_path: Path,
) -> None:
    daemon = Daemon(kami_home).start(config=REQUIRE)
    try:
        for name, key in (("sig-none", None), ("sig-stranger", stranger), ("sig-ok", publisher)):
            publish(http_root / name, key, "1.0.0")
            daemon.call("registry.add", {"name": name, "url": server.url(f"{name}/index.json")})
        before = snapshot(daemon)
        with pytest.raises(PolicyDenied, match="is not signed"):
            daemon.call("tools.install", {"ref": "dev.test.echo", "registry": "sig-none"})
        with pytest.raises(PolicyDenied, match="not in the trust store") as info:
            daemon.call("tools.install", {"ref": "dev.test.echo", "registry": "sig-stranger"})
        assert info.value.data["public_key"] == stranger.public_text
        with pytest.raises(PolicyDenied, match=f"signed by key {publisher.key_id}"):
            daemon.call("tools.install", {"ref": "dev.test.echo", "registry": "sig-ok"})
        assert snapshot(daemon) == before
        # Refused from the index alone: no artifact was downloaded.
        assert not [p for p in server.requests if p.startswith("/sig-") and p.endswith(".kami")]

        r = run_kamictl(kami_home, "trust", "add", publisher.public_text, "--name", "pub")
        assert r.returncode == 0, r.stderr
        result = daemon.call("tools.install", {"ref": "dev.test.echo", "registry": "sig-ok"})
        assert result["signer"] == {"key_id": publisher.key_id, "name": "pub", "trusted": True}
        assert daemon.call("tools.exec", {"tool": "echo", "input": 1})["output"] == 1

        # Trust is checked at every exec, not only at install.
        r = run_kamictl(kami_home, "trust", "remove", publisher.key_id)
        assert r.returncode == 0, r.stderr
        assert "it signed dev.test.echo" in flat(r.stderr)
        with pytest.raises(PolicyDenied, match="not trusted any more"):
            daemon.call("tools.exec", {"tool": "echo", "input": 1})
        r = run_kamictl(kami_home, "verify", "echo")
        assert r.returncode == 1
        assert "NOT in the trust store" in flat(r.stderr)
        daemon.call("trust.add", {"public_key": publisher.public_text})
        assert daemon.call("tools.exec", {"tool": "echo", "input": 2})["output"] == 2

        # Tool directories too: unsigned refused; signed with a trusted key accepted.
        tool = make_tool(tmp_path, wat_component("echo.wat"), tool_id="dev.test.local")
        with pytest.raises(PolicyDenied, match="is not signed"):
            daemon.call("tools.install", {"path": str(tool)})
        r = run_kamictl(kami_home, "keygen", "--name", "local")
        assert r.returncode == 0, r.stderr
        local_public = r.stdout.strip()
        r = run_kamictl(kami_home, "sign", str(tool), "--key", "local")
        assert r.returncode == 0, r.stderr
        assert (tool / "tool.sig").exists()
        with pytest.raises(PolicyDenied, match="not in the trust store"):
            daemon.call("tools.install", {"path": str(tool)})
        r = run_kamictl(kami_home, "trust", "add", str(kami_home / "keys" / "local.pub"))
        assert r.returncode == 0, r.stderr
        r = run_kamictl(kami_home, "install", str(tool))
        assert r.returncode == 0, r.stderr

        # A signed directory changed after signing is refused, whatever the policy.
        (tool / "tool.wasm").write_bytes(wat_component("err.wat"))
        before = snapshot(daemon)
        with pytest.raises(IntegrityError, match="the component changed since it was signed"):
            daemon.call("tools.install", {"path": str(tool)})
        assert snapshot(daemon) == before

        r = run_kamictl(kami_home, "trust", "list", "--json")
        listed = json.loads(r.stdout)
        assert listed["require_signatures"] is True
        local_id = key_id_of(decode_public_key(local_public))
        assert {k["key_id"] for k in listed["keys"]} == {publisher.key_id, local_id}
    finally:
        daemon.stop()


def test_the_policy_covers_tools_installed_before_it(kami_home: Path, tmp_path: Path) -> None:
    daemon = Daemon(kami_home).start()
    tool = make_tool(tmp_path, wat_component("echo.wat"))
    try:
        daemon.call("tools.install", {"path": str(tool)})
        assert daemon.call("tools.exec", {"tool": "echo", "input": 1})["output"] == 1
    finally:
        daemon.stop()
    daemon = Daemon(kami_home).start(config=REQUIRE)
    try:
        with pytest.raises(PolicyDenied, match="no verified signature on record"):
            daemon.call("tools.exec", {"tool": "echo", "input": 1})
        verdict = daemon.call("tools.verify", {"tool": "echo"})
        assert (verdict["signed"], verdict["valid"], verdict["trusted"]) == (False, False, False)
    finally:
        daemon.stop()


def test_allowed_strangers_cannot_change_sources_or_trust(
    kami_home: Path, publisher: KeyPair
) -> None:
    if os.getuid() != 0:
        pytest.skip("dropping to another uid needs root")
    nobody = pwd.getpwnam("nobody").pw_uid
    daemon = Daemon(kami_home).start(config=f"[server]\nallowed_uids = [{nobody}]\n")
    try:
        requests = [
            ("trust.add", {"public_key": publisher.public_text}),
            ("trust.remove", {"key": publisher.key_id}),
            ("registry.add", {"name": "evil", "url": "https://evil.example.org/index.json"}),
            ("registry.remove", {"name": "x"}),
            ("tools.update", {"all": True, "approve": True}),
            ("tools.pin", {"tool": "x"}),
            ("trust.list", {}),
        ]
        *changes, listing = call_as_nobody(daemon, requests)
        for reply in changes:
            assert reply["error"]["code"] == -32003, reply
            assert "reserved to the operator" in reply["error"]["message"]
        assert listing["result"]["keys"] == []  # reading is fine; nothing was added
        assert daemon.call("registry.list")["registries"] == []
    finally:
        daemon.stop()
