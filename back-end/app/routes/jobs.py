"""Jobs: status, result, cancel, retry. Reading an analysis's job needs its id; changing one, or reading
an RQ job that is no analysis (e.g. the reconciler's), needs the admin key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from app import operations
from app.auth import AdminDep, key_matches, presented_key
from app.deps import ServicesDep
from app.schemas import CallbackOut, CancelOut, JobOut, RetryOut
from core.errors import NotFound
from core.models import AnalysisStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job id (the analysis id)")]
RECENT_LOG_LINES = 20


def _is_admin(request: Request, services: ServicesDep) -> bool:
    """True when the request carries the admin key; a missing or wrong key is no error here."""
    key = services.settings.admin_api_key
    presented = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    return key is not None and key_matches(key.get_secret_value(), presented)


IsAdminDep = Annotated[bool, Depends(_is_admin)]


@router.get("/{job_id}", response_model=JobOut, responses={404: {"description": "Unknown id"}})
def get_job(job_id: JobId, services: ServicesDep, is_admin: IsAdminDep) -> JobOut:
    """A job's status, place in line and wait estimate, progress, recent logs, times, result or error."""
    analysis, job = operations.find(services, job_id)
    if analysis is None and not is_admin:
        # An RQ job of the service's own (the reconciler's...): as unknown as any id, to anyone without the key.
        raise NotFound(f"no job with id {job_id!r}")
    rq = operations.rq_view(job) if job is not None else None
    if analysis is None:
        return JobOut(
            id=job_id,
            status=None,
            mode=None,
            queue=job.origin if job else None,
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
    place = operations.position(services, analysis)
    return JobOut(
        id=analysis.id,
        status=analysis.status,
        mode=analysis.mode,
        queue=analysis.queue,
        position=place,
        estimated_wait_s=operations.estimated_wait_s(services, analysis, place),
        progress=analysis.progress,
        logs=analysis.logs[-RECENT_LOG_LINES:],
        attempts=analysis.attempts,
        created_at=analysis.created_at,
        started_at=analysis.started_at,
        finished_at=analysis.finished_at,
        result=analysis.result,
        error=analysis.error,
        rq=rq,
        callback=CallbackOut.of(analysis),
    )


@router.get(
    "/{job_id}/result",
    responses={
        200: {"description": "Finished: the result"},
        202: {"description": "Not finished yet"},
        404: {"description": "Unknown id"},
        410: {"description": "Canceled: there will be no result"},
        500: {"description": "Failed: the error"},
    },
)
def get_job_result(job_id: JobId, services: ServicesDep) -> JSONResponse:
    """The job's result: 200 when finished, 202 while not, 500 with the error when it failed."""
    analysis = services.lifecycle.require(job_id)
    body: dict[str, Any] = {"id": analysis.id, "status": analysis.status.value}
    if analysis.status is AnalysisStatus.FINISHED:
        return JSONResponse(body | {"result": analysis.result})
    if analysis.status is AnalysisStatus.FAILED:
        return JSONResponse(body | {"detail": analysis.error or "the job failed"}, status_code=500)
    if analysis.status is AnalysisStatus.CANCELED:
        return JSONResponse(body | {"detail": "the job was canceled"}, status_code=410)
    return JSONResponse(body | {"progress": analysis.progress}, status_code=202)


@router.delete(
    "/{job_id}/cancel",
    status_code=202,
    response_model=CancelOut,
    responses={404: {"description": "Unknown id"}, 409: {"description": "The job has ended already"}},
)
def cancel_job(job_id: JobId, services: ServicesDep, _admin: AdminDep) -> CancelOut:
    """Cancel a waiting job (it never runs) or stop a running one (not retried)."""
    outcome = operations.cancel(services, job_id)
    return CancelOut(id=job_id, status=outcome.status, stopping=outcome.stopping)


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=RetryOut,
    responses={404: {"description": "Unknown id"}, 409: {"description": "The job has not failed"}},
)
def retry_job(job_id: JobId, services: ServicesDep, _admin: AdminDep) -> RetryOut:
    """Run a failed job again (its attempt history is kept)."""
    return RetryOut(id=job_id, status=operations.retry(services, job_id))
