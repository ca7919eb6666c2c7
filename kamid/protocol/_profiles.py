"""Agent profiles: named sets of tools, so that each agent sees only what it needs.

``kamictl mcp --profile NAME`` shows an agent only the profile's tools; it cannot call the
others. Profiles live in the daemon's store.
"""

from __future__ import annotations

import re

import attrs

__all__ = [
    "PROFILE_NAME_RE",
    "CreateProfileParams",
    "DeleteProfileParams",
    "DeleteProfileResult",
    "ListProfilesParams",
    "ListProfilesResult",
    "Profile",
]

PROFILE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@attrs.frozen(kw_only=True)
class Profile:
    name: str
    #: Tool ids, sorted.
    tools: list[str]
    created_at: float
    updated_at: float
    #: Ids in ``tools`` that are not installed now (a profile may name tools to come).
    missing: list[str] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class CreateProfileParams:
    #: Lower case letters, digits, ``-`` and ``_``; at most 64 characters.
    name: str
    #: Tool ids or unique short names of installed tools; full ids of tools not installed
    #: yet are accepted too.
    tools: list[str]
    #: Replace an existing profile of that name instead of refusing.
    replace: bool = False


@attrs.frozen(kw_only=True)
class ListProfilesParams:
    pass


@attrs.frozen(kw_only=True)
class ListProfilesResult:
    profiles: list[Profile]


@attrs.frozen(kw_only=True)
class DeleteProfileParams:
    name: str


@attrs.frozen(kw_only=True)
class DeleteProfileResult:
    name: str
    #: MCP sessions that were using it; they now see no tools.
    sessions: int = 0
