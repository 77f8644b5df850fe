"""A task that gets stuck on its first run: it blocks without progress reports and ignores RQ's timeout
signal, as a task stuck in C code does; any later run returns at once.

`STUCK_APP` is the service's app with an endpoint that starts it (uvicorn `--factory`).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from core.settings import DEFAULT_TASK_MODULES
from jobs import exponential, task
from jobs.web.deps import QueuedTasks

STUCK_TASK_MODULES = (*DEFAULT_TASK_MODULES, __name__)
STUCK_APP = "tests.support.stuck_tasks:create_app"
TIMEOUT_S = 2
WEDGE_S = 60.0  # the first run ends on its own after this, or once the file `release` exists


@task(name="tests.stuck.wedged", timeout=TIMEOUT_S, retry=1, retry_intervals=[0])
def wedged(marker: str, release: str) -> dict[str, Any]:
    if Path(marker).exists():
        return {"run": "again"}
    Path(marker).touch()
    if threading.current_thread() is threading.main_thread():  # an RQ work-horse: deaf to its death penalty
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
    deadline = time.monotonic() + WEDGE_S
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"run": "first"}


router = APIRouter()


@router.post("/stuck", status_code=202)
def start_wedged(marker: str, release: str, tasks: QueuedTasks) -> dict[str, Any]:
    """Starts a job whose first run gets stuck."""
    return {"id": tasks.add_task(wedged, marker, release).id}


def create_app() -> FastAPI:
    from app.main import create_app as create_service_app

    app = create_service_app()
    app.include_router(router)
    return app


@task(name="tests.stuck.always_fails", retry=2, backoff=exponential(base="40s", max="10m", jitter=True))
def always_fails(reason: str) -> None:
    """Fails every run; its retries wait an exponential, jittered backoff (20-40 s, then 40-80 s)."""
    raise RuntimeError(reason)
