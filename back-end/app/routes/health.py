"""Health: can the service take work and run it?"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import ServicesDep
from app.services import Services
from jobs.rq_state import scheduler_problems, served_queues, stuck_jobs

router = APIRouter(tags=["operations"])


def _rq_checks(services: Services, checks: dict[str, Any], problems: list[str]) -> None:
    settings = services.settings
    served = served_queues(services.redis, settings.worker_ttl_s)
    unserved = [name for name in settings.worker_queues if name not in served]
    checks["workers"] = "ok" if not unserved else f"no live worker on {', '.join(unserved)}"
    if unserved:
        problems.append("workers")
    scheduler = scheduler_problems(services.redis, settings.worker_queues)
    checks["scheduler"] = "ok" if not scheduler else "; ".join(scheduler)
    if scheduler:
        problems.append("scheduler")


@router.get(
    "/health",
    responses={200: {"description": "All fine"}, 503: {"description": "Something is wrong; `checks` says what"}},
)
def health(services: ServicesDep) -> JSONResponse:
    """200 when Redis, the database and (in RQ mode) workers and schedulers are fine, else 503."""
    checks: dict[str, Any] = {}
    problems: list[str] = []
    try:
        services.database.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        problems.append("database")
    try:
        services.redis.ping()
        checks["redis"] = "ok"
        if services.settings.use_rq_queue:
            _rq_checks(services, checks, problems)
        stuck = [job for name in services.settings.worker_queues for job in stuck_jobs(services.redis, name)]
        checks["stuck_jobs"] = stuck
    except redis.exceptions.RedisError as exc:
        checks["redis"] = f"unreachable: {exc}"
        problems.append("redis")
    body = {
        "status": "ok" if not problems else "unhealthy",
        "problems": problems,
        "mode": "rq" if services.settings.use_rq_queue else "background",
        "checks": checks,
    }
    return JSONResponse(body, status_code=200 if not problems else 503)
