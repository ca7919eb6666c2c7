"""Semantic versions and ranges (kamid/protocol/_semver.py): precedence and npm-style ranges."""

from __future__ import annotations

import pytest

from kamid.protocol import Version, VersionRange, parse_ref

ALL = [
    "0.0.3",
    "0.0.4",
    "0.1.0",
    "0.2.3",
    "0.2.9",
    "0.3.0",
    "1.0.0",
    "1.2.0",
    "1.2.3",
    "1.2.9",
    "1.3.0",
    "1.9.9",
    "2.0.0-rc.1",
    "2.0.0",
    "2.5.0",
    "3.0.0",
]


def matching(text: str) -> list[str]:
    r = VersionRange.parse(text)
    return [v for v in ALL if r.matches(Version.parse(v))]


def test_precedence_follows_semver_2() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
        "10.0.0",
    ]
    parsed = [Version.parse(v) for v in ordered]
    assert sorted(reversed(parsed)) == parsed
    assert [str(v) for v in parsed] == ordered


def test_build_metadata_does_not_count() -> None:
    assert Version.parse("1.2.3+build.5") == Version.parse("1.2.3")
    assert str(Version.parse("1.2.3+build.5")) == "1.2.3+build.5"


@pytest.mark.parametrize("bad", ["1.2", "01.2.3", "1.2.3-", "v1.2.3", "1.2.3.4", "", "a.b.c"])
def test_bad_versions_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="semantic version"):
        Version.parse(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("^1.2", ["1.2.0", "1.2.3", "1.2.9", "1.3.0", "1.9.9"]),
        ("^1.2.3", ["1.2.3", "1.2.9", "1.3.0", "1.9.9"]),
        ("^0.2.3", ["0.2.3", "0.2.9"]),
        ("^0.0.3", ["0.0.3"]),
        ("^0", ["0.0.3", "0.0.4", "0.1.0", "0.2.3", "0.2.9", "0.3.0"]),
        ("~1.2.3", ["1.2.3", "1.2.9"]),
        ("~1.2", ["1.2.0", "1.2.3", "1.2.9"]),
        ("~1", ["1.0.0", "1.2.0", "1.2.3", "1.2.9", "1.3.0", "1.9.9"]),
        (">=2,<3", ["2.0.0", "2.5.0"]),
        (">=2 <3", ["2.0.0", "2.5.0"]),
        (">= 2, < 3", ["2.0.0", "2.5.0"]),
        ("1.2.3", ["1.2.3"]),
        ("=1.2.3", ["1.2.3"]),
        ("1.2", ["1.2.0", "1.2.3", "1.2.9"]),
        ("1.2.x", ["1.2.0", "1.2.3", "1.2.9"]),
        ("1", ["1.0.0", "1.2.0", "1.2.3", "1.2.9", "1.3.0", "1.9.9"]),
        (">1.2", ["1.3.0", "1.9.9", "2.0.0", "2.5.0", "3.0.0"]),
        (">1.2.3 <=1.3.0", ["1.2.9", "1.3.0"]),
        (
            "<=1.2",
            [
                "0.0.3",
                "0.0.4",
                "0.1.0",
                "0.2.3",
                "0.2.9",
                "0.3.0",
                "1.0.0",
                "1.2.0",
                "1.2.3",
                "1.2.9",
            ],
        ),
        ("<0.1", ["0.0.3", "0.0.4"]),
        ("^1.2 || ^3", ["1.2.0", "1.2.3", "1.2.9", "1.3.0", "1.9.9", "3.0.0"]),
        ("*", [v for v in ALL if "-" not in v]),
        ("", [v for v in ALL if "-" not in v]),
    ],
)
def test_ranges(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


def test_prereleases_only_when_the_range_names_one() -> None:
    assert "2.0.0-rc.1" in matching("^2.0.0-0")
    assert "2.0.0-rc.1" not in matching("^2")
    assert "2.0.0-rc.1" in matching(">=2.0.0-rc.0")
    assert "2.0.0-rc.1" in matching("^2.0.0-rc.0")
    assert "2.0.0-rc.1" not in matching(">=1.9.0")  # another major.minor.patch's pre-release
    assert "2.0.0-rc.1" not in matching("*")


def test_best_is_the_highest_match() -> None:
    versions = [Version.parse(v) for v in ALL]
    assert str(VersionRange.parse("^1.2").best(versions)) == "1.9.9"
    assert str(VersionRange.parse("~1.2.3").best(versions)) == "1.2.9"
    assert str(VersionRange.parse(">=2,<3").best(versions)) == "2.5.0"
    assert VersionRange.parse("^4").best(versions) is None


@pytest.mark.parametrize(
    "bad", ["^", "~>1", ">=1.2.3-", "1.2.3.4", "latest", "^1.2-rc.1", "x" * 300]
)
def test_bad_ranges_are_refused_with_the_offending_part(bad: str) -> None:
    with pytest.raises(ValueError, match=r"range|not a version range"):
        VersionRange.parse(bad)


def test_parse_ref() -> None:
    tool, wanted = parse_ref("dev.kami.echo@^1.2")
    assert tool == "dev.kami.echo"
    assert str(wanted) == "^1.2"
    tool, wanted = parse_ref("dev.kami.echo")
    assert str(wanted) == "*"
    with pytest.raises(ValueError, match="nothing after @"):
        parse_ref("dev.kami.echo@")
    with pytest.raises(ValueError, match="not a tool id"):
        parse_ref("Echo@1")
    with pytest.raises(ValueError, match="not understood"):
        parse_ref("dev.kami.echo@banana")
