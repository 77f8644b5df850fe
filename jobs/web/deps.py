"""The kit's FastAPI dependencies: its services, and `QueuedTasks`, the drop-in for `BackgroundTasks`.

    @router.post("/orders")
    async def create_order(order: Order, tasks: QueuedTasks):      # was: tasks: BackgroundTasks
        handle = tasks.add_task(send_receipt, order.id, email=order.email)
        return {"job": handle.id, "status_url": handle.status_url}

`add_task` keeps Starlette's signature. It checks the arguments (JSON, and that they fit the task),
commits the job's row (the acknowledgment), then enqueues it on RQ or, with `USE_RQ_QUEUE=false`,
runs it in this process after the response, as `BackgroundTasks` would. It returns at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Request

from core.models import DispatchMode, Job, JobStatus, OnDependencyFailure, Priority
from jobs.services import JobServices
from jobs.submit import fingerprint


def get_job_services(request: Request) -> JobServices:
    services: JobServices = request.app.state.jobs
    return services


JobServicesDep = Annotated[JobServices, Depends(get_job_services)]


def links_base(request: Request, services: JobServices) -> str:
    """Where absolute links point: `PUBLIC_URL` when set; else the request's own base URL, built from
    its `Host` header, which the client chooses (set `PUBLIC_URL` behind a proxy or on a network)."""
    public = services.settings.public_url
    return public.rstrip("/") if public else str(request.base_url).rstrip("/")


@dataclass(frozen=True)
class JobHandle:
    """What `add_task` gives back: the job's id and where to follow it."""

    id: str
    task: str
    status: JobStatus
    mode: DispatchMode
    queue: str
    position: int | None
    status_url: str
    events_url: str
    replayed: bool = False  # a repeat of an earlier request with the same idempotency key


class JobTasks:
    """`add_task` bound to one request (what a `QueuedTasks` parameter receives)."""

    def __init__(self, services: JobServices, background_tasks: BackgroundTasks, base_url: str) -> None:
        self._services = services
        self._background_tasks = background_tasks
        self._base_url = base_url

    def add_task(
        self,
        func: Callable[..., Any],
        *args: Any,
        queue: str | None = None,
        priority: str | Priority | None = None,
        at: datetime | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        depends_on: Sequence[JobHandle | str] = (),
        on_dependency_failure: str | OnDependencyFailure = OnDependencyFailure.CANCEL,
        ordering_key: str | None = None,
        **kwargs: Any,
    ) -> JobHandle:
        """Runs `func(*args, **kwargs)` in the background; `func` is a task (`@task`).

        Args:
            queue: another queue than the task's.
            priority: `critical`, `high`, `normal` or `low`: the job goes to that level's queue
                (`PRIORITY_QUEUES`) instead of the task's.
            at: run no earlier than this time (UTC when naive).
            idempotency_key: the same key (for the same task and arguments) returns the same job.
            callback_url: POSTed the outcome when the job ends (signed; see the README).
            depends_on: jobs (handles or ids) that must all finish first; the job waits `deferred`.
            on_dependency_failure: `cancel` (default) or `fail` the job when one of them fails or is
                canceled; it never waits for ever.
            ordering_key: jobs with the same key run one at a time, in the order they were accepted (not
                with `depends_on`).

        Raises:
            TypeError: `func` is not a task, or an argument does not fit it or is not JSON.
            ValueError: an unknown dependency, or a bad option.
            IdempotencyMismatch: the key was used with other arguments (422).
            QueueFull: Redis refuses writes; nothing was kept (503).
        """
        submitter = self._services.submitter
        job = submitter.build(
            func,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            at=at,
            idempotency_key=idempotency_key,
            callback_url=callback_url,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
            ordering_key=ordering_key,
        )
        if idempotency_key is not None:
            job.request_hash = _hash_of(job)
        submitted = submitter.submit(job, background_tasks=self._background_tasks)
        row = submitted.job
        return JobHandle(
            id=row.id,
            task=row.task,
            status=submitted.status,
            mode=submitted.dispatched.mode if submitted.dispatched else row.mode,
            queue=row.queue,
            position=submitted.position,
            status_url=f"{self._base_url}/jobs/{row.id}",
            events_url=f"{self._base_url}/jobs/{row.id}/events",
            replayed=submitted.replayed,
        )


def _hash_of(job: Job) -> str:
    scheduled = job.scheduled_at.isoformat() if job.scheduled_at else ""
    return fingerprint(
        job.task, job.args, job.kwargs, job.queue, job.priority, scheduled, job.callback_url or "", job.depends_on
    )


def get_job_tasks(request: Request, background_tasks: BackgroundTasks, services: JobServicesDep) -> JobTasks:
    return JobTasks(services, background_tasks, links_base(request, services))


QueuedTasks = Annotated[JobTasks, Depends(get_job_tasks)]
