"""What operators do to jobs: look, cancel, retry, reprioritize. Both modes, RQ's mechanisms where the job is on RQ."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Any

import redis
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation

from core.errors import InvalidTransition, NotFound, QueueUnavailable
from core.models import WAITING_STATUSES, DispatchMode, Job, JobStatus, Priority
from jobs.dependencies import Dependents
from jobs.listing import JobFilter, list_jobs
from jobs.rq_move import Moved, move_waiting
from jobs.rq_state import JobPlace, Located, locate, workers
from jobs.services import JobServices
from redis_client import KitJob, fetch_job

log = logging.getLogger(__name__)

RECENT_RUNS_FOR_ETA = 20  # finished runs averaged for the wait estimate


@dataclass(frozen=True)
class CancelOutcome:
    status: JobStatus
    stopping: bool  # a running job was told to stop; it ends `canceled` shortly


def _locate(services: JobServices, job_id: str) -> Located:
    try:
        return locate(services.redis, job_id)
    except (redis.exceptions.RedisError, ValueError):
        return Located(JobPlace.ABSENT, None)


def cancel(services: JobServices, job_id: str) -> CancelOutcome:
    """Cancels a waiting job (it will never run) or stops a running one (not retried).

    Raises:
        NotFound: unknown id.
        InvalidTransition: the job has ended already.
    """
    lifecycle = services.lifecycle
    # The flag first: a worker that dequeued the job already will see it and not run it.
    job = lifecycle.request_cancel(job_id)
    located = _locate(services, job_id)
    # A waiting job with an ordering key stays in its key's chain: its turn comes, it runs nothing (its row is
    # canceled), and the next one runs then, in order (`jobs.limits`).
    if located.place is JobPlace.WAITING and located.job is not None and job.ordering_key is None:
        with contextlib.suppress(InvalidJobOperation):  # canceled already
            located.job.cancel()
    elif located.place is JobPlace.RUNNING:
        try:
            send_stop_job_command(services.redis, job_id, serializer=located.job and located.job.serializer)
        except (InvalidJobOperation, redis.exceptions.RedisError) as exc:
            log.warning("stop command for %s not sent (%s); it stops at its next progress report", job_id, exc)
        return CancelOutcome(JobStatus.STARTED, stopping=True)
    if job.status is JobStatus.STARTED and job.mode is DispatchMode.BACKGROUND:
        return CancelOutcome(JobStatus.STARTED, stopping=True)  # stops at its next progress report
    lifecycle.mark_canceled(job_id, "canceled on request")
    services.runner.drop(job_id)  # an in-process job waiting for its time: nothing waits for it any more
    # Its dependents are canceled or failed now (RQ would leave them deferred for ever).
    Dependents(lifecycle, services.redis).after_end(job_id)
    return CancelOutcome(JobStatus.CANCELED, stopping=False)


def retry(services: JobServices, job_id: str) -> JobStatus:
    """Runs a failed job again: RQ's failed registry requeues it, else it is dispatched anew.

    Raises:
        NotFound: unknown id.
        InvalidTransition: the job has not failed.
    """
    row = services.lifecycle.require(job_id)
    if not services.lifecycle.reset_for_retry(job_id):
        raise InvalidTransition(f"job is {row.status.value}; only failed jobs can be retried")
    failed = _failed_rq_job(services, job_id)
    if failed is not None and services.dispatcher.mode is DispatchMode.RQ:
        with contextlib.suppress(InvalidJobOperation):  # `rq requeue` got there first: it runs once anyway
            failed.requeue()
        return JobStatus.QUEUED
    dispatched = services.dispatcher.dispatch(
        None, services.lifecycle.require(job_id), from_statuses=(JobStatus.QUEUED,)
    )
    return dispatched.status


@dataclass(frozen=True)
class PriorityChange:
    job: Job  # the row as it is now
    position: int | None


def change_priority(services: JobServices, job_id: str, priority: Priority) -> PriorityChange:
    """Moves a waiting job to its new priority level's queue (`PRIORITY_QUEUES`).

    A job queued on RQ moves between RQ queues in one transaction (`jobs.rq_move`); a scheduled one (a
    `scheduled_at`, a retry's backoff) moves to the new queue's scheduled registry; a pending one (not on
    Redis yet) goes to the new queue when it is dispatched; an in-process one moves in the runner's line.

    Raises:
        NotFound: unknown id.
        InvalidTransition: the job is running or has ended (or it started meanwhile).
    """
    row = services.lifecycle.require(job_id)
    if row.status not in WAITING_STATUSES:
        raise InvalidTransition(
            f"job is {row.status.value}; only waiting jobs (pending, queued, scheduled, deferred) can change priority"
        )
    queue = services.settings.queue_for(priority.value)
    if row.mode is DispatchMode.BACKGROUND:
        if services.runner.is_running(job_id):
            raise InvalidTransition("job is started; only waiting jobs can change priority")
        services.runner.reprioritize(job_id, priority)  # not held here: the row says it all (pending)
    else:
        _move_on_rq(services, job_id, queue)
    if not services.lifecycle.reprioritize(job_id, priority.value, queue):
        raise InvalidTransition(f"job is {services.lifecycle.require(job_id).status.value} already")
    moved = services.lifecycle.require(job_id)
    return PriorityChange(moved, position(services, moved))


def _move_on_rq(services: JobServices, job_id: str, queue: str) -> None:
    located = _locate(services, job_id)
    if located.place is JobPlace.ABSENT or located.job is None:
        return  # never enqueued (pending) or lost: the next dispatch uses the row's new queue
    if located.place in (JobPlace.RUNNING, JobPlace.ENDED):
        raise InvalidTransition("job is started; only waiting jobs can change priority")
    if located.job.origin == queue:
        return
    try:
        moved = move_waiting(services.redis, job_id, located.job.origin, queue)
    except redis.exceptions.RedisError as exc:
        raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
    if moved is Moved.DUE:
        raise InvalidTransition("job is due to start now; try again in a few seconds")
    if moved is Moved.GONE and located.place is not JobPlace.LOST:
        raise InvalidTransition("job started meanwhile; only waiting jobs can change priority")


def _failed_rq_job(services: JobServices, job_id: str) -> KitJob | None:
    try:
        job = fetch_job(job_id, services.redis)
        if job is not None and job.id in job.failed_job_registry:  # one ZSCORE, not the whole registry
            return job
    except redis.exceptions.RedisError:
        return None
    return None


def position(services: JobServices, job: Job) -> int | None:
    """0-based place in line while waiting; None otherwise."""
    if job.status is not JobStatus.QUEUED:
        return None
    if job.mode is DispatchMode.BACKGROUND:
        return services.runner.position(job.id)
    try:
        queued = fetch_job(job.id, services.redis)
        place = queued.get_position() if queued is not None else None
    except redis.exceptions.RedisError:
        return None
    return int(place) if place is not None else None


def estimated_wait_s(services: JobServices, job: Job, place: int | None) -> float | None:
    """Position times the recent average run time on that queue, shared among the live workers serving it."""
    if place is None:
        return None
    average = services.lifecycle.average_run_s(job.queue, RECENT_RUNS_FOR_ETA)
    if average is None:
        return None
    if job.mode is DispatchMode.BACKGROUND:
        parallel = services.settings.background_concurrency
    else:
        try:
            live = workers(services.redis, services.settings.worker_ttl_s)
        except redis.exceptions.RedisError:
            live = []
        parallel = max(1, sum(1 for worker in live if worker.alive and job.queue in worker.queues))
    # Jobs ahead plus this one, each taking the average, spread over the workers draining the queue.
    # Milliseconds are the clock's real resolution here; coarser rounding would break the proportion.
    return round((place + 1) * average / parallel, 3)


def rq_view(job: KitJob) -> dict[str, Any]:
    """The RQ side of a job: status, times, progress kept in its meta."""
    meta = job.get_meta(refresh=False)
    return {
        "rq_status": job.get_status(refresh=False).value,
        "origin": job.origin,
        "enqueued_at": job.enqueued_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "worker": job.worker_name,
        "retries_left": job.retries_left,
        "progress": meta.get("progress"),
    }


def find(services: JobServices, job_id: str) -> tuple[Job | None, KitJob | None]:
    """The job and the RQ job with this id (either may be missing).

    Raises:
        NotFound: neither exists.
    """
    row = services.lifecycle.get(job_id)
    rq_job = None
    try:
        rq_job = fetch_job(job_id, services.redis)
    except (redis.exceptions.RedisError, ValueError):
        rq_job = None
    if row is None and rq_job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return row, rq_job


# --- bulk retry ---------------------------------------------------------------------------------

BULK_RETRY_BATCH = 100  # failed jobs read per query while retrying many


@dataclass(frozen=True)
class Skipped:
    id: str
    reason: str


@dataclass(frozen=True)
class BulkRetryOutcome:
    retried: list[str]
    skipped: list[Skipped]
    more: bool  # matching failed jobs remain beyond `limit`


def retry_many(services: JobServices, where: JobFilter, limit: int) -> BulkRetryOutcome:
    """Retries up to `limit` failed jobs matching `where`, each as `retry` does, newest first, in batches.

    Each job's own compare-and-set decides: a job another caller retried meanwhile is skipped, with why,
    so concurrent bulk retries never run a job twice.
    """
    where = replace(where, status=JobStatus.FAILED)
    retried: list[str] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    cursor: str | None = None
    more = False
    while True:
        page = list_jobs(services.database, where, BULK_RETRY_BATCH, cursor)
        for job in page.jobs:
            if len(retried) >= limit:
                more = True
                break
            seen.add(job.id)
            try:
                retry(services, job.id)
            except (InvalidTransition, NotFound) as exc:
                skipped.append(Skipped(job.id, str(exc)))
            else:
                retried.append(job.id)
        cursor = page.next_cursor
        if more or cursor is None:
            break
    skipped += _unmatched(services, where, seen, more)
    return BulkRetryOutcome(retried, skipped, more)


def _unmatched(services: JobServices, where: JobFilter, seen: set[str], more: bool) -> list[Skipped]:
    """Why the ids asked for by name were not retried (those left for a next call excepted)."""
    skipped = []
    for job_id in dict.fromkeys(where.ids or ()):
        if job_id in seen:
            continue
        row = services.lifecycle.get(job_id)
        if row is None:
            skipped.append(Skipped(job_id, f"no job with id {job_id!r}"))
        elif row.status is not JobStatus.FAILED:
            skipped.append(Skipped(job_id, f"job is {row.status.value}; only failed jobs can be retried"))
        elif not more:
            skipped.append(Skipped(job_id, "does not match the filter"))
    return skipped
