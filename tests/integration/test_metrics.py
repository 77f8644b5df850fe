"""`/metrics` over real processes: a worker records, the API reports exactly what happened."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from core.settings import QUEUE_HIGH, QUEUE_NORMAL, QUEUES_BY_PRIORITY, Settings
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.audio import corrupt_audio_bytes, wav_bytes
from tests.support.processes import ApiServer, ManagedProcess, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TERMINAL = ("finished", "failed", "canceled")


def sample(families: dict[str, Metric], family: str, name: str, **labels: str) -> float | None:
    for found in families[family].samples:
        if found.name == name and found.labels == labels:
            return found.value
    return None


def jobs(families: dict[str, Metric], event: str, queue: str) -> float | None:
    return sample(families, f"audiokit_jobs_{event}", f"audiokit_jobs_{event}_total", queue=queue)


def upload(client: httpx.Client, name: str, data: bytes) -> str:
    answer = client.post("/audio", files={"file": (name, data, "audio/wav")})
    assert answer.status_code == 202, answer.text
    analysis_id: str = answer.json()["id"]
    return analysis_id


@pytest.mark.slow
@pytest.mark.one_database  # the counters live in Redis: the database is not what is counted
def test_metrics_count_exactly_what_the_worker_did(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    settings = make_settings(use_rq_queue=True)
    api = api_server(settings)
    workers(settings)
    with api.client() as client:
        good = [upload(client, f"tone-{n}.wav", wav_bytes(0.5 + n / 4)) for n in range(3)]
        bad = upload(client, "broken.flac", corrupt_audio_bytes())

        def ended() -> dict[str, dict[str, Any]] | None:
            analyses = {i: client.get(f"/audio/{i}").json() for i in [*good, bad]}
            return analyses if all(a["status"] in TERMINAL for a in analyses.values()) else None

        analyses = wait_for(ended, 60, "all four analyses to end")
        assert [analyses[i]["status"] for i in good] == ["finished"] * 3
        assert (analyses[bad]["status"], analyses[bad]["attempts"]) == ("failed", 1)  # permanent: no retry

        def registries_settled() -> dict[str, Any] | None:
            # RQ moves a job to its finished/failed registry just after the task's final database write.
            status: dict[str, Any] = client.get("/queue/status", headers=ADMIN).json()
            counts = status["queues"][QUEUE_NORMAL]
            return status if (counts["finished"], counts["failed"], counts["started"]) == (3, 1, 0) else None

        queue_status = wait_for(registries_settled, 30, "RQ's registries to hold the ended jobs")
        assert client.get("/metrics").status_code == 401
        response = client.get("/metrics", headers=ADMIN)

    assert response.status_code == 200, response.text
    families = {family.name: family for family in text_string_to_metric_families(response.text)}

    assert sample(families, "audiokit_redis_up", "audiokit_redis_up") == 1
    counted = {event: jobs(families, event, QUEUE_NORMAL) for event in ("started", "finished", "failed", "retried")}
    assert counted == {"started": 4, "finished": 3, "failed": 1, "retried": 0}
    assert jobs(families, "canceled", QUEUE_NORMAL) == 0
    assert all(jobs(families, event, QUEUE_HIGH) == 0 for event in ("started", "finished", "failed"))

    duration, wait = "audiokit_job_duration_seconds", "audiokit_upload_to_start_seconds"
    assert sample(families, duration, f"{duration}_count", queue=QUEUE_NORMAL) == 3
    assert sample(families, duration, f"{duration}_bucket", queue=QUEUE_NORMAL, le="+Inf") == 3
    duration_sum = sample(families, duration, f"{duration}_sum", queue=QUEUE_NORMAL)
    assert duration_sum is not None
    assert 0 < duration_sum < 60
    assert sample(families, duration, f"{duration}_count", queue=QUEUE_HIGH) == 0
    assert sample(families, wait, f"{wait}_count", queue=QUEUE_NORMAL) == 4  # every first attempt

    for queue in QUEUES_BY_PRIORITY:
        for registry, count in queue_status["queues"][queue].items():
            assert (
                sample(families, "audiokit_queue_jobs", "audiokit_queue_jobs", queue=queue, registry=registry) == count
            )
    live = [worker for worker in queue_status["workers"] if worker["alive"]]
    assert sample(families, "audiokit_workers_alive", "audiokit_workers_alive") == len(live) >= 1
    assert sample(families, "audiokit_workers", "audiokit_workers", queue=QUEUE_NORMAL) == len(live)

    requests = "audiokit_http_request_duration_seconds"
    assert sample(families, requests, f"{requests}_count", method="POST", route="/audio", status="202") == 4
    assert sample(families, requests, f"{requests}_count", method="GET", route="/metrics", status="401") == 1
    assert not any(analysis_id in response.text for analysis_id in [*good, bad])
