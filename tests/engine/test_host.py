"""The kami:tool host interfaces as a guest sees them: typed values and typed errors.

``host.wat`` calls one import, picked by the first byte of its input, and returns what it
got as the JSON string ``"<tag>:<payload>"``; a host error comes back as
``"<case index>:<message>"`` (``0`` is ``not-granted`` in every interface).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from kamid.hostapi import HostContext, HostError, HttpRequest, HttpResponse
from kamid.protocol import InternalError
from tests._engine import Granted

from .conftest import FAST, host

if TYPE_CHECKING:
    from collections.abc import Callable

    from kamid.engine import Engine

    from .conftest import Wasm


def run(engine: Engine, tool: Wasm, command: str, context: HostContext | None = None) -> str:
    outcome = engine.call(tool.sha256, tool.path, command, limits=FAST, host=context or host())
    assert isinstance(outcome.value, str)
    return outcome.value


@pytest.mark.parametrize(
    ("command", "grant"),
    [
        ("h", "has no network grant"),
        ("k", "has no key-value store grant"),
        ("s", "has no key-value store grant"),
        ("d", "has no key-value store grant"),
        ("K", "has no key-value store grant"),
        ("i", "may not invoke other tools (asked for other.tool)"),
    ],
)
def test_without_grants_every_import_answers_not_granted(
    engine: Engine, wasm: Callable[[str], Wasm], command: str, grant: str
) -> None:
    # The guest gets the typed error (case 0, not-granted) and carries on: no trap.
    value = run(engine, wasm("host"), command, host("dev.test.nogrant"))
    assert value.startswith(f"0:dev.test.nogrant {grant}")
    assert "kamictl grant dev.test.nogrant" in value


def test_values_cross_in_both_directions(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    tool = wasm("host")
    context = Granted()
    assert [run(engine, tool, command, context) for command in "hksdKi"] == [
        "R:pong",
        "S:stored",
        "U:",
        "D:",
        "L:key-1",
        "O:{'ok':1}",
    ]
    assert context.asked == [
        HttpRequest(
            method="GET",
            url="https://example.com/x",
            headers=(("accept", "text/plain"),),
            body=b"\x01\x02\x03",
            timeout_ms=1500,
        ),
        "key",
        ("key", b"\x01\x02\x03"),
        "key",
        "key",
        ("other.tool", "{}"),
    ]


def test_kv_get_of_a_missing_key_is_none(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    class Empty(Granted):
        def kv_get(self, key: str) -> bytes | None:
            return None

    assert run(engine, wasm("host"), "k", Empty()) == "N:"


@pytest.mark.parametrize(
    ("command", "kind", "case"),
    [
        ("h", "denied", 1),
        ("h", "timeout", 5),
        ("k", "invalid-key", 2),
        ("i", "failed", 2),
        ("i", "limit-exceeded", 3),
    ],
)
def test_each_error_case_arrives_as_itself(
    engine: Engine, wasm: Callable[[str], Wasm], command: str, kind: str, case: int
) -> None:
    class Refusing(HostContext):
        def http_fetch(self, request: HttpRequest) -> HttpResponse:
            raise HostError(kind, f"refused with {kind}")

        def kv_get(self, key: str) -> bytes | None:
            raise HostError(kind, f"refused with {kind}")

        def invoke(self, tool: str, input: str) -> str:
            raise HostError(kind, f"refused with {kind}")

    value = run(engine, wasm("host"), command, Refusing(tool_id="dev.test.refused"))
    assert value == f"{case}:refused with {kind}"


def test_log_lines_reach_the_context(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    tool = wasm("host")
    outcome = engine.call(tool.sha256, tool.path, "l", limits=FAST, host=host())
    assert outcome.value == "l:"
    assert [(line.level, line.message) for line in outcome.logs] == [("info", "hello from wat")]
    assert outcome.usage.host_calls == 1


def test_a_host_error_kind_the_interface_lacks_is_a_daemon_bug(
    engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    class Confused(HostContext):
        def kv_get(self, key: str) -> bytes | None:
            raise HostError("timeout", "kv has no timeout case")

    with pytest.raises(InternalError) as info:
        run(engine, wasm("host"), "k", Confused(tool_id="dev.test.confused"))
    assert "KAMI bug" in info.value.message
    assert "'timeout' is not one of" in info.value.message


def test_an_exception_in_the_host_is_contained(engine: Engine, wasm: Callable[[str], Wasm]) -> None:
    class Broken(HostContext):
        def invoke(self, tool: str, input: str) -> str:
            raise RuntimeError("boom")

    tool = wasm("host")
    with pytest.raises(InternalError) as info:
        run(engine, tool, "i", Broken(tool_id="dev.test.broken"))
    assert "RuntimeError('boom')" in info.value.message
    # Nothing lingers for the next call (wasmtime-py keeps stray exceptions globally).
    assert run(engine, tool, "l") == "l:"


def test_host_calls_from_many_threads_keep_their_types(
    engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    # kv.get's result<option<list<u8>>, error> is what wasmtime-py cannot lower without
    # the engine's tagging fix, and its guesswork used a set shared by all threads.
    tool = wasm("host")
    wrong: list[str] = []

    def work(n: int) -> None:
        for i in range(60):
            if (n + i) % 2:
                value = run(engine, tool, "k", Granted())
                ok = value == "S:stored"
            else:
                value = run(engine, tool, "k", host("dev.test.t"))
                ok = value.startswith("0:dev.test.t has no key-value store grant")
            if not ok:
                wrong.append(value)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_log_lines_are_capped_in_count_and_length() -> None:
    context = HostContext(tool_id="t", max_log_lines=3, max_line_chars=10)
    for i in range(6):
        context.log("info", f"line {i} " + "x" * 20)
    assert [line.message[:6] for line in context.logs[:3]] == ["line 0", "line 1", "line 2"]
    assert context.logs[0].message.endswith("[17 more characters cut]")
    assert len(context.logs) == 4
    assert context.logs[3].level == "warn"
    assert context.logs[3].message.startswith("[kami] 3 more log lines dropped")


def test_unlowerable_host_values_never_escape_the_call(
    engine: Engine, wasm: Callable[[str], Wasm]
) -> None:
    # A lone surrogate cannot cross into the guest; it is replaced, not left to fail
    # after the host function returned (where wasmtime-py would park it globally).
    class Odd(HostContext):
        def invoke(self, tool: str, input: str) -> str:
            return "a\ud800b"

        def http_fetch(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse(status=70000)

    tool = wasm("host")
    assert run(engine, tool, "i", Odd(tool_id="dev.test.odd")) == "O:a?b"
    with pytest.raises(InternalError, match="does not fit the WIT u16"):
        run(engine, tool, "h", Odd(tool_id="dev.test.odd"))
    assert run(engine, tool, "l") == "l:"
