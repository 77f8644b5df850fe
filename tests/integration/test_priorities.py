"""Priority levels against the real API and real workers, in both modes.

One worker (RQ) or one in-process thread is kept busy by a gated job; uploads of every level wait, one
low one is bumped to critical through `POST /jobs/{id}/priority`; when the gate opens they start in
level order (read from the rows' `started_at`, not assumed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from core.settings import Settings
from redis_client import get_queue
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.processes import ApiServer, ManagedProcess, wait_for
from tests.support.sample_app import SAMPLE_APP
from tests.support.sample_tasks import SAMPLE_QUEUE, SAMPLE_TASK_MODULES

pytestmark = pytest.mark.slow

ADMIN = {"X-API-Key": ADMIN_KEY}
LEVEL_QUEUES = "critical,high_priority,audio_analysis,low"


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    api: ApiServer

    def client(self) -> httpx.Client:
        return self.api.client()


@pytest.fixture(params=[True, False], ids=["rq", "in-process"])
def deployment(
    request: pytest.FixtureRequest,
    make_settings: SettingsFactory,
    workers: Callable[..., ManagedProcess],
    tmp_path: Path,
) -> Iterator[Deployment]:
    """The API; one worker (RQ) or one in-process thread, so that everything else waits in line."""
    use_rq: bool = request.param
    settings = make_settings(
        use_rq_queue=use_rq, task_modules=SAMPLE_TASK_MODULES, background_concurrency=1, worker_count=1
    )
    api = ApiServer(settings, tmp_path / "api.log", factory=SAMPLE_APP)
    try:
        if use_rq:
            workers(settings, "-n", "1", "-q", f"{LEVEL_QUEUES},{SAMPLE_QUEUE}")
        yield Deployment(settings, api)
    finally:
        api.stop()


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return body


def _upload(client: httpx.Client, priority: str, **fields: str) -> dict[str, Any]:
    answer = client.post(
        "/audio", files={"file": ("tone.wav", wav_bytes(0.2), "audio/wav")}, data={"priority": priority, **fields}
    )
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body = _job(client, job_id)
        assert body["status"] not in ("failed", "canceled"), body
        return body if body["status"] == "finished" else None

    return wait_for(ended, 120, f"job {job_id} to finish")


def _busy(client: httpx.Client, gate: Path) -> str:
    answer = client.post("/samples/gated", params={"gate": str(gate), "steps": 1})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    wait_for(lambda: _job(client, job_id)["status"] == "started", 60, "the gated job to start")
    return job_id


@pytest.mark.pairwise("deployment", offset=1)
def test_waiting_jobs_start_in_level_order_and_a_bumped_one_moves_up(deployment: Deployment, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with deployment.client() as client:
        busy = _busy(client, gate)
        order = ["low", "normal", "bumped", "high", "critical"]
        ids = {label: _upload(client, "low" if label == "bumped" else label)["id"] for label in order}
        assert {label: _job(client, job_id)["queue"] for label, job_id in ids.items()} == {
            "low": "low",
            "normal": "audio_analysis",
            "bumped": "low",
            "high": "high_priority",
            "critical": "critical",
        }

        bumped = client.post(f"/jobs/{ids['bumped']}/priority", json={"priority": "critical"}, headers=ADMIN)

        assert bumped.status_code == 200, bumped.text
        assert {key: bumped.json()[key] for key in ("priority", "queue", "status", "position")} == {
            "priority": "critical",
            "queue": "critical",
            "status": "queued",
            "position": 1,  # behind the critical job that was there first
        }
        gate.touch()
        ended = {label: _finished(client, job_id) for label, job_id in ids.items()}
        assert _job(client, busy)["status"] == "finished"

    started = sorted(ended, key=lambda label: datetime.fromisoformat(ended[label]["started_at"]))
    assert started == ["critical", "bumped", "high", "normal", "low"]


@pytest.mark.pairwise("deployment")
def test_only_waiting_jobs_change_priority(deployment: Deployment, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with deployment.client() as client:
        busy = _busy(client, gate)

        running = client.post(f"/jobs/{busy}/priority", json={"priority": "high"}, headers=ADMIN)
        unknown = client.post("/jobs/nope/priority", json={"priority": "high"}, headers=ADMIN)
        bad = client.post(f"/jobs/{busy}/priority", json={"priority": "urgent"}, headers=ADMIN)
        anonymous = client.post(f"/jobs/{busy}/priority", json={"priority": "high"})
        gate.touch()
        wait_for(lambda: _job(client, busy)["status"] == "finished", 60, "the gated job to finish")
        finished = client.post(f"/jobs/{busy}/priority", json={"priority": "high"}, headers=ADMIN)

    assert (running.status_code, running.json()["detail"]) == (
        409,
        "job is started; only waiting jobs (pending, queued, scheduled, deferred) can change priority",
    )
    assert unknown.status_code == 404
    assert bad.status_code == 422
    assert "critical" in str(bad.json()["detail"])
    assert anonymous.status_code in (401, 403)
    assert (finished.status_code, finished.json()["detail"]) == (
        409,
        "job is finished; only waiting jobs (pending, queued, scheduled, deferred) can change priority",
    )


@pytest.mark.pairwise("deployment", offset=1)
def test_a_scheduled_job_changes_the_queue_it_will_go_to(deployment: Deployment) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with deployment.client() as client:
        job_id = _upload(client, "low", scheduled_at=later)["id"]
        assert _job(client, job_id)["status"] == "scheduled"

        answer = client.post(f"/jobs/{job_id}/priority", json={"priority": "high"}, headers=ADMIN)

        assert answer.status_code == 200, answer.text
        assert (answer.json()["queue"], answer.json()["status"]) == ("high_priority", "scheduled")
        assert _job(client, job_id)["queue"] == "high_priority"
        if deployment.settings.use_rq_queue:
            connection = redis.Redis.from_url(deployment.settings.resolved_redis_url)
            registries = {
                name: connection.zscore(get_queue(name, connection).scheduled_job_registry.key, job_id)
                for name in ("low", "high_priority")
            }
            assert registries["low"] is None
            assert registries["high_priority"] is not None
        assert client.delete(f"/jobs/{job_id}/cancel", headers=ADMIN).status_code == 202

    # Nothing waits for the canceled job any more: the API stops on SIGTERM, not when the job would have been due.
    deployment.api.terminate()
    wait_for(lambda: not deployment.api.alive, 60, "the API to stop on SIGTERM")
