"""The example shop's tasks under faults: a worker SIGKILL and flag flips, with jobs in flight.

Each order makes four jobs (a sync, an `async def`, a keyword-argument and a flaky task); every
job's effect is a line in a journal, so a lost job or a task that did its work twice shows.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.models import DispatchMode, JobStatus
from devserver.redis import RedisServer
from tests.examples.shop import ShopDeployment
from tests.faults.cluster import FAULT_SETTINGS, Tally, assert_nothing_lost
from tests.support.processes import kill_all, wait_for

WORK_S = 1.0  # each task's work: long enough for a fault to land mid-job
ORDERS = range(1, 5)  # 16 jobs

DeploymentFactory = Callable[..., ShopDeployment]
# The example's own tasks under faults, on one database: each kind of fault here (a worker SIGKILL, a
# flag flip either way) also runs on every database against the service's own tasks, in
# test_worker_faults.py and test_flag_and_api_faults.py.
pytestmark = pytest.mark.one_database


@pytest.fixture
def shop(tmp_path: Path, fault_redis: RedisServer, database_url: str) -> Iterator[DeploymentFactory]:
    built: list[ShopDeployment] = []

    def build(**overrides: Any) -> ShopDeployment:
        base = FAULT_SETTINGS | {
            "redis_url": fault_redis.url,
            "database_url": database_url,
            "storage_dir": tmp_path / "uploads",
        }
        deployment = ShopDeployment(tmp_path, base | overrides, WORK_S)
        built.append(deployment)
        return deployment

    yield build
    for deployment in built:
        kill_all(deployment.processes)


def _mid_job(deployment: ShopDeployment) -> str:
    """Waits for a job that is running and has not done its work yet; returns its id."""
    return wait_for(deployment.started, 90, "a job to be mid-work")[0].id


def test_shop_worker_sigkilled_with_jobs_in_flight(shop: DeploymentFactory, record: Callable[[Tally], Tally]) -> None:
    # Immediate retry, as in test_worker_faults: a backoff would wait on the dead worker's scheduler lock.
    # A pool of two: the 16 jobs of 1 s drain two at a time; the SIGKILL takes the whole pool.
    deployment = shop(rq_retry_intervals="0", worker_count=2)
    deployment.start_api(use_rq_queue=True)
    workers = deployment.start_workers()
    attempted, acknowledged = deployment.place(ORDERS)

    victim = _mid_job(deployment)
    for child in psutil.Process(workers.pid).children(recursive=True):  # the work-horse has its own group
        child.kill()
    workers.kill_group()
    deployment.start_workers()  # what a supervisor does

    def retried() -> bool:
        row = deployment.job(victim)
        return row is not None and row.attempts >= 2

    wait_for(retried, 90, "the killed job to run again")
    deployment.drain(acknowledged)

    tally = record(deployment.tally("shop: whole worker SIGKILL mid-job", attempted, acknowledged))
    assert_nothing_lost(tally)


def test_shop_flag_flip_from_rq_to_in_process_with_jobs_in_flight(
    shop: DeploymentFactory, record: Callable[[Tally], Tally]
) -> None:
    deployment = shop()
    api = deployment.start_api(use_rq_queue=True)
    workers = deployment.start_workers()
    attempted, acknowledged = deployment.place(ORDERS)  # one runs on the worker, the rest wait on RQ
    _mid_job(deployment)

    api.stop()
    workers.send(signal.SIGTERM)  # warm shutdown: its current job finishes first
    deployment.start_api(use_rq_queue=False)  # the rollback
    wait_for(lambda: not workers.alive, 30, "the worker to finish its job and exit")
    left_on_rq = {job.id for job in deployment.jobs() if job.status is not JobStatus.FINISHED}
    deployment.drain(acknowledged)

    tally = record(deployment.tally("shop: flag flip rq -> in-process, jobs in flight", attempted, acknowledged))
    assert_nothing_lost(tally)
    taken_back = [job for job in deployment.jobs() if job.id in left_on_rq]
    assert taken_back  # the flip caught jobs waiting on RQ, and the API ran them
    assert all(job.mode is DispatchMode.BACKGROUND for job in taken_back)


def test_shop_flag_flip_from_in_process_to_rq_with_jobs_in_flight(
    shop: DeploymentFactory, record: Callable[[Tally], Tally]
) -> None:
    # One job at a time inside the API (most are waiting there when it stops); a pool of two drains them after.
    deployment = shop(background_concurrency=1, worker_count=2)
    api = deployment.start_api(use_rq_queue=False)
    attempted, acknowledged = deployment.place(ORDERS)  # one runs inside the API, the rest wait there
    _mid_job(deployment)

    api.stop()  # restart with the other flag: the in-process jobs die with the old process
    ended_before = {job.id for job in deployment.jobs() if job.status is JobStatus.FINISHED}
    deployment.start_api(use_rq_queue=True)
    deployment.start_workers()
    deployment.start_scheduler()
    deployment.drain(acknowledged)

    tally = record(deployment.tally("shop: flag flip in-process -> rq, jobs in flight", attempted, acknowledged))
    assert_nothing_lost(tally)
    rows = deployment.jobs()
    moved = [row for row in rows if row.id not in ended_before]
    assert moved  # the flip caught jobs in the API, and workers ran them
    assert all(row.mode is DispatchMode.RQ for row in moved)
