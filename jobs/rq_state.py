"""Reading RQ's state: where a job is, which workers are alive, what the registries hold.

Only reads (and one claim, `take_back`); RQ's own registries are the truth.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from rq import Worker
from rq.job import JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.registry import StartedJobRegistry

from core.models import utcnow
from redis_client import KitJob, KitQueue, fetch_job, get_queue


class JobPlace(enum.StrEnum):
    """Where a job is, as far as delivery is concerned."""

    WAITING = "waiting"  # on a queue, in the scheduled or deferred registry, or waiting for a rate-limit slot
    RUNNING = "running"  # in the started registry: RQ's maintenance handles a dead worker
    ENDED = "ended"  # finished, failed, stopped or canceled in RQ
    LOST = "lost"  # the hash says queued/started/scheduled but no list or registry holds it
    ABSENT = "absent"  # no job hash at all (never enqueued, or Redis lost it)


@dataclass(frozen=True)
class Located:
    place: JobPlace
    job: KitJob | None


def _in_started_registry(connection: redis.Redis, job: KitJob) -> bool:
    registry = StartedJobRegistry(job.origin, connection=connection, job_class=KitJob)
    return job.id in registry.get_job_ids(cleanup=False)


def locate(connection: redis.Redis, job_id: str) -> Located:
    """Finds a job in RQ's structures.

    Raises:
        redis.exceptions.RedisError: Redis cannot be read.
    """
    job = fetch_job(job_id, connection)
    if job is None:
        return Located(JobPlace.ABSENT, None)
    status = job.get_status(refresh=False)
    queue = get_queue(job.origin, connection)
    if status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        return Located(JobPlace.ENDED, job)
    if status in (JobStatus.DEFERRED, JobStatus.READY_TO_ENQUEUE):
        return Located(JobPlace.WAITING, job)
    if status == JobStatus.RATE_LIMITED:  # waiting for a slot of its task's limit (`jobs.limits`)
        waiting = bool(job.rate_limit_key) and (
            connection.zscore(RateLimitRegistry.from_job(job).rate_limited_key, job.id) is not None
        )
        return Located(JobPlace.WAITING if waiting else JobPlace.LOST, job)
    if status == JobStatus.SCHEDULED:
        in_registry = connection.zscore(queue.scheduled_job_registry.key, job.id) is not None
        return Located(JobPlace.WAITING if in_registry else JobPlace.LOST, job)
    if status == JobStatus.STARTED:
        return Located(JobPlace.RUNNING if _in_started_registry(connection, job) else JobPlace.LOST, job)
    # queued (or created): on the queue list, or in the intermediate list of a single-queue worker
    for key in (queue.key, queue.intermediate_queue_key):
        if connection.lpos(key, job.id) is not None:
            return Located(JobPlace.WAITING, job)
    if _in_started_registry(connection, job):
        return Located(JobPlace.RUNNING, job)
    return Located(JobPlace.LOST, job)


def take_back(connection: redis.Redis, job: KitJob) -> bool:
    """Claims a waiting job away from RQ (for the in-process path); True when no worker can get it now."""
    queue = get_queue(job.origin, connection)
    scheduled_key = queue.scheduled_job_registry.key
    claimed = bool(connection.lrem(queue.key, 0, job.id)) or bool(connection.zrem(scheduled_key, job.id))
    if claimed:
        job.delete(remove_from_queue=True)
    return claimed


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    state: str
    queues: list[str]
    current_job: str | None
    successful_jobs: int
    failed_jobs: int
    last_heartbeat: datetime | None
    alive: bool


def workers(connection: redis.Redis, worker_ttl_s: int) -> list[WorkerInfo]:
    """Every registered worker; `alive` when its heartbeat is within `worker_ttl_s`."""
    cutoff = utcnow() - timedelta(seconds=worker_ttl_s)
    found = []
    for worker in Worker.all(connection=connection, job_class=KitJob, queue_class=KitQueue):
        heartbeat = worker.last_heartbeat
        found.append(
            WorkerInfo(
                name=worker.name,
                state=str(worker.get_state()),
                queues=worker.queue_names(),
                current_job=worker.get_current_job_id(),
                successful_jobs=worker.successful_job_count,
                failed_jobs=worker.failed_job_count,
                last_heartbeat=heartbeat,
                alive=heartbeat is not None and heartbeat >= cutoff,
            )
        )
    return found


def served_queues(connection: redis.Redis, worker_ttl_s: int) -> set[str]:
    """Names of the queues at least one live worker listens on."""
    return {name for worker in workers(connection, worker_ttl_s) if worker.alive for name in worker.queues}


def registry_counts(connection: redis.Redis, queue_name: str) -> dict[str, int]:
    """How many jobs of a queue each RQ registry holds."""
    queue = get_queue(queue_name, connection)
    return {
        "queued": queue.count,
        "started": queue.started_job_registry.get_job_count(cleanup=False),
        "scheduled": queue.scheduled_job_registry.get_job_count(cleanup=False),
        "deferred": queue.deferred_job_registry.get_job_count(cleanup=False),
        "finished": queue.finished_job_registry.get_job_count(cleanup=False),
        "failed": queue.failed_job_registry.get_job_count(cleanup=False),
        "canceled": queue.canceled_job_registry.get_job_count(cleanup=False),
    }


def stuck_jobs(connection: redis.Redis, queue_name: str, grace_s: int = 60) -> list[str]:
    """Started jobs running longer than their timeout (+ `grace_s`): RQ should have killed them."""
    queue = get_queue(queue_name, connection)
    cutoff = utcnow()
    stuck = []
    for job_id in queue.started_job_registry.get_job_ids(cleanup=False):
        job = fetch_job(job_id, connection)
        if job is None or job.started_at is None or not job.timeout or job.timeout < 0:
            continue
        if job.started_at + timedelta(seconds=float(job.timeout) + grace_s) < cutoff:
            stuck.append(job_id)
    return stuck


def scheduler_problems(connection: redis.Redis, queue_names: tuple[str, ...]) -> list[str]:
    """What is missing of the two schedulers: RQ's (retries, `scheduled_at`) and rq-scheduler (periodic jobs)."""
    problems = []
    for name in queue_names:
        if get_queue(name, connection).scheduler_pid is None:
            problems.append(f"no RQ scheduler holds queue {name} (workers run it; are they up?)")
    instances = [
        key
        for key in connection.scan_iter(match="rq:scheduler_instance:*", count=100)
        if not connection.hexists(key, "death")
    ]
    if not instances:
        problems.append("rq-scheduler is not running (python -m workers.scheduler): the reconciler is not scheduled")
    return problems
