"""Worker faults: killed work-horses and workers, warm shutdown, timeouts, a poison job."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from core.models import JobStatus
from tests.faults.cluster import BOTH_WORKER_MODES, Cluster, Tally, assert_nothing_lost, kill_runner
from tests.support.processes import wait_for

N_JOBS = 6
WORKER_MODES = BOTH_WORKER_MODES  # every scenario also with `--no-fork` workers (the job runs in the worker)


def test_work_horse_sigkilled_mid_job_is_retried(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster()
    deployment.start_api()
    deployment.start_workers()
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(N_JOBS)

    victim, horse = next(iter(deployment.wait_started().items()))
    kill_runner(horse)  # the job's child alone; its worker survives
    deployment.fake.script.hold.set()
    deployment.drain(ids)

    tally = record(deployment.tally("work-horse SIGKILL mid-job", attempted, ids))
    assert_nothing_lost(tally)
    assert deployment.rows([victim])[victim].attempts == 2  # type: ignore[union-attr]


@pytest.mark.pairwise("worker_mode", offset=1)  # forking workers on the second database, no-fork on the first
def test_whole_worker_sigkilled_mid_job_is_retried_by_a_new_worker(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    # Immediate retry: a retry with backoff waits in RQ's scheduled registry, and the dead worker
    # held RQ's scheduler lock for another 61 s (RQ's lease); that wait is documented, not tested here.
    deployment = cluster(rq_retry_intervals="0")
    deployment.start_api()
    workers = deployment.start_workers()
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(N_JOBS)

    victim, horse = next(iter(deployment.wait_started().items()))
    killed_at = time.monotonic()
    workers.kill_group()  # pool and workers
    kill_runner(horse)  # the horse has its own process group
    deployment.fake.script.hold.set()
    deployment.start_workers()  # what a supervisor does

    def retried() -> bool:
        row = deployment.lifecycle.get(victim)
        return row is not None and row.attempts >= 2

    wait_for(retried, 60, "the abandoned job to run again")
    recovery_s = time.monotonic() - killed_at
    deployment.drain(ids)

    tally = record(deployment.tally(f"whole worker SIGKILL mid-job (retried after {recovery_s:.1f}s)", attempted, ids))
    assert_nothing_lost(tally)


def test_sigterm_lets_the_current_job_finish(cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]) -> None:
    deployment = cluster()
    deployment.start_api()
    workers = deployment.start_workers()
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(N_JOBS)

    running, _ = next(iter(deployment.wait_started().items()))
    workers.send(signal.SIGTERM)
    # the signal has landed while the job is still held mid-run
    wait_for(lambda: "warm shut down requested" in workers.output(), 30, "the worker to take the signal")
    deployment.fake.script.hold.set()
    wait_for(lambda: not workers.alive, 30, "the worker to exit after its job")

    row = deployment.lifecycle.get(running)
    assert row is not None
    assert (row.status, row.attempts) == (JobStatus.FINISHED, 1)  # finished, not interrupted
    deployment.start_workers()
    deployment.drain(ids)

    tally = record(deployment.tally("worker SIGTERM mid-job", attempted, ids))
    assert_nothing_lost(tally)
    assert all(row.attempts == 1 for row in deployment.rows(ids).values() if row)


@pytest.mark.pairwise("worker_mode", offset=1)  # forking workers on the second database, no-fork on the first
def test_a_job_past_its_timeout_is_killed_and_retried(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    # The retry's whole run (a cold work-horse included) must fit in the timeout on a loaded machine.
    # Two workers: both jobs hang and are killed side by side, not one timeout after the other.
    deployment = cluster(rq_job_timeout=6, worker_count=2)
    deployment.start_api()
    deployment.start_workers()
    deployment.fake.script.slow_first_s = 30  # each analysis' first run hangs past the timeout
    attempted, ids = deployment.upload(2)
    deployment.drain(ids, timeout_s=90)

    tally = record(deployment.tally("job timeout (first run hangs)", attempted, ids))
    assert_nothing_lost(tally)
    for row in deployment.rows(ids).values():
        assert row is not None
        assert row.attempts == 2
        assert any("timeout" in line["message"] for line in row.logs), row.logs


def test_a_poison_job_fails_after_all_its_attempts_and_other_queues_keep_going(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster(worker_count=2)
    deployment.start_api()
    deployment.start_workers()
    deployment.fake.script.hold.clear()
    attempted, poison = deployment.upload(1)
    deployment.fake.script.poison.update(poison)
    deployment.fake.script.hold.set()
    wait_for(lambda: deployment.fake.requests[poison[0]] >= 1, 30, "the poison job to run")
    more_attempted, healthy = deployment.upload(4, priority="high")
    deployment.drain(poison + healthy, timeout_s=90)

    tally = record(deployment.tally("poison job", attempted + more_attempted, poison + healthy))
    assert_nothing_lost(tally, failed=1)
    row = deployment.rows(poison)[poison[0]]
    assert row is not None
    assert (row.status, row.attempts) == (JobStatus.FAILED, 4)  # 1 + RQ_RETRY_MAX
    assert row.error == "analysis server failed (HTTP 500)"
    assert deployment.fake.requests[poison[0]] == 4
