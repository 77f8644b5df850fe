"""The service's API plus endpoints that start the sample tasks through `QueuedTasks`, as a team's would.

uvicorn runs it with `--factory tests.support.sample_app:create_app` (`SAMPLE_APP`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from app.main import create_app as create_service_app
from jobs.web.deps import JobHandle, QueuedTasks
from tests.support.sample_tasks import add, fail, flaky, gated, greet

SAMPLE_APP = "tests.support.sample_app:create_app"

router = APIRouter(prefix="/samples", tags=["samples"])


def _answer(handle: JobHandle) -> dict[str, Any]:
    return {"id": handle.id, "task": handle.task, "status": handle.status.value, "status_url": handle.status_url}


@router.post("/add", status_code=202)
def start_add(a: int, b: int, tasks: QueuedTasks) -> dict[str, Any]:
    """Adds two numbers in the background (a `def` task)."""
    return _answer(tasks.add_task(add, a, b))


@router.post("/greet", status_code=202)
async def start_greet(name: str, tasks: QueuedTasks) -> dict[str, Any]:
    """Greets someone in the background (an `async def` task with a keyword argument)."""
    return _answer(tasks.add_task(greet, name, punctuation="?"))


@router.post("/gated", status_code=202)
def start_gated(gate: str, steps: int, tasks: QueuedTasks) -> dict[str, Any]:
    """Reports `steps` progress steps once the file `gate` exists."""
    return _answer(tasks.add_task(gated, gate, steps))


@router.post("/flaky", status_code=202)
def start_flaky(marker: str, tasks: QueuedTasks) -> dict[str, Any]:
    """Fails once, then succeeds when retried."""
    return _answer(tasks.add_task(flaky, marker))


@router.post("/fail", status_code=202)
def start_fail(reason: str, tasks: QueuedTasks) -> dict[str, Any]:
    """Fails in the background with `reason`."""
    return _answer(tasks.add_task(fail, reason))


def create_app() -> FastAPI:
    """The service's app (settings from the environment) with the `/samples` endpoints."""
    app = create_service_app()
    app.include_router(router)
    return app
