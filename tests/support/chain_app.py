"""The sample API plus endpoints that start chained jobs through `QueuedTasks(depends_on=...)`.

uvicorn runs it with `--factory tests.support.chain_app:create_app` (`CHAIN_APP`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query

from jobs.web.deps import QueuedTasks
from tests.support.chain_tasks import broken, step, total
from tests.support.sample_app import create_app as create_sample_app

CHAIN_APP = "tests.support.chain_app:create_app"

router = APIRouter(prefix="/chains", tags=["chains"])
After = Annotated[list[str], Query()]


def _start(
    tasks: QueuedTasks, func: Any, after: list[str], on_failure: str, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    try:
        handle = tasks.add_task(func, *args, depends_on=after, on_dependency_failure=on_failure, **kwargs)
    except ValueError as exc:  # an unknown dependency, a bad option: the client's mistake
        raise HTTPException(422, str(exc)) from None
    return {"id": handle.id, "status": handle.status.value}


@router.post("/step", status_code=202)
def start_step(tasks: QueuedTasks, value: int, gate: str = "", after: After = [], on_failure: str = "cancel") -> Any:  # noqa: B006
    """A step returning `value` once `gate` exists, after the jobs `after`."""
    return _start(tasks, step, after, on_failure, value, gate=gate)


@router.post("/broken", status_code=202)
def start_broken(tasks: QueuedTasks, after: After = [], on_failure: str = "cancel") -> Any:  # noqa: B006
    """A job that always fails, after the jobs `after`."""
    return _start(tasks, broken, after, on_failure)


@router.post("/total", status_code=202)
def start_total(tasks: QueuedTasks, after: After = [], on_failure: str = "cancel") -> Any:  # noqa: B006
    """Sums its parents' values."""
    return _start(tasks, total, after, on_failure)


def create_app() -> FastAPI:
    """The sample app (settings from the environment) with the `/chains` endpoints."""
    app = create_sample_app()
    app.include_router(router)
    return app
