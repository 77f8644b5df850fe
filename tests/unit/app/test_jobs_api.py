"""GET /jobs/{id}: an analysis is readable by its id; an RQ job that is no analysis only with the admin key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from redis_client import RECONCILE, get_queue
from tests.conftest import ADMIN_KEY
from tests.support.audio import wav_bytes
from workers.scheduler import RECONCILE_JOB_ID

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def reconcile_job(redis_conn: redis.Redis) -> str:
    """The reconciler's periodic job, as the scheduler leaves it in Redis."""
    get_queue("high_priority", redis_conn).enqueue(RECONCILE, job_id=RECONCILE_JOB_ID)
    return RECONCILE_JOB_ID


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}],
    ids=["no-key", "wrong-bearer", "wrong-x-api-key"],
)
def test_an_rq_job_that_is_no_analysis_is_unknown_without_the_admin_key(
    client: TestClient, reconcile_job: str, headers: dict[str, str]
) -> None:
    for path in (f"/jobs/{reconcile_job}", f"/jobs/{reconcile_job}/result"):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, response.text
        assert list(response.json()) == ["detail"]  # the same answer as for an id nobody ever used


def test_the_admin_key_reads_an_rq_job_that_is_no_analysis(client: TestClient, reconcile_job: str) -> None:
    response = client.get(f"/jobs/{reconcile_job}", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["queue"]) == (reconcile_job, None, "high_priority")
    assert body["rq"]["rq_status"] == "queued"
    # Its result is not an analysis's: /result stays for analyses.
    assert client.get(f"/jobs/{reconcile_job}/result", headers=ADMIN).status_code == 404


def test_an_analysis_job_stays_readable_by_its_id_alone(client: TestClient) -> None:
    upload = client.post("/audio", files={"file": ("a.wav", wav_bytes(0.2), "audio/wav")})
    assert upload.status_code == 202, upload.text
    analysis_id = upload.json()["id"]

    job = client.get(f"/jobs/{analysis_id}")
    result = client.get(f"/jobs/{analysis_id}/result")
    assert (job.status_code, job.json()["status"], job.json()["rq"]["rq_status"]) == (200, "queued", "queued")
    assert (result.status_code, result.json()["status"]) == (202, "queued")
