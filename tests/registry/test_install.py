"""Registries over real HTTP on 127.0.0.1: search, install with ranges, packages by URL and
file, update, pin, outdated, consent on update, and the publish round trip."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from kamictl import package
from kamid.protocol import NotFound, PolicyDenied
from tests.conftest import REPO, Daemon, make_tool, run_kamictl, wat_component
from tests.registry.conftest import RegistryServer, publish, snapshot

if TYPE_CHECKING:
    from pathlib import Path

    from kamictl._keys import KeyPair

NET = '[security]\nnet = [{ host = "api.example.com", methods = ["GET"] }]\n'


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def add_registry(daemon: Daemon, server: RegistryServer, name: str) -> None:
    daemon.call("registry.add", {"name": name, "url": server.url(f"{name}/index.json")})


def installed(daemon: Daemon) -> dict[str, str]:
    return {t["id"]: t["version"] for t in daemon.call("tools.list")["tools"]}


def test_search_and_install_with_ranges(
    daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = http_root / "ranges"
    for v in ["0.1.0", "0.2.0", "0.2.7", "1.0.0", "1.2.0", "1.2.5", "1.3.0", "2.0.0", "2.1.0"]:
        publish(reg, publisher, v, categories=("text",), tags=("demo", "echo"))
    publish(reg, publisher, "1.0.0", tool_id="dev.test.fetch", categories=("net",), tags=("http",))
    add_registry(daemon, server, "ranges")

    def search(**params: Any) -> list[str]:
        return [h["id"] for h in daemon.call("registry.search", params)["hits"]]

    assert search() == ["dev.test.echo", "dev.test.fetch"]
    assert search(query="echo") == ["dev.test.echo"]
    assert search(query="A TEST tool") == ["dev.test.echo", "dev.test.fetch"]
    assert search(category="net") == ["dev.test.fetch"]
    assert search(tag="demo") == ["dev.test.echo"]
    assert search(query="echo", tag="http") == []
    hit = daemon.call("registry.search", {"query": "echo"})["hits"][0]
    assert hit["version"] == "2.1.0"
    assert hit["signer"] == publisher.key_id
    assert hit["trusted"] is False

    r = run_kamictl(daemon.home, "search", "--category", "text")
    assert r.returncode == 0, r.stderr
    assert "dev.test.echo" in r.stdout
    assert "dev.test.fetch" not in r.stdout

    for ref, expected in [
        ("dev.test.echo@0.1.0", "0.1.0"),
        ("dev.test.echo@~0.2", "0.2.7"),
        ("dev.test.echo@>=1.0,<1.3", "1.2.5"),
        ("dev.test.echo@^1.2", "1.3.0"),
        ("dev.test.echo@~1.3.0", "1.3.0"),
        ("dev.test.echo", "2.1.0"),
    ]:
        result = daemon.call("tools.install", {"ref": ref})
        assert result["tool"]["version"] == expected, ref
        assert result["signer"] == {"key_id": publisher.key_id, "name": None, "trusted": False}
    assert installed(daemon) == {"dev.test.echo": "2.1.0"}

    before = snapshot(daemon)
    with pytest.raises(NotFound, match=r"no version of dev.test.echo matching \^3"):
        daemon.call("tools.install", {"ref": "dev.test.echo@^3"})
    with pytest.raises(NotFound, match=r"no registry lists dev\.test\.ecko; did you mean"):
        daemon.call("tools.install", {"ref": "dev.test.ecko"})
    assert snapshot(daemon) == before

    r = run_kamictl(daemon.home, "exec", "echo", "--input", '{"x": 1}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"x": 1}


def test_downloads_report_progress(
    daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    published = publish(http_root / "progress", publisher, "1.0.0")
    add_registry(daemon, server, "progress")
    seen: list[dict[str, Any]] = []
    with daemon.client() as client:
        client.call(
            "tools.install",
            {"ref": "dev.test.echo", "progress_token": "t"},
            on_notify=lambda method, params: seen.append(params),
        )
    downloads = [p for p in seen if p["stage"] == "downloading"]
    assert downloads[-1]["done"] == downloads[-1]["total"] == published.size
    assert all(p["token"] == "t" for p in seen)
    assert {"resolving", "downloading", "storing", "compiling"} <= {p["stage"] for p in seen}


def test_install_packages_by_url_and_by_file(
    daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair, tmp_path: Path
) -> None:
    tool = make_tool(tmp_path, wat_component("echo.wat"), version="1.0.0", extra=NET)
    _, data = package.pack(tool, key=publisher)
    (http_root / "pkgs").mkdir(exist_ok=True)
    (http_root / "pkgs" / "echo.kami").write_bytes(data)
    url = server.url("pkgs/echo.kami")

    r = run_kamictl(daemon.home, "install", url)  # asks for network: needs approval
    assert r.returncode == 1
    assert "api.example.com" in flat(r.stderr)
    assert installed(daemon) == {}
    r = run_kamictl(daemon.home, "install", url, "--yes")
    assert r.returncode == 0, r.stderr
    assert installed(daemon) == {"dev.test.echo": "1.0.0"}
    assert server.requests.count("/pkgs/echo.kami") == 2  # one download per attempt

    newer = make_tool(tmp_path, wat_component("echo.wat"), version="1.1.0", extra=NET)
    file = tmp_path / "echo-1.1.0.kami"
    file.write_bytes(package.pack(newer)[1])
    r = run_kamictl(daemon.home, "install", str(file), "--yes")
    assert r.returncode == 0, r.stderr
    assert "installed dev.test.echo 1.1.0" in flat(r.stderr)

    # A package names no registry, so there is nothing to update from.
    r = run_kamictl(daemon.home, "update", "dev.test.echo")
    assert r.returncode == 1
    assert "was not installed from a registry" in flat(r.stderr)
    outdated = daemon.call("tools.outdated")["tools"]
    assert outdated[0]["status"] == "local"

    # Downgrading from a package needs saying so.
    with pytest.raises(PolicyDenied, match=r"would downgrade it from 1\.1\.0"):
        daemon.call("tools.install", {"package": url, "approve": True})
    r = run_kamictl(daemon.home, "install", url, "--yes", "--allow-downgrade")
    assert r.returncode == 0, r.stderr
    assert installed(daemon) == {"dev.test.echo": "1.0.0"}


def test_update_pin_and_outdated(
    daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = http_root / "updates"
    publish(reg, publisher, "1.0.0")
    add_registry(daemon, server, "updates")
    daemon.call("tools.install", {"ref": "dev.test.echo@^1"})
    assert daemon.call("tools.update", {"tool": "echo"})["updates"][0]["status"] == "current"

    publish(reg, publisher, "1.1.0")
    publish(reg, publisher, "2.0.0")
    row = daemon.call("tools.outdated")["tools"][0]
    assert row == {
        "id": "dev.test.echo",
        "installed": "1.0.0",
        "registry": "updates",
        "constraint": "^1",
        "pinned": False,
        "newest_matching": "1.1.0",
        "newest": "2.0.0",
        "status": "outdated",
        "message": "",
    }
    r = run_kamictl(daemon.home, "outdated")
    assert r.returncode == 0, r.stderr
    assert "1.1.0" in r.stdout
    assert "2.0.0" in r.stdout

    r = run_kamictl(daemon.home, "update", "echo", "--json")
    assert r.returncode == 0, r.stderr
    update = json.loads(r.stdout)["updates"][0]
    assert (update["status"], update["available"]) == ("updated", "1.1.0")
    assert installed(daemon) == {"dev.test.echo": "1.1.0"}
    row = daemon.call("tools.outdated")["tools"][0]
    assert (row["status"], row["newest"]) == ("held", "2.0.0")  # 2.0.0 is outside ^1

    # Pinning the installed version holds it even within ^1.
    r = run_kamictl(daemon.home, "pin", "echo")
    assert r.returncode == 0, r.stderr
    assert "pinned dev.test.echo to 1.1.0" in flat(r.stderr)
    publish(reg, publisher, "1.2.0")
    update = daemon.call("tools.update", {"all": True})["updates"][0]
    assert (update["status"], update["available"]) == ("held", "2.0.0")
    with pytest.raises(PolicyDenied, match=r"pinned to 1\.1\.0"):
        daemon.call("tools.install", {"ref": "dev.test.echo@1.2.0"})

    # A pin may also move a tool past the range it was installed with.
    assert daemon.call("tools.pin", {"tool": "echo", "version": "^2"})["pin"] == "^2"
    assert daemon.call("tools.update", {"tool": "echo"})["updates"][0]["status"] == "updated"
    assert installed(daemon) == {"dev.test.echo": "2.0.0"}
    assert daemon.call("tools.pin", {"tool": "echo", "remove": True})["pin"] is None
    row = daemon.call("tools.outdated")["tools"][0]
    assert (row["constraint"], row["status"]) == ("^1", "current")  # back to ^1; 2.0.0 > it

    # The index was revalidated with its ETag instead of downloaded every time.
    assert "/updates/index.json" in server.not_modified


def test_update_asks_before_widening(
    daemon: Daemon, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    reg = http_root / "consent"
    publish(reg, publisher, "1.0.0", extra=NET)
    add_registry(daemon, server, "consent")
    daemon.call("tools.install", {"ref": "dev.test.echo", "approve": True})

    publish(reg, publisher, "1.1.0", extra=NET)  # asks for nothing new: applied silently
    update = daemon.call("tools.update", {"tool": "echo"})["updates"][0]
    assert (update["status"], update["widening"]) == ("updated", [])

    wider = (
        '[security]\nnet = [{ host = "api.example.com", methods = ["GET", "POST"] },'
        ' { host = "evil.example.org" }]\nfs = "sandbox"\nenv = ["HOME"]\nmax_memory_mb = 1024\n'
    )
    publish(reg, publisher, "1.2.0", extra=wider)
    before = snapshot(daemon)
    update = daemon.call("tools.update", {"tool": "echo"})["updates"][0]
    assert update["status"] == "needs_consent"
    assert update["widening"] == [
        "network: api.example.com: also POST",
        "network: evil.example.org (GET, HEAD)",
        "filesystem: sandbox (a persistent /data, read-write)",
        "environment: HOME",
        f"limit: memory_bytes {256 * 1024 * 1024} -> {1024 * 1024 * 1024}",
    ]
    assert snapshot(daemon) == before  # nothing installed, grants unchanged

    r = run_kamictl(daemon.home, "update", "echo")  # not a terminal: reported, not applied
    assert r.returncode == 1
    assert "evil.example.org" in r.stdout
    assert snapshot(daemon) == before

    r = run_kamictl(daemon.home, "update", "echo", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["updates"][0]["status"] == "updated"
    grants = daemon.call("tools.inspect", {"tool": "echo"})["grants"]
    assert grants["net"] == [
        {"host": "api.example.com", "methods": ["GET", "POST"]},
        {"host": "evil.example.org", "methods": ["GET", "HEAD"]},
    ]
    assert (grants["fs"], grants["env"]) == ("sandbox", {"HOME": None})

    # Once the operator revokes a grant, a version asking for it asks again.
    daemon.call("tools.revoke", {"tool": "echo", "net": ["evil.example.org"]})
    publish(reg, publisher, "1.3.0", extra=wider)
    update = daemon.call("tools.update", {"tool": "echo"})["updates"][0]
    assert update["status"] == "needs_consent"
    assert update["widening"] == ["network: evil.example.org (GET, HEAD)"]
    approved = daemon.call(
        "tools.update",
        {"tool": "echo", "version": "1.3.0", "expect_sha256": update["sha256"], "approve": True},
    )
    assert approved["updates"][0]["status"] == "updated"
    assert installed(daemon) == {"dev.test.echo": "1.3.0"}


def test_publish_round_trip_with_kamictl(
    daemon: Daemon, server: RegistryServer, http_root: Path, tmp_path: Path
) -> None:
    home = daemon.home
    r = run_kamictl(home, "keygen", "--name", "pub")
    assert r.returncode == 0, r.stderr
    public_key = r.stdout.strip()
    assert public_key.startswith("ed25519:")
    reg = http_root / "published"
    tool = make_tool(tmp_path, wat_component("echo.wat"), tool_id="dev.test.pub", version="0.1.0")
    r = run_kamictl(
        home, "publish", str(tool), "--registry-dir", str(reg), "--key", "pub",
        "--category", "text", "--tag", "demo",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "published dev.test.pub 0.1.0" in flat(r.stderr)
    r = run_kamictl(home, "publish", str(tool), "--registry-dir", str(reg), "--key", "pub")
    assert "already published" in flat(r.stderr)  # same content: nothing changes

    # The index the publisher wrote is valid under the published schema.
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "registry" / "schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads((reg / "index.json").read_text()))

    r = run_kamictl(home, "registry", "add", "published", server.url("published/index.json"))
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "trust", "add", str(home / "keys" / "pub.pub"), "--name", "me")
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "search", "--tag", "demo")
    assert "dev.test.pub" in r.stdout
    r = run_kamictl(home, "install", "dev.test.pub@^0.1")
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "verify", "dev.test.pub")
    assert r.returncode == 0, r.stderr
    assert "valid signature" in flat(r.stderr)
    assert "(me), which is trusted" in flat(r.stderr)

    # The version publishes once; a change needs a new version.
    (tool / "tool.toml").write_text((tool / "tool.toml").read_text().replace("A test", "Another"))
    r = run_kamictl(home, "publish", str(tool), "--registry-dir", str(reg), "--key", "pub")
    assert r.returncode == 1
    assert "bump the version" in flat(r.stderr)

    # Packages are verified without installing: signed and trusted, or not.
    r = run_kamictl(home, "package", str(tool), "-o", str(tmp_path / "x.kami"))
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "verify", str(tmp_path / "x.kami"))
    assert r.returncode == 1
    assert "not signed" in flat(r.stderr)
    r = run_kamictl(home, "sign", str(tmp_path / "x.kami"), "--key", "pub")
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "verify", str(tmp_path / "x.kami"))
    assert r.returncode == 0, r.stderr

    r = run_kamictl(home, "trust", "list")
    assert public_key in r.stdout
    r = run_kamictl(home, "registry", "list")
    assert "published" in r.stdout
    r = run_kamictl(home, "registry", "remove", "published")
    assert r.returncode == 0, r.stderr
    r = run_kamictl(home, "registry", "list", "--json")
    assert json.loads(r.stdout) == {"registries": []}


def test_the_configured_default_registry(
    kami_home: Path, server: RegistryServer, http_root: Path, publisher: KeyPair
) -> None:
    publish(http_root / "dflt", publisher, "1.0.0")
    url = (http_root / "dflt" / "index.json").as_uri()  # file:// works as well as http
    daemon = Daemon(kami_home).start(config=f'[supply_chain]\ndefault_registry = "{url}"\n')
    try:
        assert daemon.call("registry.list")["registries"] == [
            {"name": "default", "url": url, "source": "config", "added_at": None}
        ]
        r = run_kamictl(kami_home, "install", "dev.test.echo")
        assert r.returncode == 0, r.stderr
        r = run_kamictl(kami_home, "registry", "remove", "default")
        assert r.returncode == 1
        assert "kamid.toml" in flat(r.stderr)
    finally:
        daemon.stop()


def test_install_says_what_it_takes(kami_home: Path) -> None:
    r = run_kamictl(kami_home, "--no-autostart", "install", "./no/such/dir")
    assert r.returncode == 2
    assert "not a tool directory, a .kami package, a URL or a tool id" in flat(r.stderr)
    r = run_kamictl(kami_home, "--no-autostart", "install", "dev.test.echo@banana")
    assert r.returncode == 2
    assert "'banana' is not understood" in flat(r.stderr)
