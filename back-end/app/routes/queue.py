"""Queue-wide status (admin key): registries, workers, the flag."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import redis
from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from app.deps import ServicesDep
from jobs.periodic import status as periodic_status
from jobs.registry import job_queues
from jobs.rq_state import registry_counts, workers
from jobs.stuck import stuck_jobs
from jobs.web.auth import ADMIN_RESPONSES, AdminDep
from jobs.web.schemas import ErrorOut

router = APIRouter(prefix="/queue", tags=["operations"])


@router.get(
    "/status",
    responses={
        200: {"description": "Queues, workers, periodic tasks, the flag and the mode"},
        **ADMIN_RESPONSES,
        503: {"model": ErrorOut, "description": "Redis is unreachable, or no ADMIN_API_KEY is configured"},
    },
)
def queue_status(services: ServicesDep, _admin: AdminDep) -> JSONResponse:
    """Per queue: jobs in each RQ registry; the workers; the flag and the mode new jobs take; stuck jobs;
    the periodic tasks with their schedule and next run (`periodic`)."""
    body: dict[str, Any] = {
        "use_rq_queue": services.settings.use_rq_queue,
        "mode": services.dispatcher.mode.value,
        "in_process": {"running": services.runner.running_count, "waiting": services.runner.waiting_count},
        # Both modes: started jobs past their timeout + STUCK_MARGIN_S (the reconciler stops them).
        "stuck": [job.id for job in stuck_jobs(services.database, services.settings.stuck_margin_s)],
    }
    try:
        body["queues"] = {name: registry_counts(services.redis, name) for name in job_queues(services.settings)}
        body["workers"] = [asdict(worker) for worker in workers(services.redis, services.settings.worker_ttl_s)]
        body["periodic"] = periodic_status(services.settings, services.redis)
    except redis.exceptions.RedisError as exc:
        body |= {"queues": None, "workers": None, "periodic": None, "detail": f"Redis is unreachable: {exc}"}
        return JSONResponse(jsonable_encoder(body), status_code=503)
    return JSONResponse(jsonable_encoder(body))
