"""docs/operations.md's metric table against what a daemon's /metrics serves."""

from __future__ import annotations

import pathlib
import re

from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\| `(fleetcap_[a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|")


def documented(prefix: str = "fleetcap_") -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, label names) for every row of the metric table under `prefix`."""
    out = {}
    for line in (ROOT / "docs" / "operations.md").read_text().splitlines():
        if m := _ROW.match(line):
            name, kind, labels = m.groups()
            if name.startswith(prefix):
                out[name] = (kind, frozenset(re.findall(r"`([a-z_]+)`", labels)))
    return out


def served(text: str, prefix: str = "fleetcap_") -> dict[str, tuple[str, frozenset[str]]]:
    """The same shape from an exposition in the text format: counters by their `_total` name,
    labels from the samples (a histogram's `le` left out)."""
    out = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        if name.startswith(prefix):
            labels = frozenset(k for s in family.samples for k in s.labels if k != "le")
            out[name] = (family.type, labels)
    return out


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples}
