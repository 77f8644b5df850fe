"""A worker that died with Redis (a crash) leaves its scheduler's locks behind, TTL `interval + 60` s: its
pool releases them once Redis answers, so a live worker's scheduler takes them at its next maintenance
instead of a minute later (scheduled jobs and retry backoffs wait meanwhile)."""

from __future__ import annotations

import multiprocessing

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.scheduler import SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.worker_pool import WorkerData

from devserver.ports import free_port
from redis_client import KitJob, KitQueue
from workers.pool import KitWorkerPool
from workers.worker import KitWorker

LOCK_TTL_S = 61  # what RQ's scheduler sets (interval + 60)


def _lock(queue: str) -> str:
    return SCHEDULER_LOCKING_KEY_TEMPLATE % queue


def test_a_worker_names_its_scheduler_after_itself(redis_conn: redis.Redis) -> None:
    redis_conn.set(_lock("callbacks"), "another-scheduler", ex=LOCK_TTL_S)  # so no scheduler process starts
    worker = KitWorker(["callbacks"], connection=redis_conn)
    worker._start_scheduler()
    assert worker.scheduler is not None
    assert worker.scheduler.name == worker.name
    assert not worker.scheduler.acquired_locks


def test_the_pool_releases_a_dead_workers_scheduler_locks_once_redis_answers(redis_conn: redis.Redis) -> None:
    redis_conn.set(_lock("callbacks"), "dead-worker", ex=LOCK_TTL_S)
    redis_conn.set(_lock("low"), "live-worker", ex=LOCK_TTL_S)
    pool = KitWorkerPool(
        ["callbacks", "low"], connection=redis_conn, num_workers=1, worker_class=KitWorker,
        job_class=KitJob, queue_class=KitQueue,
    )  # fmt: skip
    connection, pool.connection = pool.connection, redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    dead = multiprocessing.get_context("fork").Process(target=lambda: None)
    dead.start()
    dead.join()

    pool.handle_dead_worker(WorkerData(name="dead-worker", pid=dead.pid or 0, process=dead))
    pool.check_workers(respawn=False)  # Redis is down (nothing listens there): kept for the next check
    pool.connection = connection  # Redis is back
    pool.check_workers(respawn=False)  # the pool's check, every second

    assert redis_conn.get(_lock("callbacks")) is None
    assert redis_conn.get(_lock("low")) == b"live-worker"  # another worker's scheduler keeps its lock
    redis_conn.set(_lock("callbacks"), "dead-worker", ex=LOCK_TTL_S)
    pool.check_workers(respawn=False)
    assert redis_conn.get(_lock("callbacks")) == b"dead-worker"  # released once: a name is never reused
