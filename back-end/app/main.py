"""The app factory: `create_app(settings)`; uvicorn runs it with `--factory app.main:create_app`."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI

from app.dashboard_mount import mount_dashboard
from app.malloc import return_large_blocks
from app.metrics import install_metrics
from app.routes import audio, batch, health, queue
from app.routes.pages import install_pages
from app.services import Services, build_services
from app.sweep import sweep_forever
from core.db import migrate
from core.settings import Settings, get_settings
from jobs.web import install, run_jobs
from redis_client import check_redis_policy

log = logging.getLogger(__name__)


def check_redis(services: Services) -> None:
    """Refuses a Redis that may evict queued jobs; warns when it keeps nothing across restarts.

    Raises:
        RedisPolicyError: `maxmemory-policy` is not `noeviction`.
    """
    try:
        warnings = check_redis_policy(services.redis)
    except redis.exceptions.RedisError as exc:
        log.warning("Redis unreachable at start-up (%s): uploads stay pending until it is back", exc)
        return
    for warning in warnings:
        log.warning(warning)


def freeze_startup_objects() -> bool:
    """Moves what start-up allocated (modules, the app, its services: ~160k objects) out of the garbage
    collector's reach, once per process. A full collection over them took 170-180 ms here, and no request
    moves meanwhile; they live as long as the process anyway (the workers do the same before forking).

    Returns:
        Whether this call froze them (False when this process already had).
    """
    if gc.get_freeze_count() > 0:
        return False
    gc.freeze()
    return True


def create_app(settings: Settings | None = None, *, apply_migrations: bool = False) -> FastAPI:
    """Builds the API for `settings` (default: the environment's)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if apply_migrations:
            await asyncio.to_thread(migrate, settings.database_url)
        services = await asyncio.to_thread(build_services, settings)
        await asyncio.to_thread(check_redis, services)
        app.state.services = services
        freeze_startup_objects()
        sweep = asyncio.create_task(sweep_forever(services.storage, services.database, settings), name="upload-sweep")
        if not settings.use_rq_queue:
            return_large_blocks()  # analyses run in this process: what they free must go back (app/malloc.py)
        log.info("API ready: USE_RQ_QUEUE=%s, new jobs run %s", settings.use_rq_queue, services.dispatcher.mode)
        try:
            async with run_jobs(app, services):
                yield
        finally:
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)

    app = FastAPI(
        title="Audio analysis service",
        summary="Upload audio, get an id at once, follow the analysis by polling or server-sent events.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install(app)  # the kit: /jobs and its error answers
    install_metrics(app)
    app.include_router(batch.router)
    app.include_router(audio.router)
    app.include_router(queue.router)
    app.include_router(health.router)
    mount_dashboard(app, settings)
    install_pages(app)  # `/` and `/admin` for people
    openapi = app.openapi

    def document() -> dict[str, Any]:
        document = audio.document_upload_limits(openapi(), settings.max_upload_bytes)
        return batch.document_batch_limits(document, settings.max_upload_bytes, settings.batch_max_files)

    app.openapi = document  # type: ignore[method-assign]
    return app
