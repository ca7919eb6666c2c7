"""Secrets: the manifest syntax, the private store, and ``kamictl secret`` on a real kamid."""

from __future__ import annotations

import json
import os
import stat
from typing import TYPE_CHECKING

import pytest

from kamid.protocol import InternalError, InvalidParams, InvalidTool, parse_manifest
from kamid.secrets import SecretStore, check_value
from tests.net._servers import Server

if TYPE_CHECKING:
    from pathlib import Path

    from tests.net._daemon import NetDaemon

VALUE = "ghp_TESTonlyValue0123456789abcdef"

HEAD = """
[tool]
id = "dev.test.sec"
name = "sec"
version = "0.1.0"
description = "d"
wasm = "t.wasm"

[security]
net = [{ host = "api.github.com" }]
"""


def manifest(secrets: str) -> str:
    return HEAD + secrets


# The manifest.


def test_a_manifest_declares_where_each_secret_goes() -> None:
    m = parse_manifest(
        manifest(
            """
[[security.secrets]]
name = "GITHUB_TOKEN"
hosts = ["api.github.com", "uploads.github.com"]
header = "Authorization"
format = "Bearer {secret:GITHUB_TOKEN}"

[[security.secrets]]
name = "API_KEY"
hosts = ["*.example.com"]
header = "X-Api-Key"
"""
        )
    )
    token, key = m.security.secrets
    assert token.render("abc") == "Bearer abc"
    assert key.render("abc") == "abc"
    assert m.security.summary()[-2:] == [
        "secret: GITHUB_TOKEN sent as Authorization to api.github.com, uploads.github.com",
        "secret: API_KEY sent as X-Api-Key to *.example.com",
    ]
    assert type(m).from_dict(m.to_dict()) == m


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('name = "token"\nhosts = ["a.example.com"]\nheader = "X-K"', "[security].secrets.0.name"),
        ('name = "T"\nhosts = []\nheader = "X-K"', "at least one host rule"),
        ('name = "T"\nhosts = ["127.1"]\nheader = "X-K"', "canonical IP address"),
        ('name = "T"\nhosts = ["a.example.com"]\nheader = "Host"', "only the daemon sets"),
        ('name = "T"\nhosts = ["a.example.com"]\nheader = "Bad Header"', "HTTP header name"),
        (
            'name = "T"\nhosts = ["a.example.com"]\nheader = "X-K"\nformat = "Bearer x"',
            "must contain {secret:T} exactly once",
        ),
        (
            'name = "T"\nhosts = ["a.example.com"]\nheader = "X-K"\nformat = "{secret:U}"',
            "must contain {secret:T} exactly once",
        ),
        (
            'name = "T"\nhosts = ["a.example.com"]\nheader = "X-K"\nformat = "a\\nb{secret:T}"',
            "printable ASCII",
        ),
        ('name = "T"\nhosts = ["a.example.com"]', "[security].secrets.0.header is required"),
    ],
)
def test_bad_secret_declarations_name_the_key_and_the_fix(table: str, complaint: str) -> None:
    with pytest.raises(InvalidTool) as info:
        parse_manifest(manifest("[[security.secrets]]\n" + table + "\n"))
    assert complaint in info.value.message


def test_a_secret_is_declared_once_and_net_hosts_are_rules() -> None:
    twice = '[[security.secrets]]\nname = "T"\nhosts = ["a.example.com"]\nheader = "X-K"\n'
    with pytest.raises(InvalidTool, match="declares a secret name twice"):
        parse_manifest(manifest(twice * 2))
    with pytest.raises(InvalidTool) as info:
        parse_manifest(HEAD.replace("api.github.com", "https://api.github.com/v3"))
    assert "[security].net.0.host" in info.value.message
    assert "not a path" in info.value.message


# The store.


def test_values_are_kept_in_private_files_and_survive_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    store = SecretStore(directory)
    assert store.set("dev.test.sec", "TOKEN", VALUE) is False
    assert store.set("dev.test.sec", "TOKEN", VALUE + "2") is True
    assert store.set("dev.test.sec", "OTHER", "x") is False
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    path = directory / "dev.test.sec.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in directory.iterdir()] == [path.name]  # no temporary files left
    again = SecretStore(directory)
    assert again.values("dev.test.sec") == {"TOKEN": VALUE + "2", "OTHER": "x"}
    assert set(again.entries("dev.test.sec")) == {"TOKEN", "OTHER"}
    assert again.tools() == ["dev.test.sec"]
    assert again.delete("dev.test.sec", "OTHER") is True
    assert again.delete("dev.test.sec", "OTHER") is False
    assert again.forget("dev.test.sec") == 1
    assert not path.exists()
    assert SecretStore(directory).values("dev.test.sec") == {}


def test_a_readable_file_is_made_private_and_a_damaged_one_is_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    SecretStore(directory).set("dev.test.a", "T", VALUE)
    os.chmod(directory / "dev.test.a.json", 0o644)
    (directory / "dev.test.b.json").write_text('{"secrets": {"T": ' + json.dumps(VALUE))
    store = SecretStore(directory)
    assert stat.S_IMODE((directory / "dev.test.a.json").stat().st_mode) == 0o600
    assert store.values("dev.test.a") == {"T": VALUE}
    assert store.values("dev.test.b") == {}
    with pytest.raises(InternalError) as info:
        store.set("dev.test.b", "T", "new")
    assert "dev.test.b.json cannot be read (JSONDecodeError)" in info.value.message
    assert VALUE not in info.value.message
    assert VALUE in (directory / "dev.test.b.json").read_text()  # not overwritten


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("", "is empty"),
        ("a" * 8193, "more than 8192"),
        ("line\nbreak", "printable ASCII"),
        ("tab\there", "printable ASCII"),
        ("caf\u00e9", "printable ASCII"),
        (" padded", "starts or ends with a space"),
    ],
)
def test_values_that_cannot_be_a_header_are_refused_without_quoting_them(
    value: str, complaint: str
) -> None:
    with pytest.raises(InvalidParams) as info:
        check_value("TOKEN", value)
    assert complaint in info.value.message
    if value.strip():
        assert value.strip() not in info.value.message


# kamictl secret, against a real daemon.


SECRETS = """
[[security.secrets]]
name = "API_TOKEN"
hosts = ["api.example.com"]
header = "Authorization"
format = "Bearer {secret:API_TOKEN}"
"""


def test_set_list_delete_from_the_cli(net_daemon: NetDaemon) -> None:
    tool = net_daemon.install(net=[("api.example.com", ["GET"])], secrets=SECRETS)
    listed = net_daemon.kamictl("secret", "list", tool, "--json")
    assert json.loads(listed.stdout)["secrets"] == [
        {
            "tool": tool,
            "name": "API_TOKEN",
            "set": False,
            "declared": True,
            "header": "Authorization",
            "hosts": ["api.example.com"],
            "set_at": None,
        }
    ]
    done = net_daemon.kamictl("secret", "set", tool, "API_TOKEN", input=VALUE + "\r\n")
    assert done.returncode == 0, done.stderr
    assert "stored secret API_TOKEN of" in done.stderr
    stored = json.loads((net_daemon.home / "data" / "secrets" / f"{tool}.json").read_text())
    assert stored["secrets"]["API_TOKEN"]["value"] == VALUE  # the newline was dropped
    again = net_daemon.kamictl("secret", "set", tool, "API_TOKEN", input=VALUE)
    assert "replaced secret API_TOKEN" in again.stderr
    table = net_daemon.kamictl("secret", "list")
    assert table.returncode == 0, table.stderr
    assert "API_TOKEN" in table.stdout
    assert VALUE not in table.stdout + table.stderr
    listed = json.loads(net_daemon.kamictl("secret", "list", tool, "--json").stdout)
    assert listed["secrets"][0]["set"] is True
    assert VALUE not in json.dumps(listed)
    deleted = net_daemon.kamictl("secret", "delete", tool, "API_TOKEN")
    assert deleted.returncode == 0, deleted.stderr
    missing = net_daemon.kamictl("secret", "delete", tool, "API_TOKEN")
    assert missing.returncode == 1
    assert f"{tool} has no secret API_TOKEN stored (it has none)" in missing.stderr


def test_bad_secret_commands_change_nothing_and_say_why(net_daemon: NetDaemon) -> None:
    tool = net_daemon.install(net=[("api.example.com", ["GET"])], secrets=SECRETS)
    plain = net_daemon.install(net=[("api.example.com", ["GET"])])
    cases = [
        (("set", tool, "OTHER"), VALUE, 1, f"{tool} does not declare a secret OTHER"),
        (("set", plain, "API_TOKEN"), VALUE, 1, f"{plain} declares no secrets"),
        (("set", "dev.test.nope", "API_TOKEN"), VALUE, 1, 'no tool "dev.test.nope"'),
        (("set", tool, "API_TOKEN"), "", 2, "no value for API_TOKEN"),
        (("set", tool, "API_TOKEN"), "caf\u00e9", 1, "printable ASCII"),
        (("set", tool), VALUE, 2, "usage: kamictl secret set TOOL NAME"),
        (("set", tool, "API_TOKEN", VALUE), "", 2, "unrecognized arguments"),
        (("list", tool, "API_TOKEN"), "", 2, "usage: kamictl secret list [TOOL]"),
    ]
    for argv, stdin, code, complaint in cases:
        done = net_daemon.kamictl("secret", *argv, input=stdin)
        assert done.returncode == code, (argv, done.stderr)
        assert complaint in done.stderr, (argv, done.stderr)
        assert "caf\u00e9" not in done.stderr
    assert not (net_daemon.home / "data" / "secrets" / f"{tool}.json").exists()
    assert net_daemon.kamictl("secret", "list", plain, "--json").stdout.count('"name"') == 0


def test_uninstalling_a_tool_deletes_its_secrets(net_daemon: NetDaemon) -> None:
    tool = net_daemon.install(net=[("api.example.com", ["GET"])], secrets=SECRETS)
    net_daemon.kamictl("secret", "set", tool, "API_TOKEN", input=VALUE)
    path = net_daemon.home / "data" / "secrets" / f"{tool}.json"
    assert path.exists()
    net_daemon.daemon.call("tools.uninstall", {"tool": tool})
    assert not path.exists()
    assert VALUE not in net_daemon.daemon.log()


def test_a_stored_secret_reaches_its_host_through_a_real_call(net_daemon: NetDaemon) -> None:
    with Server() as api:
        bound = SECRETS.replace("api.example.com", api.rule)
        tool = net_daemon.install(net=[(api.rule, ["GET"])], secrets=bound)
        net_daemon.exec(tool, {"url": api.url("/echo")})
        assert "Authorization" not in api.hits[-1]["headers"]
        result = net_daemon.exec(tool, {"url": api.url("/echo")})
        assert any(
            "secret API_TOKEN is declared but not set" in line["message"] for line in result["logs"]
        )
        net_daemon.kamictl("secret", "set", tool, "API_TOKEN", input=VALUE)
        output = net_daemon.exec(tool, {"url": api.url("/echo")})["output"]
        assert api.hits[-1]["headers"]["Authorization"] == f"Bearer {VALUE}"
        assert json.loads(output["text"])["headers"]["Authorization"] == "[redacted]"
