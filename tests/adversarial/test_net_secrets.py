"""A guest trying to get at a secret the operator stored for it, through a real kamid.

The secret is bound to one server ("the API", on 127.0.0.1); the tool may also reach a
second one ("elsewhere", on 127.0.0.2), which stands for any host an attacker controls.
The guest (the http-fetch example) may send whatever requests its grants allow. The
value must reach the API, and nothing else: not the other server, not the guest (in
response headers, bodies, redirects or errors), not the logs.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest

from kamid.protocol import ToolFailed
from tests.net._servers import Server, serving

if TYPE_CHECKING:
    from pathlib import Path

    from tests.net._daemon import NetDaemon

pytestmark = pytest.mark.examples

SECRET = "kami-Test-Secret-7f3a91c2d4e6b8"
GET_POST = ("GET", "HEAD", "POST")


def bound_tool(net: NetDaemon, api: Server, elsewhere: Server) -> str:
    tool = net.install(
        net=[(api.rule, GET_POST), (elsewhere.rule, GET_POST)],
        secrets=(
            "[[security.secrets]]\n"
            'name = "API_TOKEN"\n'
            f'hosts = ["{api.rule}"]\n'
            'header = "Authorization"\n'
            'format = "Bearer {secret:API_TOKEN}"\n'
        ),
    )
    done = net.kamictl("secret", "set", tool, "API_TOKEN", input=SECRET + "\n")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    return tool


def sent_to(server: Server) -> str:
    """Everything a server received, as one string to search."""
    return json.dumps(server.hits)


def forms(value: str) -> list[str]:
    return [
        value,
        base64.b64encode(value.encode()).decode(),
        base64.b64encode(f"Bearer {value}".encode()).decode(),
        urllib.parse.quote(f"Bearer {value}", safe=""),
    ]


def assert_unseen(text: str) -> None:
    for form in forms(SECRET):
        assert form not in text


def fetch(net: NetDaemon, tool: str, **input: Any) -> dict[str, Any]:
    output: dict[str, Any] = net.exec(tool, input)["output"]
    return output


def test_an_allowed_host_echoing_headers_back_does_not_leak_the_secret(
    net_daemon: NetDaemon,
) -> None:
    with serving("127.0.0.1", "127.0.0.2") as (api, elsewhere):
        tool = bound_tool(net_daemon, api, elsewhere)
        output = fetch(net_daemon, tool, url=api.url("/headers-echo"))
        # The API got the real header...
        assert api.hits[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"
        # ...and the guest saw only redactions, in headers and in every encoding of the body.
        assert_unseen(json.dumps(output))
        echoed = dict(output["headers"])
        assert echoed["X-Echo-Authorization"] == "[redacted]"
        assert json.loads(output["text"])["authorization"] == "[redacted]"
        assert json.loads(output["text"])["b64"] == "[redacted]"
        assert "X-Token-[redacted]" in echoed
        # The plain echo too, and a POST whose body the server reflects.
        output = fetch(net_daemon, tool, url=api.url("/echo"), method="POST", body="hello")
        assert_unseen(json.dumps(output))
        assert json.loads(output["text"])["headers"]["Authorization"] == "[redacted]"


def test_the_secret_never_goes_to_another_host(net_daemon: NetDaemon) -> None:
    with serving("127.0.0.1", "127.0.0.2") as (api, elsewhere):
        tool = bound_tool(net_daemon, api, elsewhere)
        fetch(net_daemon, tool, url=elsewhere.url("/echo"))
        # A redirect from the API to the other host: followed (both are granted), but the
        # secret is not sent on the hop that leaves the API.
        target = urllib.parse.quote(elsewhere.url("/echo"), safe="")
        output = fetch(net_daemon, tool, url=api.url(f"/redirect?to={target}&status=307"))
        assert output["status"] == 200
        assert len(elsewhere.hits) == 2
        assert "Authorization" not in elsewhere.hits[1]["headers"]
        assert_unseen(sent_to(elsewhere))
        # The guest's own Authorization goes where it sends it; toward the API the daemon
        # replaces it with the bound secret.
        fetch(net_daemon, tool, url=elsewhere.url("/echo"), headers={"Authorization": "mine"})
        assert elsewhere.hits[-1]["headers"]["Authorization"] == "mine"
        fetch(net_daemon, tool, url=api.url("/echo"), headers={"Authorization": "mine"})
        assert api.hits[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"
        assert_unseen(sent_to(elsewhere))


def test_a_redirect_carrying_the_secret_is_not_followed(net_daemon: NetDaemon) -> None:
    with serving("127.0.0.1", "127.0.0.2") as (api, elsewhere):
        tool = bound_tool(net_daemon, api, elsewhere)
        with pytest.raises(ToolFailed) as info:
            net_daemon.exec(tool, {"url": api.url("/reflect-location")})
        assert info.value.message.startswith("denied: ")
        assert "Location contains a secret value" in info.value.message
        assert_unseen(info.value.message)


def test_a_guest_asking_for_a_secret_by_name_gets_nothing(net_daemon: NetDaemon) -> None:
    with serving("127.0.0.1", "127.0.0.2") as (api, elsewhere):
        tool = bound_tool(net_daemon, api, elsewhere)
        # There is no API to read one; a placeholder in a header is refused...
        for url in (elsewhere.url("/echo"), api.url("/echo")):
            with pytest.raises(ToolFailed) as info:
                net_daemon.exec(
                    tool, {"url": url, "headers": {"X-Steal": "Bearer {secret:API_TOKEN}"}}
                )
            assert info.value.message.startswith("invalid-request: header X-Steal contains")
        # ...and anywhere else it is just text: sent as is, never expanded.
        output = fetch(
            net_daemon,
            tool,
            url=elsewhere.url("/echo?t={secret:API_TOKEN}"),
            method="POST",
            body="{secret:API_TOKEN}",
        )
        seen = json.loads(output["text"])
        assert seen["body"] == "{secret:API_TOKEN}"
        assert "API_TOKEN" in urllib.parse.unquote(seen["path"])
        assert_unseen(sent_to(elsewhere))
        assert "X-Steal" not in sent_to(elsewhere) + sent_to(api)


def test_a_javascript_tool_calls_an_api_with_a_token_it_never_sees(
    net_daemon: NetDaemon,
) -> None:
    with Server("127.0.0.1") as api:
        tool = net_daemon.install(
            "dev.kami.github-repo",
            net=[(api.rule, ["GET"])],
            secrets=(
                "[[security.secrets]]\n"
                'name = "GITHUB_TOKEN"\n'
                f'hosts = ["{api.rule}"]\n'
                'header = "Authorization"\n'
                'format = "Bearer {secret:GITHUB_TOKEN}"\n'
            ),
        )
        without = net_daemon.exec(tool, {"repo": "kami/tools", "api": api.origin})["output"]
        assert without["description"] == "token seen: none"
        set_ = net_daemon.kamictl("secret", "set", tool, "GITHUB_TOKEN", input=SECRET)
        assert set_.returncode == 0, set_.stderr
        output = net_daemon.exec(tool, {"repo": "kami/tools", "api": api.origin})["output"]
        assert output == {
            "repo": "kami/tools",
            "description": "token seen: [redacted]",
            "stars": 42,
            "forks": 7,
            "open_issues": 3,
            "language": "Rust",
            "license": "Apache-2.0",
            "url": "https://github.example/kami/tools",
        }
        assert api.hits[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_the_secret_is_in_no_log_audit_row_or_answer(net_daemon: NetDaemon) -> None:
    with serving("127.0.0.1", "127.0.0.2") as (api, elsewhere):
        tool = bound_tool(net_daemon, api, elsewhere)
        fetch(net_daemon, tool, url=api.url("/headers-echo"))
        with pytest.raises(ToolFailed):
            net_daemon.exec(tool, {"url": api.url("/reflect-location")})
        listed = net_daemon.kamictl("secret", "list", tool, "--json")
        assert listed.returncode == 0, listed.stderr
        assert_unseen(listed.stdout)
        inspected = net_daemon.daemon.call("tools.inspect", {"tool": tool})
        assert_unseen(json.dumps(inspected))
        audit = net_daemon.daemon.call("audit.list", {"tool": tool})
        assert_unseen(json.dumps(audit))
        assert any(h.get("secrets") == ["API_TOKEN"] for e in audit["entries"] for h in e["hosts"])
    # Every file under KAMI_HOME but the secret store itself: logs, database, audit.
    home: Path = net_daemon.home
    secrets_dir = home / "data" / "secrets"
    for path in home.rglob("*"):
        if path.is_file() and secrets_dir not in path.parents and path.suffix != ".wasm":
            data = path.read_bytes()
            for form in forms(SECRET):
                assert form.encode() not in data, path
