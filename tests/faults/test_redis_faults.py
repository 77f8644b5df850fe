"""Redis faults: down at upload, crash-restarted under load, out of memory, evicting."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from core.settings import PROJECT_ROOT
from devserver.redis import RedisServer
from tests.faults.cluster import Cluster, Tally, assert_nothing_lost
from tests.support.audio import wav_bytes
from tests.support.processes import settings_env, wait_for


def test_uploads_while_redis_is_down_are_acknowledged_pending_and_run_once_it_is_back(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster()
    deployment.start_api()
    deployment.start_workers()
    deployment.start_scheduler()
    deployment.redis.stop()

    started = time.monotonic()
    attempted, ids = deployment.upload(5)
    answered_in_s = (time.monotonic() - started) / 5
    assert all(row is not None and row.status.value == "pending" for row in deployment.rows(ids).values())

    deployment.redis.start()  # same port, same AOF
    deployment.drain(ids, timeout_s=90)

    tally = record(deployment.tally(f"Redis down at upload ({answered_in_s * 1000:.0f} ms per 202)", attempted, ids))
    assert_nothing_lost(tally)


def test_redis_crash_restart_under_load_loses_nothing(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster(worker_count=2, rq_retry_intervals="0")
    deployment.start_api()
    deployment.start_workers()
    deployment.start_scheduler()
    deployment.fake.script.delay_s = 0.2
    deployment.fake.script.hold.clear()  # the first runs wait in the analysis server until all 20 are in
    attempted, ids = deployment.upload(20)
    deployment.wait_started()
    # At least 18 jobs of 0.2 s are still to run on 2 workers: the crash lands mid-flow, however slow the host.
    deployment.fake.script.hold.set()

    deployment.redis.stop(signal.SIGKILL)  # a crash: up to a second of writes is not in the AOF yet
    time.sleep(1.0)  # the outage lasts a second (the fault itself, not a wait)
    deployment.redis.start()
    more_attempted, more = deployment.upload(10)
    deployment.drain(ids + more, timeout_s=120)

    tally = record(deployment.tally("Redis SIGKILL + restart under load", attempted + more_attempted, ids + more))
    assert_nothing_lost(tally)


def test_redis_out_of_memory_refuses_uploads_cleanly_and_recovers(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally], tmp_path: Path
) -> None:
    deployment = cluster()
    api = deployment.start_api()
    deployment.start_workers()
    deployment.start_scheduler()
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(3)  # one running, two waiting when memory runs out
    running = set(deployment.wait_started())

    with deployment.redis.client() as client:
        client.config_set("maxmemory", 1)
        with httpx.Client(base_url=api.url, timeout=30) as http:
            refused = [http.post("/audio", files={"file": (f"oom-{i}.wav", wav_bytes(0.3))}) for i in range(3)]
        assert [response.status_code for response in refused] == [503, 503, 503]
        assert all("out of memory" in response.json()["detail"] for response in refused)
        assert all(response.headers["retry-after"] for response in refused)
        stored = sorted(path.name for path in (tmp_path / "uploads").glob("*.wav"))
        assert stored == sorted(f"{analysis_id}.wav" for analysis_id in ids)  # nothing half-written
        deployment.fake.script.hold.set()  # the in-flight jobs end while Redis refuses writes
        wait_for(lambda: not deployment.fake.in_flight, 30, "the running job's analysis to end under OOM")
        # its result is in the database even though Redis refused RQ's own bookkeeping; its callback is
        # owed, and its delivery job is enqueued by the reconciler once Redis takes writes again (drain)
        wait_for(lambda: all(row and row.result for row in deployment.rows(sorted(running)).values()), 30, "result")
        client.config_set("maxmemory", 0)

    more_attempted, more = deployment.upload(3)
    deployment.drain(ids + more, timeout_s=90)
    tally = record(deployment.tally("Redis out of memory (noeviction)", attempted + more_attempted + 3, ids + more))
    assert_nothing_lost(tally, acknowledged=6)


def test_workers_and_api_refuse_a_redis_that_evicts_keys(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    evicting = RedisServer(tmp_path / "evicting", extra_args=("--maxmemory-policy", "allkeys-lru"))
    evicting.start()
    try:
        deployment = cluster(redis_url=evicting.url)
        env = settings_env(deployment.settings)
        worker = subprocess.run(
            [str(PROJECT_ROOT / "start_worker.sh")], env=env, capture_output=True, text=True, timeout=60
        )
        assert worker.returncode == 2
        assert "maxmemory-policy is 'allkeys-lru'" in worker.stderr
        with pytest.raises(AssertionError, match="allkeys-lru"):
            deployment.start_api()
    finally:
        evicting.stop()


def test_a_redis_without_persistence_is_accepted_with_a_warning(
    tmp_path: Path, cluster: Callable[..., Cluster]
) -> None:
    volatile = RedisServer(tmp_path / "volatile", extra_args=("--appendonly", "no"))
    volatile.start()
    try:
        deployment = cluster(redis_url=volatile.url)
        workers = deployment.start_workers()
        wait_for(lambda: "persistence is off" in workers.output(), 30, "the persistence warning")
        assert workers.alive
    finally:
        volatile.stop()
