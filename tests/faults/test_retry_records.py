"""A killed run is recorded like any failed attempt: the row, its log and the retry counter say so.

RQ retries a job whose work-horse died (and one whose whole worker died, "abandoned"); what the service
says during the backoff must match: status `scheduled` (or `queued` for an immediate retry), the error,
an "attempt failed, retrying in …" log line between the two "attempt started" lines, and
`audiokit_jobs_retried_total` counting the retry.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from core.metrics import JobEvent, RedisJobMetrics
from core.models import Job, JobStatus
from core.settings import QUEUE_NORMAL
from tests.faults.cluster import BOTH_WORKER_MODES, SIMPLE, Cluster, Tally, assert_nothing_lost, kill_runner
from tests.support.processes import wait_for

WORKER_MODES = BOTH_WORKER_MODES


def retried_count(deployment: Cluster) -> int:
    client = redis.Redis.from_url(deployment.redis.url)
    try:
        return RedisJobMetrics(client).read([QUEUE_NORMAL]).events[JobEvent.RETRIED].get(QUEUE_NORMAL, 0)
    finally:
        client.close()


def messages(row: Job) -> list[str]:
    return [line["message"] for line in row.logs]


def test_a_killed_work_horse_is_recorded_as_a_failed_attempt_during_its_backoff(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster(rq_retry_intervals="8")  # a backoff long enough to look at
    deployment.start_api()
    deployment.start_workers()
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(1)
    victim, horse = next(iter(deployment.wait_started().items()))
    assert retried_count(deployment) == 0

    kill_runner(horse)  # the job's child alone (simple mode: the worker, which the pool replaces)

    def waiting() -> Job | None:
        row = deployment.lifecycle.get(victim)
        return row if row is not None and row.status is JobStatus.SCHEDULED else None

    row = wait_for(waiting, 30, "the row to say the job waits for its retry")
    # Simple mode: the dead worker's job goes through RQ's abandoned-job handling (run by the pool at once).
    expected = (
        "the worker running the job died"
        if deployment.worker_mode == SIMPLE
        else "the process running the job died (killed by SIGKILL)"
    )
    assert row.error == expected, row.error
    assert (row.attempts, row.finished_at) == (1, None)
    assert messages(row)[-1] == f"attempt failed, retrying in 8s: {row.error}", messages(row)
    assert retried_count(deployment) == 1

    deployment.fake.script.hold.set()
    deployment.drain(ids, timeout_s=120)
    tally = record(deployment.tally("work-horse SIGKILL: the retry is recorded", attempted, ids))
    assert_nothing_lost(tally)
    ended = deployment.rows(ids)[victim]
    assert ended is not None
    assert (ended.status, ended.attempts, ended.error) == (JobStatus.FINISHED, 2, None)
    log = messages(ended)
    started = [index for index, message in enumerate(log) if message == "attempt started"]
    assert len(started) == 2, log
    assert any(message.startswith("attempt failed, retrying") for message in log[started[0] : started[1]]), log
    assert retried_count(deployment) == 1


@pytest.mark.pairwise("worker_mode", offset=1)  # forking workers on the second database, no-fork on the first
def test_an_abandoned_job_is_recorded_as_a_failed_attempt(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster(rq_retry_intervals="0")
    deployment.start_api()
    workers = deployment.start_workers()
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(1)
    victim, horse = next(iter(deployment.wait_started().items()))

    workers.kill_group()  # pool and workers: nobody is left to see the work-horse die
    kill_runner(horse)
    deployment.fake.script.hold.set()
    deployment.start_workers()  # what a supervisor does; its maintenance finds the job abandoned
    deployment.drain(ids, timeout_s=180)

    tally = record(deployment.tally("whole worker SIGKILL: the retry is recorded", attempted, ids))
    assert_nothing_lost(tally)
    row = deployment.rows(ids)[victim]
    assert row is not None
    assert (row.status, row.attempts) == (JobStatus.FINISHED, 2)
    log = messages(row)
    started = [index for index, message in enumerate(log) if message == "attempt started"]
    assert len(started) == 2, log
    between = log[started[0] : started[1]]
    assert "attempt failed, retrying in 0s: the worker running the job died" in between, log
    assert retried_count(deployment) == 1
