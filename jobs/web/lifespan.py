"""Starting and stopping the kit inside a FastAPI app.

    app = FastAPI(lifespan=lifespan)      # or, in a lifespan of your own: async with run_jobs(app, services)
    install(app)                          # /jobs routes and the kit's error answers

While the app runs, it holds the kit's services (`app.state.jobs`), runs in-process jobs and their
heartbeat, and, with `USE_RQ_QUEUE=false` (no scheduler then), the reconciler and retention.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.metrics import RedisJobMetrics
from core.settings import get_settings
from jobs.reconcile import Reconciler
from jobs.retention import Retention, RetentionPolicy
from jobs.runtime import install_runtime
from jobs.services import JobServices, build_job_services
from jobs.web.errors import install_error_handlers
from jobs.web.routes import router

log = logging.getLogger(__name__)


async def reconcile_forever(services: JobServices) -> None:
    """Runs the reconciler every `RECONCILE_INTERVAL_S`, recovering in-process jobs of dead API processes."""
    reconciler = Reconciler(
        services.settings,
        services.lifecycle,
        services.redis,
        services.dispatcher,
        local_jobs=lambda: services.runner.active_ids,
        local_callbacks=services.callbacks,
        abandon_local=services.runner.abandon,
    )
    while True:
        try:
            await asyncio.to_thread(reconciler.run_once)
        except Exception:
            log.exception("reconciler pass failed")
        await asyncio.sleep(services.settings.reconcile_interval_s)


async def retention_forever(services: JobServices) -> None:
    """Runs retention every `RETENTION_INTERVAL_S` (in-process mode: no scheduler, no workers)."""
    retention = Retention(
        services.database,
        services.storage,
        RetentionPolicy.from_settings(services.settings),
        dependents=services.retention_dependents,
        metrics=RedisJobMetrics(services.redis),
    )
    while True:
        try:
            await asyncio.to_thread(retention.run)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(services.settings.retention_interval_s)


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
        # In-process mode has no scheduler process: the API reconciles its own jobs.
        background.append(asyncio.create_task(reconcile_forever(services), name="reconciler"))
        background.append(asyncio.create_task(retention_forever(services), name="retention"))
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
    """Adds the `/jobs` routes and the kit's error answers (404, 409, 422, 503 with `{"detail"}`) to `app`."""
    install_error_handlers(app)
    app.include_router(router)
