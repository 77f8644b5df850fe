"""Two hosts, simulated: the API on one, the workers and the scheduler on the other.

They share no disk and no environment: each process reads only its own settings, keeps its own
local directory, and reaches PostgreSQL, Redis and the object store over loopback TCP, as a
deployment across machines does (README, "Running on several hosts"). Uploads, their analyses, a
cancel, a retry, a worker SIGKILL and a Redis crash and restart, counted as in the fault suite.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.models import Job, utcnow
from devserver.redis import RedisServer
from tests.faults.cluster import ADMIN_KEY, Cluster, Tally, assert_nothing_lost
from tests.support.audio import wav_bytes
from tests.support.fake_services import FakeServices
from tests.support.object_store import ObjectStoreServer
from tests.support.processes import kill_all, wait_for

ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture
def two_hosts(
    tmp_path: Path, fault_redis: RedisServer, fake: FakeServices, postgres_url: str, s3_settings: dict[str, Any]
) -> Iterator[tuple[Cluster, Path, Path]]:
    """The API's host and the workers' host: their own local directories, shared services over TCP."""
    api_host, worker_host = tmp_path / "api-host", tmp_path / "worker-host"
    deployment = Cluster(
        tmp_path,
        fault_redis,
        fake,
        database_url=postgres_url,
        storage_dir=worker_host / "uploads",
        worker_count=2,
        rq_retry_intervals="0",
        **s3_settings,
    )
    deployment.start_api(storage_dir=api_host / "uploads")
    try:
        yield deployment, api_host, worker_host
    finally:
        kill_all(deployment.processes)


def _ended(deployment: Cluster, job_id: str, status: str = "failed") -> Job | None:
    row = deployment.rows([job_id])[job_id]
    return row if row is not None and row.status.value == status else None


def _local_files(directory: Path) -> list[str]:
    return sorted(str(path) for path in directory.rglob("*") if path.is_file())


def test_api_and_workers_on_two_hosts_lose_nothing_through_a_worker_kill_and_a_redis_crash(
    two_hosts: tuple[Cluster, Path, Path],
    object_store: ObjectStoreServer,
    s3_settings: dict[str, Any],
    record: Callable[[Tally], Tally],
) -> None:
    deployment, api_host, worker_host = two_hosts
    assert deployment.api is not None
    pool = deployment.start_workers()
    deployment.start_scheduler()
    deployment.fake.script.delay_s = 0.2
    attempted, ids = deployment.upload(12)
    deployment.wait_started()

    pool.kill_group(signal.SIGKILL)  # the workers' host loses its worker pool mid-job
    deployment.start_workers()
    deployment.redis.stop(signal.SIGKILL)  # a Redis crash: up to a second of writes is not in the AOF
    time.sleep(1.0)  # the outage lasts a second (the fault itself, not a wait)
    deployment.redis.start()
    more_attempted, more = deployment.upload(6)

    with httpx.Client(base_url=deployment.api.url, timeout=30, headers=ADMIN) as client:
        later = (utcnow() + timedelta(hours=1)).isoformat()
        waiting = client.post("/audio", files={"file": ("later.wav", wav_bytes(0.3))}, data={"scheduled_at": later})
        assert waiting.status_code == 202, waiting.text
        canceled_id = waiting.json()["id"]
        assert client.delete(f"/jobs/{canceled_id}/cancel").status_code == 202
    deployment.drain(ids + more, timeout_s=180)

    # A job that fails every attempt, then is retried by an operator once its cause is gone.
    deployment.fake.script.hold.clear()
    _, (failing_id,) = deployment.upload(1)
    deployment.fake.script.poison.add(failing_id)
    deployment.fake.script.hold.set()
    failed = wait_for(lambda: _ended(deployment, failing_id), 120, "the failing job to use up its attempts")
    deployment.fake.script.poison.discard(failing_id)
    with httpx.Client(base_url=deployment.api.url, timeout=30, headers=ADMIN) as client:
        assert client.post(f"/jobs/{failing_id}/retry").status_code == 202
    retried = wait_for(lambda: _ended(deployment, failing_id, "finished"), 120, "the retried job to finish")

    tally = record(deployment.tally("two hosts: worker SIGKILL + Redis crash", attempted + more_attempted, ids + more))
    assert_nothing_lost(tally)
    canceled = deployment.rows([canceled_id])[canceled_id]
    assert canceled is not None
    assert canceled.status.value == "canceled"
    assert (failed.status.value, failed.attempts) == ("failed", 4)  # 1 + RQ_RETRY_MAX
    assert (retried.status.value, retried.attempts) == ("finished", 5)
    bucket = s3_settings["storage_url"].removeprefix("s3://").split("/", 1)[0]
    stored = object_store.object_names(bucket)
    assert {f"uploads/{analysis_id}.wav" for analysis_id in ids + more} <= set(stored)
    assert _local_files(api_host) == [], "the API's host kept an upload on its disk"
    wait_for(lambda: _local_files(worker_host) == [], 30, "the workers' temporary downloads to go")
