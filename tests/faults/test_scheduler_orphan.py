"""RQ's scheduler dies with the worker that forked it, and a live worker's scheduler takes over its lock."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psutil
import pytest
import redis
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler

from devserver.redis import RedisServer
from tests.faults.cluster import Cluster, Tally, assert_nothing_lost
from tests.support.processes import exited, wait_for

SCHEDULED_IN_S = 3


@pytest.fixture
def connection(fault_redis: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(fault_redis.url, decode_responses=True) as client:
        yield client


def _lock_holders(connection: redis.Redis, queues: tuple[str, ...]) -> dict[str, tuple[str, int]] | None:
    """queue -> (scheduler name, pid) once every queue's scheduler lock is held by a registered scheduler."""
    holders = {}
    for queue in queues:
        name = connection.get(RQScheduler.get_locking_key(queue))
        pid = connection.hget(SCHEDULER_KEY_TEMPLATE % name, "pid") if name else None
        if not name or not pid:
            return None
        holders[queue] = (str(name), int(pid))
    return holders


def _worker_of_pool(scheduler_pid: int, pool_pid: int) -> bool:
    """The scheduler is alive and forked by a live worker of the pool (scheduler -> worker -> pool)."""
    try:
        worker = psutil.Process(scheduler_pid).parent()
        pool = worker.parent() if worker is not None else None
    except psutil.NoSuchProcess:
        return False
    return not exited(scheduler_pid) and pool is not None and pool.pid == pool_pid


def test_scheduler_of_a_sigkilled_worker_stops_and_a_live_worker_takes_its_lock(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally], connection: redis.Redis
) -> None:
    deployment = cluster()
    deployment.start_api()
    pool = deployment.start_workers("-n", "2")
    queues = deployment.settings.worker_queues

    holders = wait_for(lambda: _lock_holders(connection, queues), 60, "RQ's scheduler to take its locks")
    old_name, old_pid = holders[queues[0]]
    assert _worker_of_pool(old_pid, pool.pid), f"scheduler {old_pid} is not a pool worker's child"
    worker = psutil.Process(old_pid).parent()
    assert worker is not None

    killed_at = time.monotonic()
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone: its scheduler is not signalled

    wait_for(lambda: exited(old_pid), 30, f"the dead worker's scheduler (pid {old_pid}) to exit")
    stopped_s = time.monotonic() - killed_at

    def taken_over() -> dict[str, tuple[str, int]] | None:
        now = _lock_holders(connection, queues)
        if now is None or any(name == old_name or not _worker_of_pool(pid, pool.pid) for name, pid in now.values()):
            return None
        return now

    wait_for(taken_over, 60, "a live worker's scheduler to hold every queue's lock")
    taken_over_s = time.monotonic() - killed_at

    # The new scheduler does the scheduler's work: an upload scheduled for later runs.
    run_at = datetime.now(UTC) + timedelta(seconds=SCHEDULED_IN_S)
    attempted, ids = deployment.upload(1, scheduled_at=run_at.isoformat())
    deployment.drain(ids, timeout_s=60)

    scenario = (
        f"worker holding RQ's scheduler SIGKILLed (scheduler gone after {stopped_s:.1f}s, "
        f"lock taken over after {taken_over_s:.1f}s)"
    )
    tally = record(deployment.tally(scenario, attempted, ids))
    assert_nothing_lost(tally)
    assert f"Scheduler {old_name}: its worker (pid {worker.pid}) is gone; releasing the locks" in pool.output()
