"""Health: liveness (the process answers) and readiness (the deployment can take work and carry it out)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.deps import ServicesDep
from app.readiness import assess
from app.schemas import HealthOut, LiveOut
from core.models import DispatchMode

router = APIRouter(tags=["operations"])

_READY_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "Ready: every check is `ok`"},
    503: {
        "description": "Not ready: `problems` names each failed check, `checks` says what is wrong",
        "model": HealthOut,
    },
}


@router.get("/health/live", response_model=LiveOut)
async def live() -> LiveOut:
    """200 whenever the process answers; checks no dependency (restart the process only when this fails)."""
    return LiveOut()


@router.get("/health/ready", response_model=HealthOut, responses=_READY_RESPONSES)
def ready(services: ServicesDep, response: Response) -> HealthOut:
    """200 when Redis takes writes, the database answers, workers, schedulers and reconciler run, nothing is stuck."""
    readiness = assess(services)
    response.status_code = 200 if readiness.ready else 503
    return HealthOut(
        status="ok" if readiness.ready else "unhealthy",
        problems=readiness.problems,
        mode=DispatchMode.RQ if services.settings.use_rq_queue else DispatchMode.BACKGROUND,
        checks=readiness.checks,
    )


@router.get("/health", response_model=HealthOut, responses=_READY_RESPONSES)
def health(services: ServicesDep, response: Response) -> HealthOut:
    """Readiness, as `/health/ready` (kept for existing probes)."""
    return ready(services, response)
