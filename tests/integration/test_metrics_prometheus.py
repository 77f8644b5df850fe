"""A real Prometheus (Debian's package) scrapes a real API with deploy/prometheus's configuration and rules.

It shows the scrape configuration works with the admin key, every alert rule evaluates against
real series without an error (a `many-to-many` match, say, only shows at evaluation), and an
alert goes pending when its condition holds: here no worker runs while an upload waits.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.settings import PROJECT_ROOT, QUEUE_NORMAL, Settings
from devserver.ports import free_port
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.processes import ApiServer, ManagedProcess, wait_for

pytestmark = pytest.mark.one_database

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"


class Prometheus:
    """`prometheus` on a free loopback port, with its own storage, evaluating rules every second."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is missing: `make setup` installs it (Debian: apt-get install prometheus)")
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        argv = [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}"]
        argv += [f"--web.listen-address={self.url.removeprefix('http://')}"]
        self.process = ManagedProcess(argv, dict(os.environ), workdir / "prometheus.log", cwd=workdir)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (empty while Prometheus is starting)."""
        if not self.process.alive:
            raise AssertionError(f"prometheus exited:\n{self.process.output()[-3000:]}")
        try:
            answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        except httpx.HTTPError:
            return []
        if answer.status_code != 200:
            return []
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/rules", timeout=5)
        answer.raise_for_status()
        return [rule for group in answer.json()["data"]["groups"] for rule in group["rules"]]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[ApiServer], Prometheus]]:
    started: list[Prometheus] = []

    def start(api: ApiServer) -> Prometheus:
        """The example configuration as shipped, pointed at `api` and at copies of the key and rules."""
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"] |= {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        (scrape,) = config["scrape_configs"]
        key = tmp_path / "audiokit-admin-key"
        key.write_text(ADMIN_KEY + "\n")
        scrape["authorization"]["credentials_file"] = str(key)
        scrape["static_configs"] = [{"targets": [api.url.removeprefix("http://")]}]
        shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
        server = Prometheus(config, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.stop()


@pytest.mark.slow
def test_prometheus_scrapes_the_api_and_evaluates_every_alert_rule(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    prometheus: Callable[[ApiServer], Prometheus],
) -> None:
    settings = make_settings(use_rq_queue=True)  # and no worker: the upload waits, AudiokitNoWorkers holds
    api = api_server(settings)
    with api.client() as client:
        assert client.post("/audio", files={"file": ("tone.wav", wav_bytes(0.5), "audio/wav")}).status_code == 202
    server = prometheus(api)

    up = wait_for(lambda: server.query('up{job="audiokit"} == 1'), 60, "Prometheus to scrape the API")
    assert up[0]["metric"]["instance"] == api.url.removeprefix("http://")
    waiting = server.query(f'audiokit_queue_oldest_job_age_seconds{{queue="{QUEUE_NORMAL}"}} > 0')
    assert len(waiting) == 1, waiting

    pending = wait_for(
        lambda: server.query('ALERTS{alertname="AudiokitNoWorkers", alertstate="pending"}'),
        60,
        "AudiokitNoWorkers to go pending",
    )
    assert pending[0]["metric"]["severity"] == "critical"

    def evaluated() -> list[dict[str, Any]] | None:
        rules = server.rules()
        return rules if all(rule.get("lastEvaluation", "0001").startswith("20") for rule in rules) else None

    rules = wait_for(evaluated, 30, "every rule to be evaluated")
    assert len(rules) == len(yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"][0]["rules"])
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
    firing_or_pending = {alert["labels"]["alertname"] for rule in rules for alert in rule.get("alerts", [])}
    assert firing_or_pending == {"AudiokitNoWorkers"}  # nothing else is wrong with this deployment
