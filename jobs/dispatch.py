"""The flag switch: one call that runs a job on RQ or in-process (`USE_RQ_QUEUE`).

Producers commit the job's row first (the acknowledgment, `jobs.submit`), then call `dispatch`.
When Redis cannot take the job, the row stays `pending` and the reconciler
enqueues it later; the caller still answers 202. No web framework here: the
reconciler dispatches from workers too (always onto RQ, with no runner).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import redis
from rq.job import Dependency

from core.errors import ConfigurationError, QueueFull, QueueUnavailable
from core.lifecycle import Lifecycle
from core.models import DispatchMode, Job, JobStatus, utcnow
from core.settings import Settings
from jobs import limits
from jobs.dependencies import Dependents, judge, mark_parents
from redis_client import ON_FAILURE, ON_STOPPED, RUN_JOB, enqueue

log = logging.getLogger(__name__)


class TaskAdder(Protocol):
    """FastAPI's `BackgroundTasks`, as far as dispatching needs it."""

    def add_task(self, func: Any, *args: Any, **kwargs: Any) -> None: ...


class InProcess(Protocol):
    """Runs tasks inside this process (`jobs.inprocess.InProcessRunner`)."""

    def submit(self, job: Job, at: datetime | None = None, *, deferred: bool = False) -> int | None:
        """Takes the job in now (it joins the line unless deferred); returns its place among waiting jobs,
        None if scheduled or deferred."""
        ...

    async def wait(self, job_id: str) -> None: ...


@dataclass(frozen=True)
class Dispatched:
    """Where a job went: its mode, queue, status and (when waiting) position."""

    mode: DispatchMode
    queue: str
    status: JobStatus
    position: int | None = None


class Dispatcher:
    """Runs tasks on RQ workers or in this process, by the flag."""

    def __init__(
        self, settings: Settings, connection: redis.Redis, runner: InProcess | None, lifecycle: Lifecycle
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.runner = runner
        self.lifecycle = lifecycle

    @property
    def mode(self) -> DispatchMode:
        return DispatchMode.RQ if self.settings.use_rq_queue else DispatchMode.BACKGROUND

    def planned_status(self, job: Job) -> JobStatus | None:
        """The status a new job can be committed with, before its dispatch (`dispatch(recorded=True)`):
        `queued` or `scheduled`; None when only its dispatch can tell (it waits for other jobs)."""
        if job.depends_on or (self.mode is DispatchMode.BACKGROUND and self.runner is None):
            return None
        at = job.scheduled_at
        return JobStatus.SCHEDULED if at is not None and at > utcnow() else JobStatus.QUEUED

    def dispatch(
        self,
        background_tasks: TaskAdder | None,
        job: Job,
        *,
        from_statuses: tuple[JobStatus, ...] = (JobStatus.PENDING,),
        recorded: bool = False,
    ) -> Dispatched:
        """Runs the committed `job` in the background and records where it went.

        Args:
            background_tasks: the request's tasks; None outside a request (the job then starts on the loop).
            job: the job's row, as committed (its id is also the RQ job id: a re-enqueue replaces, never
                duplicates; its queue, timeout, retries and schedule say how it runs).
            from_statuses: row states this dispatch may move on from (the reconciler passes more).
            recorded: the row was committed with its `planned_status`, mode and queue already (a new job:
                one transaction per submission); it goes back to `pending` if Redis cannot take it.

        Raises:
            QueueFull: Redis refuses writes (out of memory); nothing was enqueued.
        """
        at = job.scheduled_at if job.scheduled_at is not None and job.scheduled_at > utcnow() else None
        status = JobStatus.SCHEDULED if at else JobStatus.QUEUED
        waiting_on: tuple[str, ...] = ()
        if job.depends_on:
            mark_parents(self.connection, job.depends_on)  # before judging them: see `jobs.dependencies`
            verdict = judge(self.lifecycle, job.depends_on)
            if verdict.blocked_by is not None:
                ended = self._dependents().block(job, *verdict.blocked_by)
                return Dispatched(self.mode, job.queue, ended)
            if verdict.undispatched:
                # A parent is not on a queue yet (Redis was down): the reconciler dispatches it first.
                return Dispatched(self.mode, job.queue, JobStatus.PENDING)
            waiting_on = verdict.waiting_on
            status = JobStatus.DEFERRED if waiting_on else status
        if self.mode is DispatchMode.RQ:
            try:
                rate_limit = limits.rate_limit_for(job.task)
                after = limits.previous_of_key(self.connection, job)
                enqueued = enqueue(
                    self.connection,
                    self.settings,
                    RUN_JOB,
                    job.id,
                    job_id=job.id,
                    queue_name=job.queue,
                    at=at,
                    description=f"{job.task.rsplit('.', 1)[-1]}({job.id})",
                    on_failure=ON_FAILURE,
                    on_stopped=ON_STOPPED,
                    job_timeout=job.timeout_s,
                    retries=job.retries,
                    retry_intervals=job.retry_intervals,
                    rate_limit=rate_limit,
                    # Never both: a job with parents cannot take an ordering key (`jobs.submit`).
                    depends_on=Dependency(jobs=list(waiting_on)) if waiting_on else after,
                )
                limits.settle(self.connection, enqueued, after, self._is_canceled)
            except redis.exceptions.OutOfMemoryError as exc:
                raise QueueFull("the queue is out of memory; try again later") from exc
            except QueueFull:
                raise  # Redis is up but refuses writes: the caller answers 503 and keeps nothing
            except (QueueUnavailable, redis.exceptions.RedisError) as exc:
                log.warning("job %s stays pending, Redis unreachable: %s", job.id, exc)
                if recorded:
                    self.lifecycle.mark_dispatched(
                        job.id, mode=DispatchMode.RQ, queue=job.queue, status=JobStatus.PENDING, from_statuses=(status,)
                    )
                return Dispatched(DispatchMode.RQ, job.queue, JobStatus.PENDING)
            if not recorded:
                self.lifecycle.mark_dispatched(
                    job.id, mode=DispatchMode.RQ, queue=job.queue, status=status, from_statuses=from_statuses
                )
            if waiting_on:
                return Dispatched(DispatchMode.RQ, job.queue, self._recheck(job, waiting_on))
            reason = limits.waiting_reason(enqueued, after, rate_limit)
            if reason is not None:
                self.lifecycle.log(job.id, reason)
                return Dispatched(DispatchMode.RQ, job.queue, status)
            return Dispatched(DispatchMode.RQ, job.queue, status, self._rq_position(enqueued) if not at else None)

        if self.runner is None:
            raise ConfigurationError("USE_RQ_QUEUE is false but this process cannot run jobs in-process")
        if not recorded:
            self.lifecycle.mark_dispatched(
                job.id, mode=DispatchMode.BACKGROUND, queue=job.queue, status=status, from_statuses=from_statuses
            )
        # The job joins the line before the answer is written, so its position is its own, as on RQ.
        position = self.runner.submit(job, at, deferred=bool(waiting_on))
        if background_tasks is not None:
            background_tasks.add_task(self.runner.wait, job.id)  # graceful shutdown waits for it, as for RQ work
        if waiting_on:
            return Dispatched(DispatchMode.BACKGROUND, job.queue, self._recheck(job, waiting_on))
        return Dispatched(DispatchMode.BACKGROUND, job.queue, status, position)

    def _dependents(self) -> Dependents:
        return Dependents(self.lifecycle, self.connection if self.mode is DispatchMode.RQ else None)

    def _recheck(self, job: Job, waiting_on: tuple[str, ...]) -> JobStatus:
        """Logs why the job waits; a parent may have ended between the first look and the `deferred` record
        (its own settling then missed this job): looks again, and settles the job now if so."""
        self.lifecycle.log(job.id, f"waits for {', '.join(waiting_on)}")
        row = self.lifecycle.get(job.id)
        if row is None or row.status is not JobStatus.DEFERRED:
            return row.status if row is not None else job.status
        return self._dependents().settle(row)

    def _is_canceled(self, job_id: str) -> bool:
        row = self.lifecycle.get(job_id)
        return row is not None and row.status is JobStatus.CANCELED

    def _rq_position(self, job: Any) -> int | None:
        try:
            position = job.get_position()
        except redis.exceptions.RedisError:
            return None
        return int(position) if position is not None else None
