"""Health: is the service able to take and run work?"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/health")
def health(services: ServicesDep) -> JSONResponse:
    """200 when Redis, the database and (in RQ mode) workers are fine, else 503 with what is wrong."""
    checks: dict[str, Any] = {}
    problems: list[str] = []
    try:
        services.redis.ping()
        checks["redis"] = "ok"
    except redis.exceptions.RedisError as exc:
        checks["redis"] = f"unreachable: {exc}"
        problems.append("redis")
    try:
        services.database.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        problems.append("database")
    body = {"status": "ok" if not problems else "unhealthy", "problems": problems, "checks": checks}
    return JSONResponse(body, status_code=200 if not problems else 503)
