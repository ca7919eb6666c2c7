"""The exec-only fast path of kamictl's command line: same answers as the whole parser."""

from __future__ import annotations

import pytest

from kamictl.cli import COMMAND_MODULES, _parse, _parser
from tests.conftest import modules_loaded

EXEC_LINES = [
    ["exec", "echo"],
    ["exec", "dev.test.echo", "--input", '{"text": "hi"}', "--json"],
    ["--json", "--no-autostart", "exec", "echo", "-i", "@in.json", "--batch"],
    ["exec", "echo", "--timeout-ms", "50", "--input=-", "--no-autostart"],
    ["exec", "exec", "--ba"],
    ["run", "tool.wasm", "-i", "[1]", "--timeout-ms=7"],
]


@pytest.mark.parametrize("argv", EXEC_LINES)
def test_exec_lines_parse_the_same_as_with_the_whole_parser(argv: list[str]) -> None:
    assert vars(_parse(argv)) == vars(_parser().parse_args(argv))
    assert vars(_parser(exec_only=True).parse_args(argv)) == vars(_parser().parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "code", "output"),
    [
        (["exec"], 2, "kamictl exec: error: the following arguments are required: tool"),
        (["exec", "echo", "--timeout-ms", "soon"], 2, "invalid int value: 'soon'"),
        (["exec", "echo", "--input"], 2, "argument --input/-i: expected one argument"),
        (["exec", "echo", "--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
        (["-h", "exec"], 0, "Control kamid: install, inspect and run sandboxed"),
        (["exec", "echo", "--help"], 0, "queue behind interactive calls when kamid is busy"),
    ],
)
def test_anything_else_is_answered_by_the_whole_parser(
    argv: list[str], code: int, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _parse(argv)
    assert info.value.code == code
    captured = capsys.readouterr()
    assert output in captured.out + captured.err


def test_other_commands_still_parse() -> None:
    args = _parse(["inspect", "exec"])
    assert (args.command, args.tool) == ("inspect", "exec")
    assert _parse(["list", "--json"]).command == "list"


def test_exec_does_not_import_the_other_commands() -> None:
    setup = "from kamictl.cli import _parse\n_parse(['exec', 'echo'])"
    assert modules_loaded(setup, COMMAND_MODULES) == []
