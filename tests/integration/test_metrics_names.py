"""The alert rules and the dashboard use only metrics, labels and label values a real `/metrics` exports.

A renamed metric or label would leave an alert that never fires and a panel that stays empty,
with no error anywhere: this scrapes a real API (uvicorn, Redis, a worker) and compares.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.settings import PROJECT_ROOT, Settings
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.processes import ApiServer, ManagedProcess, wait_for
from tests.unit.test_deploy_prometheus import used_metric_names, used_queries

pytestmark = pytest.mark.one_database

# Added by Prometheus to every series it scrapes, not by the application.
TARGET_LABELS = frozenset({"job", "instance"})
# Counted by the retention job (jobs/retention.py), which is being written next to this change:
# until that module exists this name cannot be scraped. Once it exists, nothing is exempt.
RETENTION_METRIC = "audiokit_retention_deleted_total"
PENDING = frozenset() if (PROJECT_ROOT / "jobs" / "retention.py").exists() else frozenset({RETENTION_METRIC})
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
SELECTOR = re.compile(r"\b(audiokit_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def exported(text: str) -> dict[str, dict[str, set[str]]]:
    """Sample name -> label -> values seen, of one scrape; families without samples yet count by name."""
    found: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            found.setdefault(family.name + suffix, {})
        for sample in family.samples:
            labels = found.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return found


@pytest.mark.slow
def test_rules_and_dashboard_use_only_exported_metrics_and_labels(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    settings = make_settings(use_rq_queue=True)
    api = api_server(settings)
    workers(settings)
    with api.client(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        client.get("/metrics")  # the request histogram has samples from the second scrape on

        def scraped() -> dict[str, dict[str, set[str]]] | None:
            answer = client.get("/metrics")
            assert answer.status_code == 200, answer.text
            metrics = exported(answer.text)
            live = "audiokit_workers_alive" in metrics and "audiokit_redis_info" in metrics
            return metrics if live else None

        metrics = wait_for(scraped, 30, "a scrape with Redis and workers")

    names = used_metric_names()
    missing = sorted(names - PENDING - metrics.keys())
    assert not missing, f"used in deploy/ but not exported by /metrics: {missing}"

    problems = []
    for query in used_queries():
        for name, matchers in SELECTOR.findall(query):
            if name in PENDING:
                continue
            for label, operator, value in MATCHER.findall(matchers):
                if label in TARGET_LABELS:
                    continue
                seen = metrics[name].get(label)
                if seen is None:
                    problems.append(f"{name} has no label {label}")
                elif operator == "=" and value not in seen:
                    problems.append(f"{name}{{{label}={value!r}}}: exported values are {sorted(seen)}")
                elif operator == "=~" and re.fullmatch(r"[\w|]+", value):
                    problems += [
                        f"{name}{{{label}=~{alt!r}}} never exported" for alt in value.split("|") if alt not in seen
                    ]
    assert not problems, problems
