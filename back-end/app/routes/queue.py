"""Queue-wide status (admin key): registries, workers, the flag."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import redis
from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from app.deps import ServicesDep
from core.settings import QUEUES_BY_PRIORITY
from jobs.rq_state import registry_counts, workers
from jobs.web.auth import AdminDep

router = APIRouter(prefix="/queue", tags=["operations"])


@router.get("/status", responses={503: {"description": "Redis is unreachable"}})
def queue_status(services: ServicesDep, _admin: AdminDep) -> JSONResponse:
    """Per queue: jobs in each RQ registry; the workers; the flag and the mode new jobs take."""
    body: dict[str, Any] = {
        "use_rq_queue": services.settings.use_rq_queue,
        "mode": services.dispatcher.mode.value,
        "in_process": {"running": services.runner.running_count, "waiting": services.runner.waiting_count},
    }
    try:
        body["queues"] = {name: registry_counts(services.redis, name) for name in QUEUES_BY_PRIORITY}
        body["workers"] = [asdict(worker) for worker in workers(services.redis, services.settings.worker_ttl_s)]
    except redis.exceptions.RedisError as exc:
        body |= {"queues": None, "workers": None, "detail": f"Redis is unreachable: {exc}"}
        return JSONResponse(jsonable_encoder(body), status_code=503)
    return JSONResponse(jsonable_encoder(body))
