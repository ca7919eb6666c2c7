"""Semantic versions (semver.org 2.0.0) and the version ranges ``kamictl install`` takes.

Own code rather than a library: ``packaging`` implements PEP 440, whose specifiers and
pre-release rules are not semver's (``~=`` is not ``~``, there is no ``^``), and the one
maintained semver range library would be a new dependency for ~200 lines.

Ranges follow npm's grammar, minus hyphen ranges::

    1.2.3  =1.2.3           exactly that version
    1.2    1.2.x  =1.2      >=1.2.0, <1.3.0          (a partial version is a wildcard)
    1      1.x              >=1.0.0, <2.0.0
    *      x      (empty)   any version
    ^1.2.3                  >=1.2.3, <2.0.0          (^0.2.3: <0.3.0; ^0.0.3: <0.0.4)
    ~1.2.3                  >=1.2.3, <1.3.0          (~1: <2.0.0)
    >=2,<3  >=2 <3          both (a comma or a space joins comparators)
    ^1.2 || ^2              either

A version with a pre-release tag (``2.0.0-rc.1``) satisfies a range only when some
comparator of the matching alternative names a pre-release of the same major.minor.patch
(``>=2.0.0-rc.0``): ``^1`` never drifts onto a release candidate.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Version", "VersionRange", "parse_ref"]

_NUM = r"0|[1-9]\d*"
_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
_VERSION_RE = re.compile(
    rf"^({_NUM})\.({_NUM})\.({_NUM})"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_PARTIAL_RE = re.compile(
    rf"^v?({_NUM}|[xX*])(?:\.({_NUM}|[xX*])(?:\.({_NUM}|[xX*])"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?(?:\+[0-9a-zA-Z.-]+)?)?)?$"
)
_COMPARATOR_RE = re.compile(r"^(\^|~|>=|<=|>|<|=)?\s*(.*)$")
_ID_RE = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
_WILD = frozenset({"x", "X", "*"})

Op = Literal[">=", "<=", ">", "<", "="]


@functools.total_ordering
@attrs.frozen(eq=False)
class Version:
    """A semantic version; ordered by semver precedence (build metadata is ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parses ``1.2.3``, ``1.2.3-rc.1``, ``1.2.3+build.5``.

        Raises:
            ValueError: not a semantic version; the message says what one looks like.
        """
        m = _VERSION_RE.match(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise ValueError(
                f"{text!r} is not a semantic version; use MAJOR.MINOR.PATCH like 1.2.3 "
                "(optionally -prerelease and +build)"
            )
        pre = tuple(m.group(4).split(".")) if m.group(4) else ()
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, m.group(5) or "")

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def _key(self) -> tuple[tuple[int, int, int], int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after its pre-releases; numeric identifiers sort before
        # alphanumeric ones, and a longer list wins when one is a prefix of the other.
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease)
        return (self.release, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


@attrs.frozen
class _Comparator:
    op: Op
    version: Version

    def test(self, v: Version) -> bool:
        if self.op == "=":
            return v == self.version
        if self.op == ">=":
            return v >= self.version
        if self.op == ">":
            return v > self.version
        if self.op == "<=":
            return v <= self.version
        return v < self.version


@attrs.frozen
class VersionRange:
    """A parsed range; ``str()`` gives back the text it was parsed from."""

    text: str
    #: Alternatives (``||``), each a list of comparators that must all hold.
    alternatives: tuple[tuple[_Comparator, ...], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """Parses a range such as ``^1.2``, ``~1.2.3``, ``>=2,<3``, ``1.2.3`` or ``*``.

        Raises:
            ValueError: the message names the part that is not understood.
        """
        if not isinstance(text, str) or len(text) > 256:
            raise ValueError(f"{text!r} is not a version range")
        alternatives = []
        for alternative in text.split("||"):
            parts = [p for p in re.split(r"[,\s]+", _join_ops(alternative.strip())) if p]
            comparators: list[_Comparator] = []
            for part in parts or ["*"]:
                comparators += _desugar(part, text)
            alternatives.append(tuple(comparators))
        return cls(text.strip() or "*", tuple(alternatives))

    def matches(self, version: Version) -> bool:
        return any(_satisfies(alt, version) for alt in self.alternatives)

    def best(self, versions: Iterable[Version]) -> Version | None:
        """The highest of ``versions`` in this range, or None."""
        return max((v for v in versions if self.matches(v)), default=None)

    def __str__(self) -> str:
        return self.text


def _join_ops(text: str) -> str:
    # ">= 1.2" is one comparator; the split on spaces must not cut it in two.
    return re.sub(r"(\^|~|>=|<=|>|<|=)\s+", r"\1", text)


def _satisfies(comparators: tuple[_Comparator, ...], v: Version) -> bool:
    if not all(c.test(v) for c in comparators):
        return False
    if not v.prerelease:
        return True
    return any(c.version.prerelease and c.version.release == v.release for c in comparators)


def _desugar(part: str, whole: str) -> list[_Comparator]:
    m = _COMPARATOR_RE.match(part)
    assert m is not None  # the pattern matches every string
    op, rest = m.group(1) or "", m.group(2)
    p = _PARTIAL_RE.match(rest)
    if p is None:
        raise ValueError(
            f"version range {whole!r}: {part!r} is not understood; use forms like 1.2.3, "
            "^1.2, ~1.2.3, >=2,<3 or *"
        )
    raw = [p.group(1), p.group(2), p.group(3)]
    pre = tuple(p.group(4).split(".")) if p.group(4) else ()
    # Everything after the first wildcard (or missing part) is a wildcard too.
    nums: list[int] = []
    for item in raw:
        if item is None or item in _WILD:
            break
        nums.append(int(item))
    if pre and len(nums) < 3:
        raise ValueError(f"version range {whole!r}: {part!r}: a pre-release needs a full version")
    full = len(nums) == 3

    def v(*parts: int) -> Version:
        major, minor, patch = [*parts, 0, 0][:3]
        return Version(major, minor, patch)

    def ge(x: Version) -> _Comparator:
        return _Comparator(">=", x)

    def lt(x: Version) -> _Comparator:
        return _Comparator("<", x)

    if not nums:
        return [] if op in ("", "=", ">=", "<=", "^", "~") else [lt(v(0))]
    base = Version(nums[0], nums[1], nums[2], pre) if full else v(*nums)
    if op == "^":
        if nums[0] > 0 or len(nums) == 1:
            upper = v(nums[0] + 1)
        elif len(nums) == 2 or nums[1] > 0:
            upper = v(0, nums[1] + 1)
        else:
            upper = v(0, 0, nums[2] + 1)
        return [ge(base), lt(upper)]
    if op == "~":
        upper = v(nums[0] + 1) if len(nums) == 1 else v(nums[0], nums[1] + 1)
        return [ge(base), lt(upper)]
    # The version just past the wildcard: 1.2 -> 1.3.0, 1 -> 2.0.0.
    bump = v(nums[0] + 1) if len(nums) == 1 else v(nums[0], nums[1] + 1) if not full else None
    if op in ("", "="):
        return [_Comparator("=", base)] if bump is None else [ge(base), lt(bump)]
    if op == ">=":
        return [ge(base)]
    if op == "<":
        return [lt(base)]
    if op == ">":
        return [_Comparator(">", base)] if bump is None else [ge(bump)]
    # "<="
    return [_Comparator("<=", base)] if bump is None else [lt(bump)]


def parse_ref(text: str) -> tuple[str, VersionRange]:
    """Splits ``dev.kami.echo@^1.2`` into the tool id and its range (``*`` when absent).

    Raises:
        ValueError: the id is not a reverse-DNS tool id, or the range is not understood.
    """
    tool_id, sep, range_text = text.strip().partition("@")
    if not _ID_RE.match(tool_id):
        raise ValueError(
            f"{tool_id!r} is not a tool id; ids are reverse-DNS names like dev.kami.echo "
            "(install a directory or a .kami file by its path)"
        )
    if sep and not range_text.strip():
        raise ValueError(f"{text!r}: nothing after @; give a version or range, e.g. {tool_id}@^1")
    return tool_id, VersionRange.parse(range_text if sep else "*")
