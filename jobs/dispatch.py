"""The flag switch: one call that runs a task on RQ or in-process (`USE_RQ_QUEUE`).

Endpoints commit their row first (the acknowledgment), then call `dispatch`.
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

from core.errors import ConfigurationError, QueueFull, QueueUnavailable
from core.lifecycle import Lifecycle
from core.models import AnalysisStatus, DispatchMode, utcnow
from core.settings import Settings
from redis_client import enqueue
from tasks.registry import ON_FAILURE, ON_STOPPED
from tasks.spec import TaskSpec

log = logging.getLogger(__name__)


class TaskAdder(Protocol):
    """FastAPI's `BackgroundTasks`, as far as dispatching needs it."""

    def add_task(self, func: Any, *args: Any, **kwargs: Any) -> None: ...


class InProcess(Protocol):
    """Runs tasks inside this process (the API's `app.inprocess.InProcessRunner`)."""

    def submit(self, task: TaskSpec, job_id: str, at: datetime | None = None) -> int | None:
        """Takes the job in now (it joins the line); returns its place among waiting jobs, None if scheduled."""
        ...

    async def wait(self, job_id: str) -> None: ...


@dataclass(frozen=True)
class Dispatched:
    """Where a job went: its mode, queue, status and (when waiting) position."""

    mode: DispatchMode
    queue: str
    status: AnalysisStatus
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

    def dispatch(
        self,
        background_tasks: TaskAdder | None,
        task: TaskSpec,
        job_id: str,
        *,
        queue: str,
        at: datetime | None = None,
        from_statuses: tuple[AnalysisStatus, ...] = (AnalysisStatus.PENDING,),
    ) -> Dispatched:
        """Runs `task(job_id)` in the background and records where it went.

        Args:
            background_tasks: the request's tasks; None outside a request (the job then starts on the loop).
            task: the task to run.
            job_id: the job id, also the analysis id (deterministic: a re-enqueue replaces, never duplicates).
            queue: the RQ queue (recorded in background mode too).
            at: run no earlier than this time.
            from_statuses: row states this dispatch may move on from (the reconciler passes more).

        Raises:
            QueueFull: Redis refuses writes (out of memory); nothing was enqueued.
        """
        at = at if at is not None and at > utcnow() else None
        status = AnalysisStatus.SCHEDULED if at else AnalysisStatus.QUEUED
        if self.mode is DispatchMode.RQ:
            try:
                job = enqueue(
                    self.connection,
                    self.settings,
                    task.name,
                    job_id,
                    job_id=job_id,
                    queue_name=queue,
                    at=at,
                    on_failure=ON_FAILURE,
                    on_stopped=ON_STOPPED,
                )
            except QueueFull:
                raise  # Redis is up but refuses writes: the caller answers 503 and keeps nothing
            except QueueUnavailable as exc:
                log.warning("job %s stays pending, Redis unreachable: %s", job_id, exc)
                return Dispatched(DispatchMode.RQ, queue, AnalysisStatus.PENDING)
            self.lifecycle.mark_dispatched(
                job_id, mode=DispatchMode.RQ, queue=queue, status=status, from_statuses=from_statuses
            )
            return Dispatched(DispatchMode.RQ, queue, status, self._rq_position(job) if not at else None)

        if self.runner is None:
            raise ConfigurationError("USE_RQ_QUEUE is false but this process cannot run jobs in-process")
        self.lifecycle.mark_dispatched(
            job_id, mode=DispatchMode.BACKGROUND, queue=queue, status=status, from_statuses=from_statuses
        )
        # The job joins the line before the answer is written, so its position is its own, as on RQ.
        position = self.runner.submit(task, job_id, at)
        if background_tasks is not None:
            background_tasks.add_task(self.runner.wait, job_id)  # graceful shutdown waits for it, as for RQ work
        return Dispatched(DispatchMode.BACKGROUND, queue, status, position)

    def _rq_position(self, job: Any) -> int | None:
        try:
            position = job.get_position()
        except redis.exceptions.RedisError:
            return None
        return int(position) if position is not None else None
