"""Liveness and readiness over the app with a real Redis (in-process mode: no worker processes needed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from rq.executions import Execution
from rq.job import JobStatus

from app import readiness
from app.main import create_app
from core.models import utcnow
from core.settings import Settings
from jobs.reconcile_status import LAST_RUN_KEY
from redis_client import RUN_JOB, KitJob
from tests.conftest import SettingsFactory
from tests.support.processes import wait_for


@pytest.fixture
def background_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(use_rq_queue=False)


@pytest.fixture
def client(background_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(background_settings)) as client:
        yield client


def _plant_stuck_job(connection: redis.Redis, queue: str = "audio_analysis") -> str:
    """A job RQ believes is still running an hour after it started, with a 60 s timeout (its worker never killed it)."""
    job = KitJob.create(RUN_JOB, args=["stuck"], connection=connection, timeout=60, origin=queue)
    job.started_at = utcnow() - timedelta(hours=1)
    with connection.pipeline() as pipeline:
        job.save(pipeline=pipeline)
        job.set_status(JobStatus.STARTED, pipeline=pipeline)
        Execution.create(job, ttl=3600, pipeline=pipeline, worker_name="frozen-worker")  # its lease still runs
        pipeline.execute()
    return job.id


def test_live_answers_200_and_checks_nothing(client: TestClient) -> None:
    response = client.get("/health/live")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_ready_is_200_when_redis_the_database_and_the_in_process_reconciler_are_fine(
    client: TestClient, redis_conn: redis.Redis
) -> None:
    # In-process mode: the API runs the reconciler itself and records its passes like the scheduler's.
    wait_for(lambda: redis_conn.hget(LAST_RUN_KEY, "succeeded_at"), 10, "the API's reconciler to record a pass")

    ready = client.get("/health/ready")
    legacy = client.get("/health")

    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ok",
        "problems": [],
        "mode": "background",
        "checks": {"database": "ok", "redis": "ok", "reconciler": "ok", "stuck_jobs": []},
    }
    assert (legacy.status_code, legacy.json()) == (200, ready.json())


def test_a_stuck_job_makes_ready_503_naming_it(client: TestClient, redis_conn: redis.Redis) -> None:
    stuck = _plant_stuck_job(redis_conn)

    ready = client.get("/health/ready")
    legacy = client.get("/health")

    assert ready.status_code == 503
    assert ready.json()["status"] == "unhealthy"
    assert ready.json()["problems"] == ["stuck_jobs"]
    assert ready.json()["checks"]["stuck_jobs"] == [stuck]
    assert (legacy.status_code, legacy.json()["problems"]) == (503, ["stuck_jobs"])
    assert client.get("/health/live").status_code == 200


def test_redis_refusing_writes_makes_ready_503_naming_redis_while_live_stays_200(
    client: TestClient, redis_conn: redis.Redis
) -> None:
    redis_conn.config_set("maxmemory", 1)  # every write is now over the limit (noeviction refuses it)
    try:
        ready = client.get("/health/ready")
        live = client.get("/health/live")
    finally:
        redis_conn.config_set("maxmemory", 0)

    assert ready.status_code == 503
    assert ready.json()["problems"] == ["redis"]
    assert "not writable" in str(ready.json()["checks"]["redis"])
    assert "maxmemory" in str(ready.json()["checks"]["redis"])
    assert live.status_code == 200


def test_unreachable_redis_makes_ready_503_naming_redis(make_settings: SettingsFactory) -> None:
    settings = make_settings(use_rq_queue=False, redis_url="redis://127.0.0.1:9/0")  # nothing listens on port 9
    with TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        live = client.get("/health/live")

    assert ready.status_code == 503
    assert ready.json()["problems"] == ["redis"]
    assert str(ready.json()["checks"]["redis"]).startswith("unreachable")
    assert live.status_code == 200


def test_redis_running_out_of_memory_between_the_write_probe_and_the_reads_is_named_not_writable(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe's SET may get in just before memory runs out; a later read in a transaction is then refused.
    def refused(*_: object) -> None:
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr(readiness, "read_passes", refused)

    ready = client.get("/health/ready")

    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] == "not writable: command not allowed when used memory > 'maxmemory'."
