"""A strict reader of the Prometheus text exposition format (0.0.4), for the tests.

Enough to prove that what kamid serves parses: every sample belongs to a family declared
once with HELP and TYPE before its samples, label values are correctly escaped, and each
histogram's buckets are cumulative and end with le="+Inf" equal to its _count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["Family", "parse"]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = rf'({_NAME})="((?:[^"\\\n]|\\\\|\\"|\\n)*)"'
_SAMPLE = re.compile(rf"^({_NAME})(\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})? (\S+)$")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}


@dataclass
class Family:
    name: str
    help: str = ""
    type: str = ""
    #: (sample name, labels, value)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, name: str | None = None, **labels: str) -> float:
        for sample, got, value in self.samples:
            if sample == (name or self.name) and got == labels:
                return value
        raise KeyError(f"{name or self.name}{labels} not in {self.samples}")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), value)


def _value(text: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(text) or float(text)


def parse(text: str) -> dict[str, Family]:
    """Families by name; raises AssertionError on anything out of format."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"{name} declared twice"
            current = families[name] = Family(name, help=help_text)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is not None, f"TYPE {name} without HELP"
            assert current.name == name, f"TYPE {name} without HELP"
            assert not current.type, f"two TYPE lines for {name}"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), kind
            current.type = kind
            continue
        assert not line.startswith("#"), f"unexpected comment: {line!r}"
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        assert current is not None, f"sample before HELP: {line!r}"
        assert current.type, f"sample before TYPE: {line!r}"
        sample = match[1]
        allowed = [current.name + s for s in _SUFFIXES.get(current.type, ("",))]
        assert sample in allowed, f"{sample} does not belong to {current.name}"
        labels = dict((k, _unescape(v)) for k, v in re.findall(_LABEL, match[2] or ""))
        current.samples.append((sample, labels, _value(match.groups()[-1])))
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
        if family.type == "counter":
            assert family.name.endswith("_total"), family.name
    return families


def _check_histogram(family: Family) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for sample, labels, value in family.samples:
        if sample.endswith("_bucket"):
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(key, []).append((_value(labels["le"]), value))
    for key, buckets in series.items():
        bounds = [b for b, _ in buckets]
        counts = [c for _, c in buckets]
        assert bounds == sorted(bounds), bounds
        assert bounds[-1] == math.inf, bounds
        assert counts == sorted(counts), f"{family.name}{key} buckets are not cumulative"
        count = family.value(f"{family.name}_count", **dict(key))
        assert counts[-1] == count, "the +Inf bucket must equal _count"
