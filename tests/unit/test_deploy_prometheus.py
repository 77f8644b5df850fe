"""Operators' files: the Prometheus rules and scrape example (checked and unit-tested by promtool) and
the Grafana dashboard (its structure, and its queries parsed by promtool as PromQL).

Which metric names these files may use is checked against a real scrape in
tests/integration/test_metrics_names.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import PROJECT_ROOT

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = (PROMETHEUS_DIR / "alerts_test.yml", PROMETHEUS_DIR / "retention_test.yml")
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "audiokit.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own variables, given plausible values so that promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "audiokit"}


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: `make setup` installs it (Debian: apt-get install prometheus)")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def graph_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def test_alert_rules_pass_promtool_check() -> None:
    assert f"SUCCESS: {len(alert_rules())} rules found" in promtool("check", "rules", ALERTS.name)


@pytest.mark.slow
def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    promtool("test", "rules", *(path.name for path in RULE_TESTS))


def test_every_alert_has_a_unit_test_severity_and_a_readme_entry() -> None:
    tested = {
        check["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for check in test.get("alert_rule_test", [])
        if check["exp_alerts"]  # a test that it fires, not only that it stays quiet
    }
    readme = (PROJECT_ROOT / "README.md").read_text()
    for rule in alert_rules():
        assert rule["alert"] in tested, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert f"`{rule['alert']}`" in readme, f"README.md does not explain {rule['alert']}"


def test_prometheus_example_configuration_is_valid(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == [ALERTS.name]
    (scrape,) = config["scrape_configs"]
    assert (scrape["job_name"], scrape["metrics_path"]) == ("audiokit", "/metrics")
    assert scrape["authorization"]["type"] == "Bearer"  # /metrics needs the admin key
    # promtool checks the key file and the rule files exist: point it at copies.
    key = tmp_path / "audiokit-admin-key"
    key.write_text("admin-key\n")
    scrape["authorization"]["credentials_file"] = str(key)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_dashboard_asks_for_its_prometheus_data_source() -> None:
    loaded = dashboard()
    assert (loaded["uid"], loaded["title"]) == ("audiokit", "audiokit")
    assert loaded.get("id") is None  # loads as provisioned: no id, no import step with __inputs
    assert "__inputs" not in loaded
    variables = {variable["name"]: variable for variable in loaded["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["job"]["datasource"] == DATASOURCE


def test_every_dashboard_panel_has_a_title_data_source_and_queries() -> None:
    panels = dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in graph_panels():
        assert panel["title"], panel["id"]
        assert panel["description"], panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
            assert 'job="$job"' in target["expr"], (panel["title"], target["expr"])
        grid = panel["gridPos"]
        assert min(grid["w"], grid["h"]) > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for number, panel in enumerate(graph_panels()):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unknown variable in {expr}"
            rules.append({"record": f"dashboard:panel{number}:{target['refId']}", "expr": expr})
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", "queries.yml", cwd=tmp_path)


def test_metric_names_are_found_in_rules_and_dashboard() -> None:
    # The helper the drift test relies on finds every name, including those in label_values().
    names = used_metric_names()
    assert {"audiokit_queue_oldest_job_age_seconds", "audiokit_workers_alive", "audiokit_redis_info"} <= names
    assert all(re.fullmatch(r"audiokit_[a-z0-9_]+", name) for name in names)


def used_metric_names() -> set[str]:
    """Every `audiokit_*` name in the alert rules and the dashboard's queries and variables."""
    return {name for expr in used_queries() for name in re.findall(r"\baudiokit_[a-z0-9_]+", expr)}


def used_queries() -> list[str]:
    """Every PromQL text of the alert rules and of the dashboard (panels and variables)."""
    queries = [rule["expr"] for rule in alert_rules()]
    queries += [target["expr"] for panel in graph_panels() for target in panel["targets"]]
    queries += [variable.get("definition", "") for variable in dashboard()["templating"]["list"]]
    return queries
