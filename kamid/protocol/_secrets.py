"""Secrets: where a manifest says each one goes, and the wire types that manage them.

A manifest declares each secret it needs and where the daemon injects it::

    [[security.secrets]]
    name = "GITHUB_TOKEN"
    hosts = ["api.github.com"]
    header = "Authorization"
    format = "Bearer {secret:GITHUB_TOKEN}"

The operator stores the value with ``kamictl secret set`` (``secrets.set``, the only
message that ever carries a value); nothing ever sends it back. The guest never sees it.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from ._netrules import HEADER_NAME, parse_host_rule, reserved_header

__all__ = [
    "MAX_SECRET_BYTES",
    "SECRET_NAME",
    "DeleteSecretParams",
    "DeleteSecretResult",
    "ListSecretsParams",
    "ListSecretsResult",
    "SecretInfo",
    "SecretRequest",
    "SetSecretParams",
    "SetSecretResult",
    "placeholder",
]

#: A secret's name: upper case letters, digits and underscores, starting with a letter.
SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
#: Longest secret value accepted.
MAX_SECRET_BYTES = 8192
_PLACEHOLDER = re.compile(r"\{secret:([^}]*)\}")
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


def placeholder(name: str) -> str:
    """The text a header template uses for secret ``name``: ``{secret:NAME}``."""
    return "{secret:" + name + "}"


def _invalid(attr: attrs.Attribute[Any], message: str) -> ValueError:
    # "@key message": the manifest's error formatter moves the key into the path shown.
    exc = ValueError(f"@{attr.name} {message}")
    exc.kami_validator = True  # type: ignore[attr-defined]
    return exc


def _check_name(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
    if not SECRET_NAME.match(value):
        raise _invalid(
            attr, "must be upper case letters, digits and _, starting with a letter (GITHUB_TOKEN)"
        )


def _check_hosts(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise _invalid(attr, "must list at least one host rule the secret may be sent to")
    for host in value:
        try:
            parse_host_rule(host)
        except ValueError as exc:
            raise _invalid(attr, str(exc)) from None


def _check_header(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
    if not HEADER_NAME.match(value):
        raise _invalid(attr, "must be an HTTP header name like Authorization or X-Api-Key")
    if reserved_header(value):
        raise _invalid(attr, f"names {value}, which only the daemon sets")


@attrs.frozen(kw_only=True)
class SecretRequest:
    """``[[security.secrets]]``: one secret and the requests it is injected into."""

    name: str = attrs.field(validator=_check_name)
    #: Host rules (the ``[security].net`` syntax); only requests a net grant allows *and*
    #: one of these matches carry the secret, redirects included (checked per hop).
    hosts: tuple[str, ...] = attrs.field(validator=_check_hosts)
    #: The request header that carries it.
    header: str = attrs.field(validator=_check_header)
    #: The header value, with ``{secret:NAME}`` where the value goes; default: the value.
    format: str | None = attrs.field(default=None)
    description: str = ""

    @format.validator
    def _check_format(self, attr: attrs.Attribute[Any], value: str | None) -> None:
        if value is None:
            return
        names = _PLACEHOLDER.findall(value)
        if names != [self.name]:
            raise _invalid(
                attr,
                f"must contain {placeholder(self.name)} exactly once and no other "
                "placeholder (e.g. Bearer " + placeholder(self.name) + ")",
            )
        if not _PRINTABLE.match(value):
            raise _invalid(attr, "must be printable ASCII: it becomes an HTTP header value")

    def render(self, value: str) -> str:
        """The header value with ``value`` in place of the placeholder."""
        template = self.format or placeholder(self.name)
        return template.replace(placeholder(self.name), value)


@attrs.frozen(kw_only=True)
class SetSecretParams:
    #: Tool id or unique name.
    tool: str
    name: str
    #: The value: printable ASCII, at most 8 KiB. Never logged, never sent back.
    value: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class SetSecretResult:
    tool: str
    name: str
    #: True when a value was already stored under this name.
    replaced: bool


@attrs.frozen(kw_only=True)
class ListSecretsParams:
    #: One tool (id or unique name); all installed tools when absent.
    tool: str | None = None


@attrs.frozen(kw_only=True)
class SecretInfo:
    """A secret's name and where it goes; never its value."""

    tool: str
    name: str
    #: Whether a value is stored.
    set: bool
    #: Whether the tool's manifest declares it (a value left from an older version may not be).
    declared: bool
    header: str | None = None
    hosts: list[str] = attrs.Factory(list)
    #: Unix time the value was stored.
    set_at: float | None = None


@attrs.frozen(kw_only=True)
class ListSecretsResult:
    secrets: list[SecretInfo]


@attrs.frozen(kw_only=True)
class DeleteSecretParams:
    tool: str
    name: str


@attrs.frozen(kw_only=True)
class DeleteSecretResult:
    tool: str
    name: str
