"""Starting and stopping the kit inside a FastAPI app.

    app = FastAPI(lifespan=lifespan)      # or, in a lifespan of your own: async with run_jobs(app, services)
    install(app)                          # /jobs routes and the kit's error answers

While the app runs, it holds the kit's services (`app.state.jobs`), runs in-process jobs and their
heartbeat, and, with `USE_RQ_QUEUE=false` (no scheduler then), the periodic tasks (`jobs.periodic`), the
reconciler and retention among them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.models import utcnow
from core.settings import get_settings
from jobs.maintenance import RECONCILE_TASK
from jobs.periodic import PeriodicDef, declared, run_tick
from jobs.reconcile import Reconciler
from jobs.registry import import_task_modules
from jobs.runtime import install_runtime
from jobs.services import JobServices, build_job_services
from jobs.web.batches import router as batches_router
from jobs.web.errors import install_error_handlers
from jobs.web.routes import router

log = logging.getLogger(__name__)


def local_reconciler(services: JobServices) -> Reconciler:
    """The reconciler of an in-process API: it also recovers in-process jobs of dead API processes."""
    return Reconciler(
        services.settings,
        services.lifecycle,
        services.redis,
        services.dispatcher,
        local_jobs=lambda: services.runner.active_ids,
        local_callbacks=services.callbacks,
        abandon_local=services.runner.abandon,
    )


async def periodic_forever(services: JobServices, entry: PeriodicDef, direct: Callable[[], object] | None) -> None:
    """Runs `entry` at each of its ticks (in-process mode: no scheduler, no workers).

    A tick runs as `jobs.periodic.run_tick` does on a worker (a job keyed by the tick: with several API
    processes, once), or as `direct()` when given (the reconciler: each process recovers its own jobs).
    """
    settings = services.settings
    if direct is not None:
        # The reconciler also runs at start-up: it takes up the jobs a stopped API process handed over.
        try:
            await asyncio.to_thread(direct)
        except Exception:
            log.exception("periodic task %s failed at start-up", entry.name)
    while True:
        tick = entry.schedule.next_after(utcnow(), settings)
        await asyncio.sleep(max(0.0, (tick - utcnow()).total_seconds()))
        try:
            if direct is not None:
                await asyncio.to_thread(direct)
            else:
                await asyncio.to_thread(run_tick, entry, tick, submitter=services.submitter, redis=services.redis)
        except Exception:
            log.exception("periodic task %s failed at its tick %s", entry.name, tick)


def start_periodic(services: JobServices) -> list[asyncio.Task[None]]:
    """One loop per periodic task of `TASK_MODULES` and the kit (the reconciler and retention)."""
    import_task_modules(services.settings.task_modules)
    reconciler = local_reconciler(services)
    direct: dict[str, Callable[[], object]] = {RECONCILE_TASK: reconciler.run_once}
    return [
        asyncio.create_task(periodic_forever(services, entry, direct.get(name)), name=f"periodic {name}")
        for name, entry in declared().items()
    ]


@asynccontextmanager
async def run_jobs(app: FastAPI, services: JobServices) -> AsyncIterator[None]:
    """Runs the kit in `app` for as long as the block lasts, then stops its jobs and closes its connections."""
    app.state.jobs = services
    install_runtime(services.runtime)
    loop = asyncio.get_running_loop()
    services.runner.bind(loop)
    services.callbacks.bind(loop)
    background = [asyncio.create_task(services.runner.heartbeat(), name="in-process-heartbeat")]
    if not services.settings.use_rq_queue:
        # In-process mode has no scheduler process: the API runs the periodic tasks, and reconciles its own jobs.
        background.extend(start_periodic(services))
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        install_runtime(None)
        await services.aclose()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """A FastAPI lifespan that runs the kit with the environment's settings."""
    services = await asyncio.to_thread(build_job_services, get_settings())
    async with run_jobs(app, services):
        yield


def install(app: FastAPI) -> None:
    """Adds the `/jobs` and `/batches` routes and the kit's error answers (404, 409, 422, 503 with `{"detail"}`)
    to `app`."""
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(batches_router)
