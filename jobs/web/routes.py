"""`/jobs`: every job, whatever its task: status, result, events, cancel, retry, priority, and the list.

Reading one job needs its id (ids are unguessable); changing one, listing jobs, or reading an RQ
job that has no row (e.g. the reconciler's) needs the admin key.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from core.errors import NotFound
from core.models import Job, JobStatus, Priority
from jobs import operations
from jobs.listing import MAX_PAGE, JobFilter, count_jobs, list_jobs
from jobs.services import JobServices
from jobs.stuck import is_stuck
from jobs.web.auth import ADMIN_RESPONSES, AdminDep, key_matches, presented_key
from jobs.web.deps import JobServicesDep
from jobs.web.events import job_events
from jobs.web.schemas import (
    BulkRetryIn,
    BulkRetryOut,
    CallbackOut,
    CancelOut,
    ErrorOut,
    JobCount,
    JobCounts,
    JobOut,
    JobPage,
    JobSummary,
    PriorityIn,
    PriorityOut,
    ResultOut,
    RetryOut,
    SkippedOut,
    UtcMoment,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job id")]
RECENT_LOG_LINES = 20
SSE_PING_S = 15  # keeps proxies from closing an idle stream


def _is_admin(request: Request, services: JobServicesDep) -> bool:
    """True when the request carries the admin key; a missing or wrong key is no error here."""
    key = services.settings.admin_api_key
    presented = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    return key is not None and key_matches(key.get_secret_value(), presented)


IsAdminDep = Annotated[bool, Depends(_is_admin)]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "Unknown id"}}


def job_out(services: JobServices, job: Job, rq: dict[str, Any] | None = None) -> JobOut:
    place = operations.position(services, job)
    return JobOut(
        id=job.id,
        task=job.task,
        status=job.status,
        mode=job.mode,
        queue=job.queue,
        position=place,
        estimated_wait_s=operations.estimated_wait_s(services, job, place),
        progress=job.progress,
        logs=job.logs[-RECENT_LOG_LINES:],
        attempts=job.attempts,
        created_at=job.created_at,
        scheduled_at=job.scheduled_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result=job.result,
        error=job.error,
        rq=rq,
        callback=CallbackOut.of(job),
        priority=Priority(job.priority) if job.priority in set(Priority) else None,
        stuck=is_stuck(job, services.settings.stuck_margin_s),
        ordering_key=job.ordering_key,
    )


@router.get(
    "",
    response_model=JobPage,
    responses={**ADMIN_RESPONSES, 422: {"model": ErrorOut, "description": "Bad filter or cursor"}},
)
def get_jobs(
    services: JobServicesDep,
    _admin: AdminDep,
    task: Annotated[str | None, Query(max_length=255, description="Only jobs of this task")] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status")] = None,
    queue: Annotated[str | None, Query(max_length=64, description="Only jobs on this queue")] = None,
    since: Annotated[UtcMoment | None, Query(description="Ended (e.g. failed) at or after")] = None,
    until: Annotated[UtcMoment | None, Query(description="Ended (e.g. failed) before")] = None,
    error_contains: Annotated[
        str | None, Query(min_length=1, max_length=255, description="Error text contains (any case)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page")] = None,
) -> JobPage:
    """Jobs of every task, newest first, filtered by task, status, queue, end time and error text (admin)."""
    where = JobFilter(task, status, queue, since=since, until=until, error_contains=error_contains)
    page = list_jobs(services.database, where, limit, cursor)
    return JobPage(items=[JobSummary.of(job) for job in page.jobs], next_cursor=page.next_cursor)


@router.get("/summary", response_model=JobCounts, responses=ADMIN_RESPONSES)
def get_job_counts(services: JobServicesDep, _admin: AdminDep) -> JobCounts:
    """How many jobs each task has in each status (admin)."""
    items = [JobCount(task=c.task, status=c.status, count=c.count) for c in count_jobs(services.database)]
    return JobCounts(items=items, total=sum(item.count for item in items))


@router.post(
    "/retry",
    response_model=BulkRetryOut,
    responses={**ADMIN_RESPONSES, 422: {"model": ErrorOut, "description": "Bad filter"}},
)
def retry_jobs(body: BulkRetryIn, services: JobServicesDep, _admin: AdminDep) -> BulkRetryOut:
    """Run again every failed job matching the filter, as `POST /jobs/{id}/retry` does (admin)."""
    where = JobFilter(
        task=body.task,
        queue=body.queue,
        since=body.since,
        until=body.until,
        error_contains=body.error_contains,
        ids=tuple(body.ids) if body.ids is not None else None,
    )
    outcome = operations.retry_many(services, where, body.limit)
    return BulkRetryOut(
        retried=len(outcome.retried),
        retried_ids=outcome.retried,
        skipped=[SkippedOut(id=item.id, reason=item.reason) for item in outcome.skipped],
        more=outcome.more,
    )


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
def get_job(job_id: JobId, services: JobServicesDep, is_admin: IsAdminDep) -> JobOut:
    """A job's status, place in line and wait estimate, progress, recent logs, times, result or error."""
    row, rq_job = operations.find(services, job_id)
    if row is None and not is_admin:
        # An RQ job of the service's own (the reconciler's...): as unknown as any id, to anyone without the key.
        raise NotFound(f"no job with id {job_id!r}")
    rq = operations.rq_view(rq_job) if rq_job is not None else None
    if row is None:
        return JobOut(
            id=job_id,
            task=None,
            status=None,
            mode=None,
            queue=rq_job.origin if rq_job else None,
            position=None,
            estimated_wait_s=None,
            progress=rq.get("progress") if rq else None,
            logs=[],
            attempts=None,
            created_at=None,
            started_at=None,
            finished_at=None,
            result=None,
            error=None,
            rq=rq,
        )
    return job_out(services, row, rq)


@router.get(
    "/{job_id}/result",
    response_model=ResultOut,
    responses={
        200: {"description": "Finished: the result"},
        202: {"model": ResultOut, "description": "Not finished yet: its progress"},
        **NOT_FOUND,
        410: {"model": ResultOut, "description": "Canceled: there will be no result"},
        500: {"model": ResultOut, "description": "Failed: the error (the job's failure, not the server's)"},
    },
)
def get_job_result(job_id: JobId, services: JobServicesDep) -> JSONResponse:
    """The job's result: 200 when finished, 202 while not, 500 with the error when it failed."""
    job = services.lifecycle.require(job_id)
    body: dict[str, Any] = {"id": job.id, "status": job.status.value}
    if job.status is JobStatus.FINISHED:
        return JSONResponse(body | {"result": job.result})
    if job.status is JobStatus.FAILED:
        return JSONResponse(body | {"detail": job.error or "the job failed"}, status_code=500)
    if job.status is JobStatus.CANCELED:
        return JSONResponse(body | {"detail": "the job was canceled"}, status_code=410)
    return JSONResponse(body | {"progress": job.progress}, status_code=202)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The job's events"}, **NOT_FOUND},
)
async def job_event_stream(job_id: JobId, services: JobServicesDep) -> EventSourceResponse:
    """Follow a job: `status`, `progress` and `log` events until it ends."""
    if await anyio.to_thread.run_sync(services.lifecycle.get, job_id) is None:
        raise NotFound(f"no job with id {job_id!r}")

    def view(wanted: str) -> tuple[Job, str] | None:
        job = services.lifecycle.get(wanted)
        return (job, job_out(services, job).model_dump_json()) if job is not None else None

    events = job_events(job_id, view, services.async_redis, services.settings.sse_poll_interval_s)
    return EventSourceResponse(events, ping=SSE_PING_S)


@router.delete(
    "/{job_id}/cancel",
    status_code=202,
    response_model=CancelOut,
    responses={**ADMIN_RESPONSES, **NOT_FOUND, 409: {"model": ErrorOut, "description": "The job has ended already"}},
)
def cancel_job(job_id: JobId, services: JobServicesDep, _admin: AdminDep) -> CancelOut:
    """Cancel a waiting job (it never runs) or stop a running one (not retried)."""
    outcome = operations.cancel(services, job_id)
    return CancelOut(id=job_id, status=outcome.status, stopping=outcome.stopping)


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=RetryOut,
    responses={**ADMIN_RESPONSES, **NOT_FOUND, 409: {"model": ErrorOut, "description": "The job has not failed"}},
)
def retry_job(job_id: JobId, services: JobServicesDep, _admin: AdminDep) -> RetryOut:
    """Run a failed job again (its attempt history is kept)."""
    return RetryOut(id=job_id, status=operations.retry(services, job_id))


@router.post(
    "/{job_id}/priority",
    response_model=PriorityOut,
    responses={
        **ADMIN_RESPONSES,
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "The job is running or has ended"},
        422: {"model": ErrorOut, "description": "Not a priority level"},
    },
)
def change_job_priority(job_id: JobId, body: PriorityIn, services: JobServicesDep, _admin: AdminDep) -> PriorityOut:
    """Move a waiting job to another priority level's queue (critical, high, normal, low)."""
    change = operations.change_priority(services, job_id, body.priority)
    job = change.job
    return PriorityOut(
        id=job.id, priority=Priority(job.priority), queue=job.queue, status=job.status, position=change.position
    )
