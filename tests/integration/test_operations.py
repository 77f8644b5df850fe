"""Operating jobs over real processes: cancel, stop, retry, position and wait, health, the admin key."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from tests.conftest import ADMIN_KEY, DATABASES, SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.fake_services import FakeServices
from tests.support.processes import ApiServer, ManagedProcess, settings_env, wait_for, wait_until_ended

# The database is a module-scoped parameter so that the admin-key checks share one app (`admin_client`);
# every other test still gets a fresh database of its own.
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_backend", DATABASES, scope="module")]

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TERMINAL = ("finished", "failed", "canceled")


def _upload(client: httpx.Client, **fields: str) -> str:
    response = client.post("/audio", files={"file": ("a.wav", wav_bytes(0.3))}, data=fields)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_a_queued_job_canceled_never_runs(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer], workers: Callable[..., ManagedProcess]
) -> None:
    settings = make_settings()
    api = api_server(settings)
    with api.client() as client:
        analysis_id = _upload(client)  # no worker yet: it waits on the queue
        canceled = client.delete(f"/jobs/{analysis_id}/cancel", headers=ADMIN)
        assert canceled.status_code == 202
        assert canceled.json() == {"id": analysis_id, "status": "canceled", "stopping": False}
        workers(settings, "--burst")  # drains the queue, then exits
        other = _upload(client)
        assert wait_until_ended(client, other)["status"] == "finished"
        analysis = client.get(f"/audio/{analysis_id}").json()
        job = client.get(f"/jobs/{analysis_id}").json()
        again = client.delete(f"/jobs/{analysis_id}/cancel", headers=ADMIN)
    assert (analysis["status"], analysis["attempts"], analysis["started_at"]) == ("canceled", 0, None)
    assert job["rq"]["rq_status"] == "canceled"
    assert again.status_code == 409


def test_a_running_job_is_stopped_and_not_retried(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    fake: FakeServices,
) -> None:
    settings = make_settings(analysis_server_url=fake.analyze_url)
    api = api_server(settings)
    workers(settings)
    fake.script.hold.clear()  # runs wait inside the analysis server
    with api.client() as client:
        analysis_id = _upload(client)
        wait_for(lambda: analysis_id in fake.runner_pids(), 30, "the job to be running")
        stopped = client.delete(f"/jobs/{analysis_id}/cancel", headers=ADMIN)
        assert stopped.json() == {"id": analysis_id, "status": "started", "stopping": True}
        analysis = wait_until_ended(client, analysis_id)
        fake.script.hold.set()

        def rq_stopped() -> dict[str, Any] | None:
            # RQ records `stopped` after its stop callback has written the row: the two writes follow
            # each other in two stores, so the row may say canceled a moment before RQ says stopped.
            body: dict[str, Any] = client.get(f"/jobs/{analysis_id}").json()
            return body if body["rq"]["rq_status"] == "stopped" else None

        job = wait_for(rq_stopped, 30, "RQ to record the job stopped")
    assert (analysis["status"], analysis["attempts"]) == ("canceled", 1)
    assert job["rq"]["rq_status"] == "stopped"
    assert fake.requests[analysis_id] == 1  # never retried


@pytest.mark.parametrize("mode", ["rq", "background"])
@pytest.mark.pairwise("mode")
def test_finished_jobs_answer_409_to_cancel_and_retry_and_their_result_200(
    mode: str,
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    settings = make_settings(use_rq_queue=mode == "rq")
    api = api_server(settings)
    if mode == "rq":
        workers(settings)
    with api.client() as client:
        analysis_id = _upload(client)
        wait_until_ended(client, analysis_id)
        cancel = client.delete(f"/jobs/{analysis_id}/cancel", headers=ADMIN)
        retry = client.post(f"/jobs/{analysis_id}/retry", headers=ADMIN)
        result = client.get(f"/jobs/{analysis_id}/result")
        unknown = client.get("/jobs/nope/result")
    assert (cancel.status_code, retry.status_code) == (409, 409)
    assert result.status_code == 200
    assert result.json()["result"]["sample_rate"] == 44100
    assert unknown.status_code == 404


@pytest.mark.parametrize("mode", ["rq", "background"])
@pytest.mark.pairwise("mode", offset=1)
def test_a_failed_job_is_retried_to_success(
    mode: str,
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    fake: FakeServices,
) -> None:
    settings = make_settings(use_rq_queue=mode == "rq", analysis_server_url=fake.analyze_url, rq_retry_max=1)
    api = api_server(settings)
    if mode == "rq":
        workers(settings)
    fake.script.fail_first = 2  # both attempts fail: 1 + RQ_RETRY_MAX
    with api.client() as client:
        analysis_id = _upload(client)
        failed = wait_until_ended(client, analysis_id)
        assert (failed["status"], failed["attempts"]) == ("failed", 2)
        result = client.get(f"/jobs/{analysis_id}/result")
        assert (result.status_code, result.json()["detail"]) == (500, "analysis server failed (HTTP 500)")
        retried = client.post(f"/jobs/{analysis_id}/retry", headers=ADMIN)
        assert retried.status_code == 202
        finished = wait_until_ended(client, analysis_id)
    assert (finished["status"], finished["attempts"], finished["error"]) == ("finished", 3, None)


def test_queued_jobs_report_their_position_and_a_measured_wait(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    fake: FakeServices,
) -> None:
    settings = make_settings(analysis_server_url=fake.analyze_url)
    api = api_server(settings)
    fake.script.delay_s = 0.5
    with api.client() as client:
        warm = _upload(client)  # one measured run gives the average
        worker = workers(settings)
        measured = wait_until_ended(client, warm)
        fake.script.hold.clear()
        running = _upload(client)
        wait_for(lambda: running in fake.runner_pids(), 30, "a job to run")
        line = [_upload(client) for _ in range(3)]
        views = [client.get(f"/jobs/{analysis_id}").json() for analysis_id in line]
        serving = [
            w for w in client.get("/queue/status", headers=ADMIN).json()["workers"] if "audio_analysis" in w["queues"]
        ]
        fake.script.hold.set()
        for analysis_id in line:
            wait_until_ended(client, analysis_id)
        worker.send(signal.SIGTERM)
    assert [view["position"] for view in views] == [0, 1, 2]
    # The contract: (position + 1) x the measured average run time / the live workers serving the queue.
    # Only the warm-up run has finished, so its own duration is the average.
    run_s = (_at(measured["finished_at"]) - _at(measured["started_at"])).total_seconds()
    live = sum(1 for w in serving if w["alive"])
    assert live >= 1
    expected = [(place + 1) * run_s / live for place in range(3)]
    assert [view["estimated_wait_s"] for view in views] == pytest.approx(expected, abs=0.001)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.one_database  # worker heartbeats in Redis are checked, not the database
def test_health_is_503_without_a_worker_and_200_when_one_is_back(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer], workers: Callable[..., ManagedProcess]
) -> None:
    settings = make_settings(worker_ttl_s=20)
    api = api_server(settings)
    scheduler = ManagedProcess(
        [str(api.argv[0]), "-m", "workers.scheduler"], settings_env(settings), api.log_path.with_name("sched.log")
    )
    try:
        with api.client() as client:

            def health_is(status: int) -> httpx.Response | None:
                response = client.get("/health")
                return response if response.status_code == status else None

            worker = workers(settings)
            healthy = wait_for(lambda: health_is(200), 30, "healthy")
            worker.stop()
            unhealthy = wait_for(lambda: health_is(503), 30, "unhealthy")
            workers(settings)
            wait_for(lambda: health_is(200), 30, "healthy again")
    finally:
        scheduler.stop()
    assert healthy.json()["checks"]["workers"] == "ok"
    assert "workers" in unhealthy.json()["problems"]
    assert "no live worker" in unhealthy.json()["checks"]["workers"]


@pytest.fixture(scope="module")
def admin_client(make_module_settings: SettingsFactory) -> Iterator[TestClient]:
    """One app for every refused request: a refusal changes nothing, and starting an app costs a second."""
    with TestClient(create_app(make_module_settings())) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/jobs/x/cancel"),
        ("POST", "/jobs/x/retry"),
        ("GET", "/queue/status"),
        ("GET", "/metrics"),
        ("GET", "/rq/"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic YWRtaW46d3Jvbmc="}],
    ids=["missing", "wrong-bearer", "wrong-x-api-key", "wrong-basic"],
)
@pytest.mark.one_database  # authentication is checked before any query
def test_every_admin_endpoint_refuses_a_missing_or_wrong_key(
    admin_client: TestClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = admin_client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(("Bearer", "Basic"))


@pytest.mark.one_database  # routing is checked, not the database
def test_state_changes_only_by_post_or_delete(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/jobs/x/cancel", headers=ADMIN).status_code == 405
        assert client.get("/jobs/x/retry", headers=ADMIN).status_code == 405
