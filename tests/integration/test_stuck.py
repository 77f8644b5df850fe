"""Stuck jobs against the real API and real workers, in both modes.

The task's first run blocks without progress reports and ignores RQ's timeout signal (`tests.support.
stuck_tasks`): past its timeout (2 s) plus `STUCK_MARGIN_S` it is reported everywhere, and the reconciler
stops it; the job is retried by its policy (one retry) and its second run finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from jobs.dispatch import Dispatcher
from jobs.reconcile import Reconciler
from jobs.runtime import build_runtime
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.processes import ApiServer, ManagedProcess, wait_for
from tests.support.stuck_tasks import STUCK_APP, STUCK_TASK_MODULES

pytestmark = pytest.mark.slow

ADMIN = {"X-API-Key": ADMIN_KEY}


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return body


def _start(client: httpx.Client, tmp_path: Path) -> str:
    answer = client.post("/stuck", params={"marker": str(tmp_path / "marker"), "release": str(tmp_path / "release")})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def _deploy(settings: Settings, tmp_path: Path, workers: Callable[..., ManagedProcess]) -> ApiServer:
    api = ApiServer(settings, tmp_path / "api.log", factory=STUCK_APP)
    if settings.use_rq_queue:
        workers(settings, "-n", "1")
    return api


@pytest.mark.parametrize("use_rq", [True, False], ids=["rq", "in-process"])
@pytest.mark.pairwise("use_rq")
def test_a_stuck_job_is_reported_in_the_job_the_queue_status_readiness_and_metrics(
    use_rq: bool, make_settings: SettingsFactory, workers: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    # No reconciler pass after start-up (in-process: the API's runs at start, then hourly): nothing stops it.
    settings = make_settings(
        use_rq_queue=use_rq, task_modules=STUCK_TASK_MODULES, stuck_margin_s=1, reconcile_interval_s=3600
    )
    api = _deploy(settings, tmp_path, workers)
    try:
        with api.client() as client:
            job_id = _start(client, tmp_path)
            stuck = wait_for(lambda: _job(client, job_id)["stuck"] or None, 60, "the job to be reported stuck")
            status = client.get("/queue/status", headers=ADMIN).json()
            ready = client.get("/health/ready")
            metrics = client.get("/metrics", headers=ADMIN).text
            (tmp_path / "release").touch()
            wait_for(lambda: _job(client, job_id)["status"] in ("finished", "failed") or None, 60, "the run to end")
            after = _job(client, job_id)
    finally:
        api.stop()

    assert stuck is True
    assert status["stuck"] == [job_id]
    assert job_id in ready.json()["checks"]["stuck_jobs"]
    assert ready.status_code == 503
    assert "audiokit_jobs_stuck 1.0" in metrics
    assert after["stuck"] is False


@pytest.mark.parametrize("use_rq", [True, False], ids=["rq", "in-process"])
@pytest.mark.pairwise("use_rq", offset=1)
def test_the_reconciler_stops_a_stuck_job_and_it_is_retried_by_its_policy(
    use_rq: bool, make_settings: SettingsFactory, workers: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    settings = make_settings(
        use_rq_queue=use_rq, task_modules=STUCK_TASK_MODULES, stuck_margin_s=1, reconcile_interval_s=1
    )
    api = _deploy(settings, tmp_path, workers)
    try:
        with api.client() as client:
            job_id = _start(client, tmp_path)
            if use_rq:
                # The scheduler process would run it on a worker every RECONCILE_INTERVAL_S; here, this test does.
                runtime = build_runtime(settings)
                reconciler = Reconciler(
                    settings,
                    runtime.lifecycle,
                    runtime.redis,
                    Dispatcher(settings, runtime.redis, None, runtime.lifecycle),
                )
                wait_for(lambda: _job(client, job_id)["stuck"] or None, 60, "the job to be reported stuck")
                assert reconciler.run_once().stopped_stuck == [job_id]
            ended = wait_for(
                lambda: ((body := _job(client, job_id))["status"] in ("finished", "failed") and body) or None,
                60,
                "the job to end",
            )
    finally:
        (tmp_path / "release").touch()
        api.stop()

    assert (ended["status"], ended["result"], ended["attempts"]) == ("finished", {"run": "again"}, 2)
    messages = [line["message"] for line in ended["logs"]]
    assert any(message.startswith("stuck: still running") for message in messages), messages
    assert any("retrying in 0s" in message for message in messages), messages
