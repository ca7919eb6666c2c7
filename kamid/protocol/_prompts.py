"""Prompts a tool's manifest declares, served to agents as MCP prompts.

In ``tool.toml``::

    [prompts.shout]
    title = "Shout it"                      # optional
    description = "Echo a text three times."
    text = "Use the echo tool to repeat {text} three times, then read it back."

    [prompts.shout.arguments.text]
    description = "What to shout"
    required = true

``{name}`` in ``text`` is replaced by that argument's value; ``{{`` and ``}}`` are literal
braces. Every placeholder must be a declared argument.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = [
    "PROMPT_KEY_RE",
    "PromptArgument",
    "PromptSpec",
    "check_prompt_names",
    "placeholders",
    "render_prompt",
]

PROMPT_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*)\}")


def placeholders(text: str) -> list[str]:
    """The argument names ``text`` refers to, in order of first use."""
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(text):
        if match[1] and match[1] not in names:
            names.append(match[1])
    return names


def render_prompt(text: str, arguments: dict[str, str]) -> str:
    """``text`` with each ``{name}`` replaced (an absent optional argument becomes "")."""

    def substitute(match: re.Match[str]) -> str:
        if match[1] is None:
            return match[0][0]
        return arguments.get(match[1], "")

    return _PLACEHOLDER.sub(substitute, text)


@attrs.frozen(kw_only=True)
class PromptArgument:
    description: str = ""
    required: bool = False


def _check_text(instance: PromptSpec, _attr: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError("text must not be empty")
    unknown = [n for n in placeholders(value) if n not in instance.arguments]
    if unknown:
        names = ", ".join(f"{{{n}}}" for n in unknown)
        raise ValueError(
            f"text uses {names} but declares no such argument; add "
            f"[prompts.<name>.arguments.{unknown[0]}] or write {{{{ }}}} for literal braces"
        )


@attrs.frozen(kw_only=True)
class PromptSpec:
    description: str
    arguments: dict[str, PromptArgument] = attrs.Factory(dict)
    text: str = attrs.field(validator=_check_text)
    title: str | None = None


def check_prompt_names(
    _instance: object, attr: attrs.Attribute[Any], value: dict[str, PromptSpec] | None
) -> None:
    """Validator for ``Manifest.prompts``: every prompt key is a short lower-case name."""
    bad = [key for key in value or {} if not PROMPT_KEY_RE.match(key)]
    if bad:
        # "@key message": the manifest's error formatter moves the key into the path.
        exc = ValueError(
            f"@{attr.name} has invalid prompt name(s) {bad}; use lower-case letters, digits, "
            '"-" and "_" (at most 64 characters)'
        )
        exc.kami_validator = True  # type: ignore[attr-defined]
        raise exc
