"""The alert rules file: every mistake is named by rule index and field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleetcap.clients.rest.alerts import AlertRules, RuleError


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], 'rules: the file must be {"rules": [...]}'),
        ({"rules": [{}]}, "rules[0].name: required, a non-empty string"),
        ({"rules": [{"name": "a", "colour": 1}]}, "rules[0].colour: unknown field"),
        ({"rules": [{"name": "a", "source": "pagerduty"}]}, "rules[0].source: must be any, azure-monitor or alertmanager"),
        ({"rules": [{"name": "a", "properties": {"target": "vm1"}}]}, "rules[0].properties: an object of capture properties"),
        ({"rules": [{"name": "a", "properties": {"timeLimitInSeconds": "x"}}]}, "rules[0].properties: Failed to parse"),
        ({"rules": [{"name": "a", "maxCaptures": 0}]}, "rules[0].maxCaptures: must be a positive integer"),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, "rules: the name 'a' is used twice"),
    ],
)
def test_bad_rules_are_named(doc, message):
    with pytest.raises(RuleError) as e:
        AlertRules.parse(doc)
    assert str(e.value).startswith(message)


def test_matching_by_source_and_fields():
    rules = AlertRules.parse(
        {
            "rules": [
                {"name": "a", "source": "azure-monitor", "match": {"alertRule": "X"}},
                {"name": "b", "match": {"alertname": "X"}},
                {"name": "c"},
            ]
        }
    )
    assert [r.name for r in rules.matching("azure-monitor", {"alertRule": "X"})] == ["a", "c"]
    assert [r.name for r in rules.matching("alertmanager", {"alertname": "X", "vm": "v"})] == ["b", "c"]
    assert [r.name for r in rules.matching("alertmanager", {"alertname": "Y"})] == ["c"]


def test_gateway_refuses_a_bad_rules_file_at_start(tmp_path):
    bad = tmp_path / "rules.json"
    bad.write_text(json.dumps({"rules": [{"name": "a", "maxCaptures": -1}]}))
    r = subprocess.run(
        [sys.executable, "-m", "fleetcap", "gateway", "--alert-rules", str(bad), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == "fleetcap: error: --alert-rules: rules[0].maxCaptures: must be a positive integer"
