"""deploy/prometheus and deploy/grafana: the alert rules pass promtool's check and their unit
tests (alerts_test.yaml: each alert fires on the series that should fire it and stays silent on
healthy ones), the scrape configuration is valid, every query of the rules and of the dashboard
parses and names only metrics that the daemons serve (docs/operations.md's table, itself checked
against /metrics by the integration tests), and every alert has its runbook row in the docs."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys

import yaml

from tests.metrics_doc import ROOT, documented

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "fleetcap.json"
# Standard series every fleetcap process serves (prometheus_client's process collector), and
# Prometheus' own `up`.
STANDARD = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes"}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("promtool")
    assert tool, "promtool comes with `make setup` (from Debian's prometheus package, into .venv/bin)"
    return subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())["groups"] for r in g["rules"]]


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def known_series() -> set[str]:
    names = set(STANDARD)
    for name, (kind, _) in documented().items():
        names |= {name + s for s in HISTOGRAM_SERIES} if kind == "histogram" else {name}
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:fleetcap|process)_[a-z_]+|up)\b(?=\s*[{\[)]|\s*(?:==|>|<|offset|$))", expr))


def test_alert_rules_pass_promtool_and_their_unit_tests():
    r = promtool("check", "rules", "alerts.yaml")
    assert r.returncode == 0 and f"SUCCESS: {len(rules())} rules found" in r.stdout, r.stdout + r.stderr
    r = promtool("test", "rules", "alerts_test.yaml")
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    # Every alert has at least one case that expects it to fire.
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yaml").read_text())["tests"]
    fired = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t["exp_alerts"]}
    assert fired == {r["alert"] for r in rules()}


def test_a_broken_rule_fails_its_unit_test(tmp_path):
    # The unit tests can fail: the same cases against rules whose error threshold is raised.
    broken = (PROMETHEUS / "alerts.yaml").read_text().replace("> 0.05", "> 0.5")
    (tmp_path / "alerts.yaml").write_text(broken)
    (tmp_path / "alerts_test.yaml").write_text((PROMETHEUS / "alerts_test.yaml").read_text())
    r = promtool("test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert r.returncode == 1 and "alertname: FleetcapApiErrors" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_scrape_configuration_is_valid():
    r = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["job_name"] for j in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == {"fleetcap-coordinator", "fleetcap-agent", "fleetcap-gateway"}
    assert set(re.findall(r'job="([a-z-]+)"', (PROMETHEUS / "alerts.yaml").read_text())) <= jobs


def test_every_alert_has_labels_annotations_and_a_runbook_row():
    doc = (ROOT / "docs" / "operations.md").read_text()
    documented_alerts = set(re.findall(r"^\| `(Fleetcap[A-Za-z]+)` \|", doc, re.M))
    assert documented_alerts == {r["alert"] for r in rules()}
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_rules_and_dashboard_name_only_metrics_the_daemons_serve():
    exprs = [r["expr"] for r in rules()] + dashboard_queries()
    named = set().union(*(metric_names(e) for e in exprs))
    assert named - known_series() == set()
    # Every fleetcap family is on the dashboard.
    board = set().union(*(metric_names(e) for e in dashboard_queries()))
    families = set(documented())
    shown = {n for n in families if n in board or any(n + s in board for s in HISTOGRAM_SERIES)}
    assert families - shown == set()


def test_every_dashboard_query_parses(tmp_path):
    # promtool parses each query as a recording rule ($__rate_interval is Grafana's; 5m here).
    queries = dashboard_queries()
    group = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"fleetcap:panel_query_{i}", "expr": q.replace("$__rate_interval", "5m")} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(group))
    r = promtool("check", "rules", str(tmp_path / "queries.yaml"))
    assert r.returncode == 0 and f"SUCCESS: {len(queries)} rules found" in r.stdout, r.stdout + r.stderr


def test_dashboard_layout():
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
